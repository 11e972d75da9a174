//! `cargo xtask bench ingest`: collector ingest against Prometheus remote-write,
//! side by side in one run.
//!
//! Simulated agents (realistic host data: counters, noisy gauges, idle series,
//! per-process series, syscall histograms) send the same samples, round after
//! round (A B C A B C ...), to
//! - A: the release collector with a durable store (fsync per commit group),
//! - B: Debian's `prometheus` with its remote-write receiver (snappy protobuf),
//! - C: the release collector with the WAL on tmpfs and fsync off (in-memory path).
//!
//! Reported: CPU per sample of each target (utime+stime from /proc), bytes on
//! disk per sample, freshness (agent sample -> queryable) p50/p99, and the
//! latency of querying one hour of one host.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use nodewatch_collector::store::series::{SampleSink, map_batch, parse_key};
use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{cargo, workspace_root};

const SEC: i64 = 1_000_000_000;

/// Options of `cargo xtask bench ingest`.
#[derive(Debug, clap::Parser)]
#[command(name = "bench ingest")]
pub struct IngestArgs {
    /// Simulated agents (hosts).
    #[arg(long, default_value_t = 12)]
    agents: u32,
    /// Simulated minutes of 1 s batches per agent (split over the rounds).
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    /// Rounds (each target gets one slice of the data per round, in turn).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Processes per simulated host.
    #[arg(long, default_value_t = 60)]
    processes: u32,
    /// Seconds of the real-time freshness phase.
    #[arg(long, default_value_t = 15)]
    freshness_secs: u64,
}

// ---- Prometheus remote-write messages (prompb) ------------------------------

/// prompb.WriteRequest.
#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    /// Series with their samples.
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

/// prompb.TimeSeries.
#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    /// Labels, sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

/// prompb.Label.
#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    value: String,
}

/// prompb.Sample.
#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// Collects a batch's scalar samples as remote-write series.
struct PromSink<'a> {
    host: &'a str,
    t_ms: i64,
    out: Vec<TimeSeries>,
}

impl SampleSink for PromSink<'_> {
    fn scalar(&mut self, key: &str, value: f64) {
        let (metric, labels) = parse_key(key);
        let mut l: Vec<Label> = labels
            .into_iter()
            .map(|(k, v)| Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        l.push(Label {
            name: "__name__".into(),
            value: metric.to_string(),
        });
        l.push(Label {
            name: "host".into(),
            value: self.host.to_string(),
        });
        l.sort_by(|a, b| a.name.cmp(&b.name));
        self.out.push(TimeSeries {
            labels: l,
            samples: vec![Sample {
                value,
                timestamp: self.t_ms,
            }],
        });
    }

    // Remote-write 1.0 has no sparse histograms: they are left out of the Prometheus
    // load (the collector stores them on top of the same scalar samples).
    fn histogram(&mut self, _key: &str, _h: &pb::Histogram) {}
}

/// Counts a batch's samples.
#[derive(Default)]
struct CountSink {
    scalars: u64,
    histograms: u64,
}

impl SampleSink for CountSink {
    fn scalar(&mut self, _key: &str, _value: f64) {
        self.scalars += 1;
    }
    fn histogram(&mut self, _key: &str, _h: &pb::Histogram) {
        self.histograms += 1;
    }
}

// ---- simulated host ------------------------------------------------------------

/// Deterministic host data: the same seed gives the same batches.
struct HostSim {
    rng: fastrand::Rng,
    cpu_times: Vec<[f64; 8]>,
    load: f64,
    ctxt: u64,
    forks: u64,
    intr: u64,
    mem_avail: u64,
    cached: u64,
    disks_free: Vec<u64>,
    block: Vec<[u64; 8]>,
    net: Vec<[u64; 8]>,
    retrans: u64,
    procs: Vec<(u32, u64, f64, f64, u32, bool)>,
    pressure_total: u64,
}

const GIB: u64 = 1 << 30;

impl HostSim {
    fn new(seed: u64, processes: u32) -> Self {
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
    fn cs(v: f64) -> f64 {
        (v * 100.0).round() / 100.0
    }

    fn batch(&mut self, seq: u64, t: i64) -> pb::Batch {
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
        }
    }
}

fn times(cpu: i32, c: &[f64; 8], busy: f64) -> pb::CpuTimes {
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

fn host_id(a: u32) -> String {
    format!("{a:08x}bench0000000000000000{a:04x}")[..32].to_string()
}

// ---- processes under test ---------------------------------------------------

struct Target {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Target {
    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    }

    fn stop(&mut self) {
        // SAFETY: plain signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_listening(t: &mut Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&t.addr, Duration::from_millis(100)).is_err() {
        if let Some(s) = t.child.try_wait()? {
            bail!("{} exited with {s}", t.name);
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {}", t.name, t.addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn start_collector(name: &'static str, dir: PathBuf, fsync: bool) -> anyhow::Result<Target> {
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    let cfg = dir.join("collector.toml");
    // No cut during the run (the head spans the whole run, like one default
    // 20-minute chunk per round); the bench cuts at the end.
    std::fs::write(
        &cfg,
        format!(
            "[store]\nchunk_duration = \"24h\"\nhead_max_bytes = {}\nwal_max_bytes = {}\nfsync = {fsync}\n",
            8u64 << 30,
            64u64 << 30
        ),
    )?;
    let bin = workspace_root().join("target/release/nodewatch-collector");
    let log = std::fs::File::create(dir.join("collector.log"))?;
    let child = Command::new(bin)
        .args(["--config"])
        .arg(&cfg)
        .args(["--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.join("data"))
        .env("NODEWATCH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the release collector")?;
    let mut t = Target {
        name,
        child,
        addr,
        dir,
    };
    wait_listening(&mut t)?;
    Ok(t)
}

fn ensure_prometheus() -> anyhow::Result<PathBuf> {
    if let Ok(p) = which_prometheus() {
        return Ok(p);
    }
    crate::bootstrap::apt_install(&["prometheus"])?;
    which_prometheus()
}

fn which_prometheus() -> anyhow::Result<PathBuf> {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("prometheus not found")
}

fn start_prometheus(bin: &Path, dir: PathBuf) -> anyhow::Result<Target> {
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\nscrape_configs: []\n")?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--storage.tsdb.retention.time=15d")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start prometheus")?;
    let mut t = Target {
        name: "prometheus",
        child,
        addr,
        dir,
    };
    wait_listening(&mut t)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http(addr, "GET", "/-/ready", &[], &[]) {
            break;
        }
        if Instant::now() > deadline {
            bail!("prometheus not ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(t)
}

/// Minimal blocking HTTP/1.1 request on a fresh connection; returns status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&resp[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let mut body = resp[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < pos + 2 + n {
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + n]);
        b = &b[(pos + 4 + n).min(b.len())..];
    }
    out
}

/// Keep-alive remote-write sender (one connection per simulated agent).
struct RemoteWriter {
    addr: SocketAddr,
    conn: Option<std::io::BufReader<TcpStream>>,
}

impl RemoteWriter {
    fn post(&mut self, body: &[u8]) -> anyhow::Result<()> {
        use std::io::BufRead as _;
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            self.conn = Some(std::io::BufReader::new(s));
        }
        let conn = self.conn.as_mut().context("connection")?;
        let head = format!(
            "POST /api/v1/write HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        conn.get_mut().write_all(head.as_bytes())?;
        conn.get_mut().write_all(body)?;
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut rest = vec![0u8; len];
        conn.read_exact(&mut rest)?;
        if !(200..300).contains(&status) {
            bail!(
                "remote write answered {status}: {}",
                String::from_utf8_lossy(&rest)
            );
        }
        Ok(())
    }
}

// ---- load -------------------------------------------------------------------

struct Totals {
    scalars: AtomicU64,
    histograms: AtomicU64,
    bytes: AtomicU64,
}

/// An open ingest stream of one simulated agent.
struct AgentStream {
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::CollectorMessage>,
}

async fn open_agent(addr: SocketAddr, a: u32) -> anyhow::Result<AgentStream> {
    let mut client = pb::ingest_client::IngestClient::connect(format!("http://{addr}")).await?;
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage {
        kind: Some(AgentKind::Hello(pb::Hello {
            host: Some(pb::HostIdentity {
                host_id: host_id(a),
                hostname: format!("bench-{a}"),
                ..Default::default()
            }),
            agent_version: "bench".into(),
            run_id: 1,
            ..Default::default()
        })),
    })
    .await?;
    let mut rx = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    match rx.message().await? {
        Some(pb::CollectorMessage {
            kind: Some(CollectorKind::Welcome(_)),
        }) => Ok(AgentStream { tx, rx }),
        other => bail!("expected Welcome, got {other:?}"),
    }
}

/// Sends batches `seqs` of every agent to a collector (pipelined, acks awaited).
async fn round_collector(
    streams: Vec<AgentStream>,
    sims: &mut [HostSim],
    seqs: std::ops::RangeInclusive<u64>,
    t0: i64,
    totals: Arc<Totals>,
) -> anyhow::Result<Vec<AgentStream>> {
    let mut tasks = Vec::new();
    let last = *seqs.end();
    for (a, (mut s, sim)) in streams.into_iter().zip(sims.iter_mut()).enumerate() {
        // Generate first (not measured against the target), then send.
        let batches: Vec<pb::Batch> = seqs
            .clone()
            .map(|seq| sim.batch(seq, t0 + seq as i64 * SEC + a as i64 * 1_000_000))
            .collect();
        let totals = totals.clone();
        tasks.push(tokio::spawn(async move {
            let tx = s.tx.clone();
            let sender = tokio::spawn(async move {
                for b in batches {
                    let mut c = CountSink::default();
                    map_batch(&b, &mut c);
                    totals.scalars.fetch_add(c.scalars, Ordering::Relaxed);
                    totals.histograms.fetch_add(c.histograms, Ordering::Relaxed);
                    totals
                        .bytes
                        .fetch_add(b.encoded_len() as u64, Ordering::Relaxed);
                    if tx
                        .send(pb::AgentMessage {
                            kind: Some(AgentKind::Batch(b)),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            loop {
                match s.rx.message().await? {
                    Some(pb::CollectorMessage {
                        kind: Some(CollectorKind::Ack(ack)),
                    }) if ack.seq >= last => break,
                    Some(_) => {}
                    None => bail!("stream closed before the last ack"),
                }
            }
            sender.await?;
            anyhow::Ok(s)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Sends the same batches as remote-write requests (one request per batch).
fn round_prometheus(
    addr: SocketAddr,
    sims: &mut [HostSim],
    seqs: std::ops::RangeInclusive<u64>,
    t0: i64,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (a, sim) in sims.iter_mut().enumerate() {
            let seqs = seqs.clone();
            let bodies: Vec<Vec<u8>> = seqs
                .map(|seq| {
                    let b = sim.batch(seq, t0 + seq as i64 * SEC + a as i64 * 1_000_000);
                    let host = host_id(a as u32);
                    let mut sink = PromSink {
                        host: &host,
                        t_ms: b.time_unix_nano / 1_000_000,
                        out: Vec::new(),
                    };
                    map_batch(&b, &mut sink);
                    let req = WriteRequest {
                        timeseries: sink.out,
                    };
                    snap::raw::Encoder::new()
                        .compress_vec(&req.encode_to_vec())
                        .unwrap_or_default()
                })
                .collect();
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut w = RemoteWriter { addr, conn: None };
                for body in bodies {
                    w.post(&body)?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        }
        Ok(())
    })
}

fn median_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (
        med,
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                // Allocated size: what the file really takes on disk.
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Entry point.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    use clap::Parser as _;
    if cfg!(debug_assertions) {
        // The load generator shares the machine with the targets: run it optimised.
        let mut a = vec![
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask",
            "--",
            "bench",
            "ingest",
        ];
        a.extend(args.iter().map(String::as_str));
        return cargo(&a);
    }
    let args = IngestArgs::try_parse_from(
        std::iter::once("bench ingest".to_string()).chain(args.iter().cloned()),
    )?;
    eprintln!("building the release collector ...");
    cargo(&[
        "build",
        "--release",
        "-p",
        "nodewatch-collector",
        "--bin",
        "nodewatch-collector",
    ])?;
    let prom = ensure_prometheus()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(args, prom))
}

async fn bench(args: IngestArgs, prom_bin: PathBuf) -> anyhow::Result<()> {
    let tick_ns = 1e9 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let disk = tempfile_dir(std::env::temp_dir(), "nodewatch-bench-ingest")?;
    let shm = tempfile_dir(PathBuf::from("/dev/shm"), "nodewatch-bench-ingest")?;
    let mut durable = start_collector("collector durable", disk.join("durable"), true)?;
    let mut memory = start_collector("collector in-memory", shm.join("memory"), false)?;
    let mut prom = start_prometheus(&prom_bin, disk.join("prometheus"))?;

    let total_batches = u64::from(args.minutes) * 60;
    let per_round = total_batches / u64::from(args.rounds.max(1));
    let t0 = now_nanos() - (total_batches as i64 + 120) * SEC;
    let sims = |_: ()| -> Vec<HostSim> {
        (0..args.agents)
            .map(|a| HostSim::new(u64::from(a) + 1, args.processes))
            .collect()
    };
    let (mut sim_d, mut sim_m, mut sim_p) = (sims(()), sims(()), sims(()));
    let mut streams_d = Vec::new();
    let mut streams_m = Vec::new();
    for a in 0..args.agents {
        streams_d.push(open_agent(durable.addr, a).await?);
        streams_m.push(open_agent(memory.addr, a).await?);
    }
    let totals_d = Arc::new(Totals {
        scalars: AtomicU64::new(0),
        histograms: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let totals_m = Arc::new(Totals {
        scalars: AtomicU64::new(0),
        histograms: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let mut per_sample: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut ratios = Vec::new();
    eprintln!(
        "{} agents x {} batches ({} rounds), ~{} processes per host",
        args.agents, total_batches, args.rounds, args.processes
    );
    for round in 0..u64::from(args.rounds) {
        let seqs = round * per_round + 1..=(round + 1) * per_round;
        // A: durable collector.
        let before_s = totals_d.scalars.load(Ordering::Relaxed);
        let c0 = durable.cpu_ticks()?;
        streams_d =
            round_collector(streams_d, &mut sim_d, seqs.clone(), t0, totals_d.clone()).await?;
        let cpu_d = (durable.cpu_ticks()? - c0) as f64 * tick_ns;
        let samples = (totals_d.scalars.load(Ordering::Relaxed) - before_s) as f64;
        let d = cpu_d / samples;
        // B: Prometheus, same samples.
        let c0 = prom.cpu_ticks()?;
        let addr = prom.addr;
        let mut sp = std::mem::take(&mut sim_p);
        let seqs_p = seqs.clone();
        sim_p = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<HostSim>> {
            round_prometheus(addr, &mut sp, seqs_p, t0)?;
            Ok(sp)
        })
        .await??;
        let p = (prom.cpu_ticks()? - c0) as f64 * tick_ns / samples;
        // C: in-memory path.
        let c0 = memory.cpu_ticks()?;
        streams_m =
            round_collector(streams_m, &mut sim_m, seqs.clone(), t0, totals_m.clone()).await?;
        let m = (memory.cpu_ticks()? - c0) as f64 * tick_ns / samples;
        eprintln!(
            "round {}: {samples} samples; ns/sample: durable {d:.0}, prometheus {p:.0}, in-memory {m:.0}",
            round + 1
        );
        per_sample.entry("durable").or_default().push(d);
        per_sample.entry("prometheus").or_default().push(p);
        per_sample.entry("memory").or_default().push(m);
        ratios.push(d / p);
    }
    let scalars = totals_d.scalars.load(Ordering::Relaxed);
    let histograms = totals_d.histograms.load(Ordering::Relaxed);
    let wire = totals_d.bytes.load(Ordering::Relaxed);

    // Freshness: real-time batches, polled through QuerySeries.
    eprintln!(
        "freshness: {} s of real-time batches ...",
        args.freshness_secs
    );
    let fresh = freshness(
        &durable,
        &mut sim_d,
        streams_d,
        total_batches,
        args.freshness_secs,
    )
    .await?;
    drop(streams_m);

    // Query: one hour of one host, every series, at a 15 s step, vs Prometheus.
    let q_start = t0 + SEC;
    let q_end = t0 + (total_batches as i64 + 1) * SEC;
    let mut q_collector = Vec::new();
    let mut q_prom = Vec::new();
    let mut q_points = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        q_points = query_host_hour(durable.addr, &host_id(0), q_start, q_end).await?;
        q_collector.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let path = format!(
            "/api/v1/query_range?query=%7Bhost%3D%22{}%22%7D&start={:.3}&end={:.3}&step=15",
            host_id(0),
            q_start as f64 / 1e9,
            q_end as f64 / 1e9
        );
        let (status, body) =
            tokio::task::spawn_blocking(move || http(prom.addr, "GET", &path, &[], &[])).await??;
        if status != 200 {
            bail!(
                "prometheus query answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        q_prom.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Bytes on disk: Prometheus as it stands (WAL + head chunks); the collector
    // after cutting its head into chunks (what a 20-minute chunk_duration does).
    let prom_bytes = dir_bytes(&prom.dir.join("tsdb"));
    prom.stop();
    let wal_before = dir_bytes(&durable.dir.join("data"));
    durable.stop();
    memory.stop();
    let data = durable.dir.join("data");
    let store = nodewatch_collector::store::Store::open(&data, Default::default())?;
    store.flush().await?;
    let size = store.size();
    drop(store);
    let chunk_alloc = dir_bytes(&data) - dir_bytes(&data.join("wal"));

    let (dm, dlo, dhi) = median_min_max(&per_sample["durable"]);
    let (pm, plo, phi) = median_min_max(&per_sample["prometheus"]);
    let (mm, mlo, mhi) = median_min_max(&per_sample["memory"]);
    let (rm, rlo, rhi) = median_min_max(&ratios);
    let (qcm, qclo, qchi) = median_min_max(&q_collector);
    let (qpm, qplo, qphi) = median_min_max(&q_prom);
    let n = scalars as f64;
    println!();
    println!(
        "load: {} agents, {} batches each (1 s apart), {} processes/host; {} scalar samples (+{} histograms), {:.0} wire bytes/batch; {} rounds A B C",
        args.agents,
        total_batches,
        args.processes,
        scalars,
        histograms,
        wire as f64 / (u64::from(args.agents) * total_batches) as f64,
        args.rounds
    );
    println!();
    println!("| measure | nodewatch | Prometheus 2.42 (Debian) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| CPU per sample, durable ingest (median, min–max of {} rounds) | {dm:.0} ns ({dlo:.0}–{dhi:.0}) | {pm:.0} ns ({plo:.0}–{phi:.0}) | {rm:.2} ({rlo:.2}–{rhi:.2}) |",
        args.rounds
    );
    println!(
        "| CPU per sample, in-memory path (WAL on tmpfs, no fsync) | {mm:.0} ns ({mlo:.0}–{mhi:.0}) = {:.2} M samples/s per core | | {:.2} |",
        1e3 / mm,
        mm / pm
    );
    println!(
        "| bytes on disk per sample | {:.2} (chunks after cut; {:.2} before, WAL) | {:.2} (WAL + head chunks) | |",
        chunk_alloc as f64 / n,
        wal_before as f64 / n,
        prom_bytes as f64 / n
    );
    println!(
        "| chunk database file per sample (scalars + histograms) | {:.2} | | |",
        size.chunk_bytes as f64 / (scalars + histograms) as f64
    );
    println!(
        "| freshness, sample -> queryable (p50 / p99 / max, {} samples) | {:.0} / {:.0} / {:.0} ms | | |",
        fresh.len(),
        pct(&fresh, 50.0),
        pct(&fresh, 99.0),
        pct(&fresh, 100.0)
    );
    println!(
        "| query: 1 h of one host, {q_points} points at 15 s step (median, min–max of 5) | {qcm:.0} ms ({qclo:.0}–{qchi:.0}) | {qpm:.0} ms ({qplo:.0}–{qphi:.0}) | {:.2} |",
        qcm / qpm
    );
    let _ = std::fs::remove_dir_all(&disk);
    let _ = std::fs::remove_dir_all(&shm);
    Ok(())
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn tempfile_dir(base: PathBuf, prefix: &str) -> anyhow::Result<PathBuf> {
    let d = base.join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Sends one batch per second per agent with the real clock and measures when
/// each becomes visible through QuerySeries.
async fn freshness(
    target: &Target,
    sims: &mut [HostSim],
    streams: Vec<AgentStream>,
    last_seq: u64,
    secs: u64,
) -> anyhow::Result<Vec<f64>> {
    let addr = target.addr;
    let mut client = pb::query_client::QueryClient::connect(format!("http://{addr}")).await?;
    let mut lat = Vec::new();
    let mut streams = streams;
    let watched = streams.len().min(4);
    for k in 1..=secs {
        let tick = Instant::now();
        let seq = last_seq + k;
        let now = now_nanos();
        let mut sent = Vec::new();
        for (a, (s, sim)) in streams.iter_mut().zip(sims.iter_mut()).enumerate() {
            let t = now + a as i64 * 1_000;
            let b = sim.batch(seq, t);
            s.tx.send(pb::AgentMessage {
                kind: Some(AgentKind::Batch(b)),
            })
            .await?;
            sent.push(t);
        }
        // Poll the first hosts until their sample shows up.
        for (a, &t) in sent.iter().enumerate().take(watched) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = client
                    .query_series(pb::QuerySeriesRequest {
                        host: host_id(a as u32),
                        metric: "load1".into(),
                        start_unix_nano: t,
                        end_unix_nano: t + 1,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if r.series
                    .iter()
                    .any(|s| s.points.iter().any(|p| p.time_unix_nano == t))
                {
                    lat.push((now_nanos() - t) as f64 / 1e6);
                    break;
                }
                if Instant::now() > deadline {
                    bail!("sample of host {a} not queryable after 10 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        // Drain acks.
        for s in &mut streams {
            while let Ok(Ok(Some(_))) =
                tokio::time::timeout(Duration::from_millis(1), s.rx.message()).await
            {}
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    Ok(lat)
}

/// Fetches every series of one host over [start, end] at a 15 s step; returns the point count.
async fn query_host_hour(
    addr: SocketAddr,
    host: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<usize> {
    let mut client = pb::query_client::QueryClient::connect(format!("http://{addr}"))
        .await?
        .max_decoding_message_size(256 << 20);
    let metrics = client
        .list_metrics(pb::ListMetricsRequest { host: host.into() })
        .await?
        .into_inner();
    let mut points = 0;
    for m in metrics.metrics.iter().filter(|m| !m.histogram) {
        let t = Instant::now();
        let r = client
            .query_series(pb::QuerySeriesRequest {
                host: host.into(),
                metric: m.name.clone(),
                start_unix_nano: start,
                end_unix_nano: end,
                step_nanos: 15 * SEC,
                aggregation: pb::Aggregation::Last as i32,
                limit: 10_000,
                ..Default::default()
            })
            .await?
            .into_inner();
        points += r.series.iter().map(|s| s.points.len()).sum::<usize>();
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!("{} {:?}", m.name, t.elapsed());
        }
    }
    Ok(points)
}
