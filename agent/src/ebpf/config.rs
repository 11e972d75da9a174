//! eBPF configuration (`[ebpf]` of the agent's configuration).

use std::time::Duration;

use serde::Deserialize;

/// Which tracepoint flavour to attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HookChoice {
    /// `tp_btf` when the kernel has BTF and accepts it, else raw tracepoints.
    #[default]
    Auto,
    /// Only `tp_btf` (BTF-typed raw tracepoints).
    TpBtf,
    /// Only raw tracepoints.
    RawTracepoint,
}

/// eBPF configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    /// Load and attach the syscall programs.
    pub enabled: bool,
    /// Hook flavour: "auto" (tp_btf, falling back to raw tracepoints), "tp_btf" or "raw_tracepoint".
    pub hook: HookChoice,
    /// Cgroups that get their own per-family histograms (the busiest ones; the
    /// rest is reported as "other"). At most 63.
    pub max_cgroups: u32,
    /// Share of the host's total CPU time the programs may use (0..1); above
    /// it they are detached for a back-off period.
    pub cpu_budget: f64,
    /// Measure the programs' cost every this many intervals (when the kernel
    /// does not keep BPF statistics on by itself).
    pub cost_every: u32,
    /// Length of one cost measurement window (statistics enabled only within it).
    #[serde(with = "humantime_serde")]
    pub cost_window: Duration,
    /// First back-off period after exceeding the budget; doubles each time.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest back-off period.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hook: HookChoice::Auto,
            max_cgroups: 32,
            cpu_budget: 0.02,
            cost_every: 6,
            cost_window: Duration::from_millis(100),
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
        }
    }
}
