//! Mapping of a wire `Batch` to series (metric name + labels).
//!
//! Every numeric field of a batch becomes one sample of one series; syscall latency
//! histograms stay histograms (one sparse histogram per interval). Names follow
//! Prometheus conventions: base units in the name, `_total` for counters (which is
//! also what makes `rate` meaningful for them).
//!
//! A series key is `metric` followed by `\0label\x01value` per label, in the fixed
//! order the mapping emits them; label values are sanitised (no `\0`/`\x01`) and
//! bounded to [`MAX_LABEL_VALUE_BYTES`].

use nodewatch_proto::pb;

mod finite;

pub use finite::first_non_finite;

/// Longest label value kept, bytes (longer values are cut on a char boundary).
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// Receives the samples of one batch.
pub trait SampleSink {
    /// One scalar sample of the series `key`.
    fn scalar(&mut self, key: &str, value: f64);
    /// One histogram sample of the series `key`.
    fn histogram(&mut self, key: &str, histogram: &pb::Histogram);
}

/// Builds series keys into reused buffers.
#[derive(Debug, Default)]
pub struct KeyBuilder {
    labels: String,
    buf: String,
}

impl KeyBuilder {
    /// Starts the label set shared by the next series.
    fn labels(&mut self, labels: &[(&str, &str)]) -> &mut Self {
        self.labels.clear();
        for (k, v) in labels {
            push_label(&mut self.labels, k, v);
        }
        self
    }

    /// Key of `metric` with the current labels plus `extra`.
    fn key(&mut self, metric: &str, extra: &[(&str, &str)]) -> &str {
        self.buf.clear();
        self.buf.push_str(metric);
        self.buf.push_str(&self.labels);
        for (k, v) in extra {
            push_label(&mut self.buf, k, v);
        }
        &self.buf
    }
}

fn push_label(buf: &mut String, k: &str, v: &str) {
    buf.push('\0');
    buf.push_str(k);
    buf.push('\x01');
    let mut end = v.len().min(MAX_LABEL_VALUE_BYTES);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    for c in v[..end].chars() {
        buf.push(if c == '\0' || c == '\x01' { '?' } else { c });
    }
}

/// Splits a series key into its metric name and labels.
pub fn parse_key(key: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = key.split('\0');
    let metric = parts.next().unwrap_or("");
    let labels = parts
        .map(|p| p.split_once('\x01').unwrap_or((p, "")))
        .collect();
    (metric, labels)
}

/// Builds the key of `metric` with `labels` (same encoding the mapping uses).
pub fn make_key(metric: &str, labels: &[(&str, &str)]) -> String {
    let mut b = KeyBuilder::default();
    b.labels(labels);
    b.key(metric, &[]).to_string()
}

/// Human form of a key: `metric{a="x",b="y"}`.
pub fn display_key(key: &str) -> String {
    let (metric, labels) = parse_key(key);
    if labels.is_empty() {
        return metric.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{metric}{{{}}}", inner.join(","))
}

/// True when `metric` is a counter (monotonic since some start; `rate` applies).
pub fn is_counter(metric: &str) -> bool {
    metric.ends_with("_total")
}

fn f(v: u64) -> f64 {
    v as f64
}

/// Emits every sample of `batch` into `sink`.
pub fn map_batch(batch: &pb::Batch, sink: &mut impl SampleSink) {
    let mut kb = KeyBuilder::default();
    if let Some(cpu) = &batch.cpu {
        kb.labels(&[]);
        for (name, v) in [
            ("load1", cpu.load1),
            ("load5", cpu.load5),
            ("load15", cpu.load15),
            ("context_switches_total", f(cpu.context_switches)),
            ("forks_total", f(cpu.forks)),
            ("procs_running", f64::from(cpu.procs_running)),
            ("procs_blocked", f64::from(cpu.procs_blocked)),
            ("interrupts_total", f(cpu.interrupts)),
        ] {
            sink.scalar(kb.key(name, &[]), v);
        }
        if let Some(p) = &cpu.pressure {
            pressure(&mut kb, sink, "cpu", p);
        }
        let mut idx = String::new();
        for t in cpu.total.iter().chain(&cpu.per_cpu) {
            idx.clear();
            if t.cpu < 0 {
                idx.push_str("all");
            } else {
                idx.push_str(&t.cpu.to_string());
            }
            kb.labels(&[("cpu", &idx)]);
            for (mode, v) in [
                ("user", t.user_seconds),
                ("nice", t.nice_seconds),
                ("system", t.system_seconds),
                ("idle", t.idle_seconds),
                ("iowait", t.iowait_seconds),
                ("irq", t.irq_seconds),
                ("softirq", t.softirq_seconds),
                ("steal", t.steal_seconds),
            ] {
                sink.scalar(kb.key("cpu_seconds_total", &[("mode", mode)]), v);
            }
            sink.scalar(kb.key("cpu_busy_ratio", &[]), t.busy_ratio);
        }
    }
    if let Some(m) = &batch.memory {
        kb.labels(&[]);
        for (name, v) in [
            ("memory_total_bytes", m.total_bytes),
            ("memory_free_bytes", m.free_bytes),
            ("memory_available_bytes", m.available_bytes),
            ("memory_buffers_bytes", m.buffers_bytes),
            ("memory_cached_bytes", m.cached_bytes),
            ("memory_dirty_bytes", m.dirty_bytes),
            ("memory_writeback_bytes", m.writeback_bytes),
            ("memory_shmem_bytes", m.shmem_bytes),
            ("memory_slab_reclaimable_bytes", m.slab_reclaimable_bytes),
            (
                "memory_slab_unreclaimable_bytes",
                m.slab_unreclaimable_bytes,
            ),
            ("memory_swap_total_bytes", m.swap_total_bytes),
            ("memory_swap_free_bytes", m.swap_free_bytes),
            ("memory_used_bytes", m.used_bytes),
            ("memory_oom_kills_total", m.oom_kills),
            ("memory_major_faults_total", m.major_faults),
            ("memory_swap_in_pages_total", m.swap_in_pages),
            ("memory_swap_out_pages_total", m.swap_out_pages),
        ] {
            sink.scalar(kb.key(name, &[]), f(v));
        }
        if let Some(p) = &m.pressure {
            pressure(&mut kb, sink, "memory", p);
        }
        if let Some(p) = &m.io_pressure {
            pressure(&mut kb, sink, "io", p);
        }
    }
    for d in &batch.disks {
        kb.labels(&[
            ("mount", &d.mount_point),
            ("device", &d.device),
            ("fs_type", &d.fs_type),
        ]);
        for (name, v) in [
            ("disk_size_bytes", d.size_bytes),
            ("disk_free_bytes", d.free_bytes),
            ("disk_available_bytes", d.available_bytes),
            ("disk_inodes", d.inodes_total),
            ("disk_inodes_free", d.inodes_free),
            ("disk_read_only", u64::from(d.read_only)),
        ] {
            sink.scalar(kb.key(name, &[]), f(v));
        }
    }
    for b in &batch.block_devices {
        kb.labels(&[("device", &b.device)]);
        for (name, v) in [
            ("block_reads_total", b.reads),
            ("block_writes_total", b.writes),
            ("block_read_bytes_total", b.read_bytes),
            ("block_write_bytes_total", b.write_bytes),
            ("block_read_time_ms_total", b.read_time_ms),
            ("block_write_time_ms_total", b.write_time_ms),
            ("block_in_flight", b.in_flight),
            ("block_io_time_ms_total", b.io_time_ms),
        ] {
            sink.scalar(kb.key(name, &[]), f(v));
        }
        sink.scalar(kb.key("block_utilization_ratio", &[]), b.utilization);
    }
    if let Some(c) = &batch.connections {
        connections(&mut kb, sink, c);
    }
    let (mut pid, mut start) = (String::new(), String::new());
    for p in &batch.processes {
        pid.clear();
        pid.push_str(&p.pid.to_string());
        start.clear();
        start.push_str(&p.start_time_ticks.to_string());
        kb.labels(&[("pid", &pid), ("start", &start), ("name", &p.name)]);
        for (name, v) in [
            ("process_rss_bytes", f(p.rss_bytes)),
            ("process_pss_bytes", f(p.pss_bytes)),
            ("process_vsize_bytes", f(p.vsize_bytes)),
            ("process_user_seconds_total", p.user_seconds),
            ("process_system_seconds_total", p.system_seconds),
            ("process_cpu_ratio", p.cpu_ratio),
            ("process_threads", f64::from(p.threads)),
            ("process_open_fds", f64::from(p.open_fds)),
            ("process_fd_limit_soft", f(p.fd_limit_soft)),
            ("process_fd_limit_hard", f(p.fd_limit_hard)),
        ] {
            sink.scalar(kb.key(name, &[]), v);
        }
        if let Some(max) = p.cgroup_memory_max {
            sink.scalar(kb.key("process_cgroup_memory_max_bytes", &[]), f(max));
        }
        for s in &p.sockets {
            sink.scalar(
                kb.key("process_sockets", &[("state", &s.state)]),
                f64::from(s.count),
            );
        }
    }
    for s in &batch.syscalls {
        kb.labels(&[("syscall", &s.syscall), ("cgroup", &s.cgroup)]);
        sink.scalar(kb.key("syscall_calls", &[]), f(s.count));
        sink.scalar(kb.key("syscall_errors", &[]), f(s.errors));
        if let Some(h) = &s.latency_ns {
            sink.histogram(kb.key("syscall_latency_ns", &[]), h);
        }
    }
    if let Some(a) = &batch.agent {
        kb.labels(&[]);
        for (name, v) in [
            ("agent_spool_bytes", a.spool_bytes),
            ("agent_spool_batches", a.spool_batches),
            ("agent_dropped_batches_total", a.dropped_batches),
        ] {
            sink.scalar(kb.key(name, &[]), f(v));
        }
    }
    if let Some(e) = &batch.ebpf {
        kb.labels(&[]);
        for (name, v) in [
            ("ebpf_syscalls", e.syscalls),
            ("ebpf_run_time_ns", e.run_time_ns),
            ("ebpf_run_count", e.run_count),
            ("ebpf_interval_ns", e.interval_ns),
            ("ebpf_stats_window_ns", e.stats_window_ns),
            ("ebpf_backed_off", u64::from(e.backed_off)),
            ("ebpf_cgroup_slots", u64::from(e.cgroup_slots)),
        ] {
            sink.scalar(kb.key(name, &[]), f(v));
        }
        sink.scalar(kb.key("ebpf_cpu_fraction", &[]), e.cpu_fraction);
        sink.scalar(kb.key("ebpf_cpu_budget", &[]), e.cpu_budget);
    }
}

fn pressure(kb: &mut KeyBuilder, sink: &mut impl SampleSink, resource: &str, p: &pb::Pressure) {
    kb.labels(&[("resource", resource)]);
    for (name, v) in [
        ("pressure_some_avg10", p.some_avg10),
        ("pressure_some_avg60", p.some_avg60),
        ("pressure_some_avg300", p.some_avg300),
        ("pressure_some_us_total", f(p.some_total_us)),
        ("pressure_full_avg10", p.full_avg10),
        ("pressure_full_avg60", p.full_avg60),
        ("pressure_full_avg300", p.full_avg300),
        ("pressure_full_us_total", f(p.full_total_us)),
    ] {
        sink.scalar(kb.key(name, &[]), v);
    }
}

fn connections(kb: &mut KeyBuilder, sink: &mut impl SampleSink, c: &pb::ConnectionStats) {
    kb.labels(&[]);
    for (name, v) in [
        ("tcp_listen_overflows_total", c.listen_overflows),
        ("tcp_listen_drops_total", c.listen_drops),
        ("tcp_retransmits_total", c.retransmits),
        ("file_handles", c.file_handles),
        ("file_handles_max", c.file_handles_max),
    ] {
        sink.scalar(kb.key(name, &[]), f(v));
    }
    if let Some(v) = c.conntrack_entries {
        sink.scalar(kb.key("conntrack_entries", &[]), f(v));
    }
    if let Some(v) = c.conntrack_max {
        sink.scalar(kb.key("conntrack_max", &[]), f(v));
    }
    for s in &c.tcp_states {
        sink.scalar(kb.key("tcp_sockets", &[("state", &s.state)]), f(s.count));
    }
    for s in &c.udp_states {
        sink.scalar(kb.key("udp_sockets", &[("state", &s.state)]), f(s.count));
    }
    let mut port = String::new();
    let mut pid = String::new();
    for l in &c.listeners {
        port.clear();
        port.push_str(&l.port.to_string());
        kb.labels(&[
            ("address", &l.address),
            ("port", &port),
            ("process", &l.process),
        ]);
        sink.scalar(
            kb.key("listener_accept_queue", &[]),
            f64::from(l.accept_queue),
        );
        sink.scalar(kb.key("listener_backlog", &[]), f64::from(l.backlog));
    }
    for e in &c.ephemeral_ports {
        port.clear();
        port.push_str(&e.dst_port.to_string());
        kb.labels(&[
            ("src", &e.src_address),
            ("dst", &e.dst_address),
            ("dst_port", &port),
        ]);
        sink.scalar(kb.key("ephemeral_port_sockets", &[]), f(e.sockets));
        sink.scalar(kb.key("ephemeral_port_capacity", &[]), f(e.capacity));
    }
    for s in &c.sockets_by_owner {
        port.clear();
        port.push_str(&s.dst_port.to_string());
        pid.clear();
        pid.push_str(&s.pid.to_string());
        kb.labels(&[
            ("state", &s.state),
            ("pid", &pid),
            ("process", &s.process),
            ("dst", &s.dst_address),
            ("dst_port", &port),
        ]);
        sink.scalar(kb.key("sockets_by_owner", &[]), f(s.count));
    }
    for i in &c.interfaces {
        kb.labels(&[("interface", &i.name)]);
        for (name, v) in [
            ("net_rx_bytes_total", i.rx_bytes),
            ("net_rx_packets_total", i.rx_packets),
            ("net_rx_errors_total", i.rx_errors),
            ("net_rx_dropped_total", i.rx_dropped),
            ("net_tx_bytes_total", i.tx_bytes),
            ("net_tx_packets_total", i.tx_packets),
            ("net_tx_errors_total", i.tx_errors),
            ("net_tx_dropped_total", i.tx_dropped),
        ] {
            sink.scalar(kb.key(name, &[]), f(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        scalars: Vec<(String, f64)>,
        histograms: Vec<String>,
    }

    impl SampleSink for Collect {
        fn scalar(&mut self, key: &str, value: f64) {
            self.scalars.push((display_key(key), value));
        }
        fn histogram(&mut self, key: &str, _h: &pb::Histogram) {
            self.histograms.push(display_key(key));
        }
    }

    fn sample_batch() -> pb::Batch {
        pb::Batch {
            seq: 1,
            time_unix_nano: 1,
            cpu: Some(pb::CpuStats {
                total: Some(pb::CpuTimes {
                    cpu: -1,
                    user_seconds: 12.5,
                    ..Default::default()
                }),
                per_cpu: vec![pb::CpuTimes {
                    cpu: 0,
                    user_seconds: 6.0,
                    ..Default::default()
                }],
                load1: 0.5,
                ..Default::default()
            }),
            processes: vec![pb::ProcessStats {
                pid: 42,
                start_time_ticks: 1000,
                name: "nginx".into(),
                rss_bytes: 4096,
                sockets: vec![pb::ProcessSocketCount {
                    state: "CLOSE_WAIT".into(),
                    count: 3,
                }],
                ..Default::default()
            }],
            syscalls: vec![pb::SyscallLatency {
                syscall: "read".into(),
                cgroup: String::new(),
                count: 10,
                errors: 1,
                latency_ns: Some(pb::Histogram::default()),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn batch_maps_to_named_labelled_series() {
        let mut c = Collect::default();
        map_batch(&sample_batch(), &mut c);
        let has = |k: &str, v: f64| c.scalars.iter().any(|(key, val)| key == k && *val == v);
        assert!(has("load1", 0.5), "{:?}", c.scalars);
        assert!(has(r#"cpu_seconds_total{cpu="all",mode="user"}"#, 12.5));
        assert!(has(r#"cpu_seconds_total{cpu="0",mode="user"}"#, 6.0));
        assert!(has(
            r#"process_rss_bytes{pid="42",start="1000",name="nginx"}"#,
            4096.0
        ));
        assert!(has(
            r#"process_sockets{pid="42",start="1000",name="nginx",state="CLOSE_WAIT"}"#,
            3.0
        ));
        assert!(has(r#"syscall_calls{syscall="read",cgroup=""}"#, 10.0));
        assert_eq!(
            c.histograms,
            vec![r#"syscall_latency_ns{syscall="read",cgroup=""}"#]
        );
        // Keys are unique within one batch.
        let mut keys: Vec<&String> = c.scalars.iter().map(|s| &s.0).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    #[test]
    fn label_values_are_sanitised_and_bounded() {
        let long = "x".repeat(1000);
        let k = make_key("m", &[("a", "b\0c\x01d"), ("long", &long)]);
        let (metric, labels) = parse_key(&k);
        assert_eq!(metric, "m");
        assert_eq!(labels[0], ("a", "b?c?d"));
        assert_eq!(labels[1].1.len(), MAX_LABEL_VALUE_BYTES);
        let multibyte = "é".repeat(100);
        let k = make_key("m", &[("a", &multibyte)]);
        assert!(parse_key(&k).1[0].1.len() <= MAX_LABEL_VALUE_BYTES);
    }

    #[test]
    fn counters_are_recognised_by_name() {
        assert!(is_counter("cpu_seconds_total"));
        assert!(!is_counter("memory_used_bytes"));
    }
}
