//! Self-cost of the programs from the kernel's BPF statistics (run time and
//! run count per program), measured over the whole interval when
//! `kernel.bpf_stats_enabled` is on, otherwise in short windows in which the
//! agent enables the statistics itself (`BPF_ENABLE_STATS`), since keeping
//! them on costs time on every program run. Also the back-off state.

use std::time::{Duration, Instant};

use aya::Ebpf;

use super::config::EbpfConfig;

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measurement {
    /// Kernel time in the programs during the window, ns.
    pub(crate) run_time_ns: u64,
    /// Program runs during the window.
    pub(crate) run_count: u64,
    /// Window length, ns.
    pub(crate) window_ns: u64,
    /// `run_time / (window × online CPUs)`.
    pub(crate) cpu_fraction: f64,
}

/// Measurement schedule and back-off state.
#[derive(Debug)]
pub(crate) struct CostMonitor {
    every: u32,
    window: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    backoff: Duration,
    retry_at: Option<Instant>,
    calls: u64,
    /// Previous totals and time when the kernel keeps statistics on by itself.
    prev: Option<(u64, u64, Instant)>,
    cpus: f64,
}

fn sysctl_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

fn totals(ebpf: &Ebpf, programs: &[String]) -> Option<(u64, u64)> {
    let mut t = (0u64, 0u64);
    for name in programs {
        let info = ebpf.program(name)?.info().ok()?;
        t.0 += info.run_time().as_nanos() as u64;
        t.1 += info.run_count();
    }
    Some(t)
}

impl CostMonitor {
    /// A monitor following `config`.
    pub(crate) fn new(config: &EbpfConfig) -> Self {
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as f64;
        Self {
            every: config.cost_every.max(1),
            window: config
                .cost_window
                .clamp(Duration::from_millis(1), Duration::from_secs(2)),
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max.max(config.backoff_min),
            backoff: config.backoff_min,
            retry_at: None,
            calls: 0,
            prev: None,
            cpus,
        }
    }

    /// Measures now if due; `None` when no measurement was taken.
    pub(crate) fn measure(&mut self, ebpf: &Ebpf, programs: &[String]) -> Option<Measurement> {
        self.calls += 1;
        if sysctl_stats_enabled() {
            let now = Instant::now();
            let (rt, rc) = totals(ebpf, programs)?;
            let prev = self.prev.replace((rt, rc, now));
            let (prt, prc, pt) = prev?;
            let window = now.duration_since(pt);
            return Some(self.figures(rt.saturating_sub(prt), rc.saturating_sub(prc), window));
        }
        self.prev = None;
        if !(self.calls - 1).is_multiple_of(u64::from(self.every)) {
            return None;
        }
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok()?;
        let start = Instant::now();
        let (rt0, rc0) = totals(ebpf, programs)?;
        std::thread::sleep(self.window);
        let (rt1, rc1) = totals(ebpf, programs)?;
        let window = start.elapsed();
        drop(fd);
        Some(self.figures(rt1.saturating_sub(rt0), rc1.saturating_sub(rc0), window))
    }

    fn figures(&self, run_time_ns: u64, run_count: u64, window: Duration) -> Measurement {
        let window_ns = window.as_nanos().max(1) as u64;
        Measurement {
            run_time_ns,
            run_count,
            window_ns,
            cpu_fraction: run_time_ns as f64 / (window_ns as f64 * self.cpus),
        }
    }

    /// Starts (or extends) a back-off period; returns its length.
    pub(crate) fn back_off(&mut self, now: Instant) -> Duration {
        let b = self.backoff;
        self.retry_at = Some(now + b);
        self.backoff = (self.backoff * 2).min(self.backoff_max);
        b
    }

    /// A measurement within budget resets the back-off length.
    pub(crate) fn within_budget(&mut self) {
        self.backoff = self.backoff_min;
        self.retry_at = None;
    }

    /// True when a back-off period is over.
    pub(crate) fn may_retry(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }
}
