//! Simulated hosts: deterministic per seed, shaped like real host data
//! (counters, noisy gauges, idle series, processes, latency histograms).

#[allow(unused_imports)]
use super::*;

/// Deterministic host data: the same seed gives the same batches.
pub(super) struct HostSim {
    pub(super) rng: fastrand::Rng,
    pub(super) cpu_times: Vec<[f64; 8]>,
    pub(super) load: f64,
    pub(super) ctxt: u64,
    pub(super) forks: u64,
    pub(super) intr: u64,
    pub(super) mem_avail: u64,
    pub(super) cached: u64,
    pub(super) disks_free: Vec<u64>,
    pub(super) block: Vec<[u64; 8]>,
    pub(super) net: Vec<[u64; 8]>,
    pub(super) retrans: u64,
    pub(super) procs: Vec<(u32, u64, f64, f64, u32, bool)>,
    pub(super) pressure_total: u64,
}

pub(super) const GIB: u64 = 1 << 30;

impl HostSim {
    pub(super) fn new(seed: u64, processes: u32) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let procs = (0..processes)
            .map(|i| {
                let rss = (rng.u64(2_000..200_000)) * 4096;
                (
                    300 + i * 7,
                    rss,
                    rng.f64() * 100.0,
                    rng.f64() * 20.0,
                    rng.u32(1..40),
                    i % 6 == 0,
                )
            })
            .collect();
        Self {
            cpu_times: (0..4)
                .map(|_| [1000.0, 5.0, 300.0, 50_000.0, 20.0, 0.0, 4.0, 0.0])
                .collect(),
            load: 0.5,
            ctxt: 10_000_000,
            forks: 50_000,
            intr: 30_000_000,
            mem_avail: 10 * GIB,
            cached: 4 * GIB,
            disks_free: vec![80 * GIB, 300 * GIB, 2 * GIB, 900 * GIB],
            block: vec![
                [
                    100_000,
                    200_000,
                    1 << 32,
                    1 << 33,
                    50_000,
                    90_000,
                    0,
                    120_000
                ];
                3
            ],
            net: vec![[1 << 36, 1 << 28, 0, 10, 1 << 35, 1 << 27, 0, 0]; 3],
            retrans: 5000,
            procs,
            pressure_total: 1_000_000,
            rng,
        }
    }

    /// Rounds to centiseconds, like /proc values converted from USER_HZ ticks.
    pub(super) fn cs(v: f64) -> f64 {
        (v * 100.0).round() / 100.0
    }

    pub(super) fn batch(&mut self, seq: u64, t: i64) -> pb::Batch {
        let r = &mut self.rng;
        let mut total = [0.0f64; 8];
        let mut per_cpu = Vec::new();
        for (i, c) in self.cpu_times.iter_mut().enumerate() {
            let busy = r.f64() * 0.3;
            c[0] = Self::cs(c[0] + busy * 0.7);
            c[2] = Self::cs(c[2] + busy * 0.3);
            c[3] = Self::cs(c[3] + (1.0 - busy));
            if r.u8(0..10) == 0 {
                c[4] = Self::cs(c[4] + 0.01);
            }
            if r.u8(0..4) == 0 {
                c[6] = Self::cs(c[6] + 0.01);
            }
            for k in 0..8 {
                total[k] += c[k];
            }
            per_cpu.push(times(i as i32, c, busy));
        }
        let total = times(-1, &total.map(Self::cs), 0.15);
        self.load = Self::cs((self.load + (r.f64() - 0.5) * 0.1).clamp(0.0, 8.0));
        self.ctxt += r.u64(4000..20_000);
        self.forks += r.u64(0..4);
        self.intr += r.u64(3000..9000);
        self.pressure_total += r.u64(0..2000);
        let pressure = pb::Pressure {
            some_avg10: Self::cs(r.f64() * 2.0),
            some_avg60: 0.5,
            some_avg300: 0.4,
            some_total_us: self.pressure_total,
            ..Default::default()
        };
        if r.bool() {
            self.mem_avail = (self.mem_avail as i64 + r.i64(-256..256) * 4096) as u64;
        }
        self.cached += r.u64(0..4) * 4096;
        let memory = pb::MemoryStats {
            total_bytes: 16 * GIB,
            free_bytes: self.mem_avail - self.cached / 2,
            available_bytes: self.mem_avail,
            buffers_bytes: 200 << 20,
            cached_bytes: self.cached,
            dirty_bytes: r.u64(0..2000) * 4096,
            writeback_bytes: 0,
            shmem_bytes: 100 << 20,
            slab_reclaimable_bytes: 300 << 20,
            slab_unreclaimable_bytes: 120 << 20,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
            used_bytes: 16 * GIB - self.mem_avail,
            oom_kills: 0,
            pressure: Some(pressure),
            io_pressure: Some(pressure),
            major_faults: 1000,
            swap_in_pages: 0,
            swap_out_pages: 0,
        };
        let mounts = ["/", "/var", "/boot", "/data"];
        let disks = self
            .disks_free
            .iter_mut()
            .enumerate()
            .map(|(i, free)| {
                if i != 2 && r.u8(0..3) == 0 {
                    *free -= r.u64(0..64) * 4096;
                }
                pb::DiskUsage {
                    mount_point: mounts[i].into(),
                    device: format!("/dev/vda{}", i + 1),
                    fs_type: "ext4".into(),
                    size_bytes: 1000 * GIB,
                    free_bytes: *free,
                    available_bytes: free.saturating_sub(50 * GIB),
                    inodes_total: 60_000_000,
                    inodes_free: 59_000_000,
                    read_only: false,
                }
            })
            .collect();
        let block_devices = self
            .block
            .iter_mut()
            .enumerate()
            .map(|(i, b)| {
                if i < 2 {
                    let rd = r.u64(0..50);
                    let wr = r.u64(0..120);
                    b[0] += rd;
                    b[1] += wr;
                    b[2] += rd * 4096 * r.u64(1..8);
                    b[3] += wr * 4096 * r.u64(1..16);
                    b[4] += rd / 3;
                    b[5] += wr / 2;
                    b[7] += r.u64(0..80);
                }
                pb::BlockDeviceStats {
                    device: format!("vd{}", (b'a' + i as u8) as char),
                    reads: b[0],
                    writes: b[1],
                    read_bytes: b[2],
                    write_bytes: b[3],
                    read_time_ms: b[4],
                    write_time_ms: b[5],
                    in_flight: r.u64(0..3),
                    io_time_ms: b[7],
                    utilization: Self::cs(r.f64() * 0.1),
                }
            })
            .collect();
        let interfaces = self
            .net
            .iter_mut()
            .enumerate()
            .map(|(i, n)| {
                if i < 2 {
                    let rx = r.u64(10..2000);
                    let tx = r.u64(10..1500);
                    n[0] += rx * r.u64(60..1500);
                    n[1] += rx;
                    n[4] += tx * r.u64(60..1500);
                    n[5] += tx;
                }
                pb::NetInterfaceStats {
                    name: ["eth0", "eth1", "lo"][i].into(),
                    rx_bytes: n[0],
                    rx_packets: n[1],
                    rx_errors: n[2],
                    rx_dropped: n[3],
                    tx_bytes: n[4],
                    tx_packets: n[5],
                    tx_errors: n[6],
                    tx_dropped: n[7],
                }
            })
            .collect();
        self.retrans += r.u64(0..3);
        let states = [
            ("ESTABLISHED", 120),
            ("SYN_SENT", 0),
            ("SYN_RECV", 0),
            ("FIN_WAIT1", 0),
            ("FIN_WAIT2", 2),
            ("TIME_WAIT", 40),
            ("CLOSE", 0),
            ("CLOSE_WAIT", 1),
            ("LAST_ACK", 0),
            ("LISTEN", 8),
            ("CLOSING", 0),
        ];
        let tcp_states = states
            .iter()
            .map(|&(s, base)| pb::SocketStateCount {
                state: s.into(),
                count: if base > 8 { base + r.u64(0..10) } else { base },
            })
            .collect();
        let listeners = [22u32, 80, 443, 5432, 6379, 9100]
            .iter()
            .map(|&port| pb::ListenerStats {
                address: "0.0.0.0".into(),
                port,
                accept_queue: u32::from(r.u8(0..10) == 0),
                backlog: 4096,
                pid: 0,
                process: "svc".into(),
            })
            .collect();
        let connections = pb::ConnectionStats {
            tcp_states,
            udp_states: vec![pb::SocketStateCount {
                state: "UNCONN".into(),
                count: 6,
            }],
            listeners,
            listen_overflows: 0,
            listen_drops: 0,
            retransmits: self.retrans,
            ephemeral_ports: (0..3)
                .map(|i| pb::EphemeralPortUse {
                    src_address: "10.0.0.5".into(),
                    dst_address: format!("10.0.1.{i}"),
                    dst_port: 5432,
                    sockets: 20 + r.u64(0..5),
                    capacity: 28_232,
                })
                .collect(),
            sockets_by_owner: vec![],
            conntrack_entries: Some(300 + r.u64(0..50)),
            conntrack_max: Some(262_144),
            file_handles: 9000 + r.u64(0..100),
            file_handles_max: 9_223_372_036_854_775_807 >> 11,
            interfaces,
        };
        let processes = self
            .procs
            .iter_mut()
            .map(|p| {
                let (pid, rss, user, sys, fds, busy) = p;
                let mut cpu_ratio = 0.0;
                if *busy {
                    let du = Self::cs(r.f64() * 0.3);
                    *user = Self::cs(*user + du);
                    *sys = Self::cs(*sys + du / 4.0);
                    cpu_ratio = Self::cs(du * 1.25);
                    if r.u8(0..4) == 0 {
                        *rss = (*rss as i64 + r.i64(-64..96) * 4096) as u64;
                    }
                    if r.u8(0..20) == 0 {
                        *fds = (*fds as i32 + r.i32(-2..3)).max(3) as u32;
                    }
                }
                pb::ProcessStats {
                    pid: *pid,
                    start_time_ticks: u64::from(*pid) * 13,
                    ppid: 1,
                    name: format!("proc-{pid}"),
                    cmdline: format!("/usr/bin/proc-{pid} --serve"),
                    cgroup: "system.slice/x.service".into(),
                    rss_bytes: *rss,
                    pss_bytes: 0,
                    vsize_bytes: *rss * 3,
                    user_seconds: *user,
                    system_seconds: *sys,
                    cpu_ratio,
                    threads: 4,
                    open_fds: *fds,
                    fd_limit_soft: 1024,
                    fd_limit_hard: 524_288,
                    cgroup_memory_max: None,
                    uid: 0,
                    sockets: if *busy {
                        vec![pb::ProcessSocketCount {
                            state: "ESTABLISHED".into(),
                            count: 10 + r.u32(0..3),
                        }]
                    } else {
                        vec![]
                    },
                }
            })
            .collect();
        let syscalls = [
            "read",
            "write",
            "openat",
            "close",
            "futex",
            "epoll_wait",
            "recvfrom",
            "sendto",
            "mmap",
            "fstat",
        ]
        .iter()
        .map(|s| {
            let n = r.u64(0..6);
            let mut indices: Vec<u32> = (0..n).map(|_| r.u32(60..400)).collect();
            indices.sort_unstable();
            indices.dedup();
            let counts: Vec<u64> = indices.iter().map(|_| r.u64(1..500)).collect();
            pb::SyscallLatency {
                syscall: (*s).into(),
                cgroup: String::new(),
                count: counts.iter().sum(),
                errors: r.u64(0..2),
                latency_ns: Some(pb::Histogram {
                    grouping_power: 4,
                    max_value_power: 40,
                    indices,
                    counts,
                }),
            }
        })
        .collect();
        pb::Batch {
            seq,
            time_unix_nano: t,
            cpu: Some(pb::CpuStats {
                total: Some(total),
                per_cpu,
                load1: self.load,
                load5: 0.6,
                load15: 0.7,
                context_switches: self.ctxt,
                forks: self.forks,
                procs_running: r.u32(1..4),
                procs_blocked: 0,
                pressure: Some(pressure),
                interrupts: self.intr,
            }),
            memory: Some(memory),
            disks,
            block_devices,
            connections: Some(connections),
            processes,
            processes_complete: true,
            syscalls,
            ebpf: Some(pb::EbpfStats {
                syscalls: r.u64(10_000..50_000),
                run_time_ns: 0,
                run_count: 0,
                interval_ns: 1_000_000_000,
                ..Default::default()
            }),
            agent: None,
        }
    }
}

pub(super) fn times(cpu: i32, c: &[f64; 8], busy: f64) -> pb::CpuTimes {
    pb::CpuTimes {
        cpu,
        user_seconds: c[0],
        nice_seconds: c[1],
        system_seconds: c[2],
        idle_seconds: c[3],
        iowait_seconds: c[4],
        irq_seconds: c[5],
        softirq_seconds: c[6],
        steal_seconds: c[7],
        busy_ratio: HostSim::cs(busy),
    }
}

pub(super) fn host_id(a: u32) -> String {
    format!("{a:08x}bench0000000000000000{a:04x}")[..32].to_string()
}
