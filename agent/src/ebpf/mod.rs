//! eBPF syscall tracing (interface; the programs arrive with agent-ebpf).

use nodewatch_proto::pb;
use serde::Deserialize;

/// eBPF configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    /// Load and attach the syscall programs.
    pub enabled: bool,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Why eBPF is not in use.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// Turned off by configuration.
    #[error("disabled by configuration")]
    Disabled,
    /// This build carries no eBPF programs.
    #[error("agent built without eBPF programs")]
    NotBuilt,
}

/// Loaded and attached syscall programs.
#[derive(Debug)]
pub struct SyscallTracer;

impl SyscallTracer {
    /// Loads and attaches the programs.
    pub fn start(config: &EbpfConfig) -> Result<SyscallTracer, EbpfError> {
        if !config.enabled {
            return Err(EbpfError::Disabled);
        }
        Err(EbpfError::NotBuilt)
    }

    /// Deltas since the previous call.
    pub fn collect(&mut self) -> (Vec<pb::SyscallLatency>, pb::EbpfStats) {
        (Vec::new(), pb::EbpfStats::default())
    }
}
