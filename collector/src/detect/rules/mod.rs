//! The rules, one file per family: descriptors (`fds`), connections
//! (`connections`), disks (`disk`), host-wide CPU and memory (`host`), agent
//! silence (`silent`), leaks (`memory`) and syscall latency (`latency`). Each is a small struct holding its
//! `[rules.<name>]` table, behind the one [`Rule`] trait.

/// A rule struct holding its table, its common keys and the hysteresis.
macro_rules! rule_struct {
    ($(#[$doc:meta])* $ty:ident, $cfg:ty) => {
        $(#[$doc])*
        pub struct $ty {
            cfg: $cfg,
            common: crate::config::RuleCommon,
            #[allow(dead_code)]
            hysteresis: f64,
        }

        impl $ty {
            /// The rule with its table.
            pub fn new(cfg: $cfg, hysteresis: f64) -> Self {
                let common = cfg.common();
                Self {
                    cfg,
                    common,
                    hysteresis,
                }
            }
        }
    };
}

/// `name` and `common` of a rule made by `rule_struct!`.
macro_rules! rule_basics {
    ($name:literal) => {
        fn name(&self) -> &'static str {
            $name
        }

        fn common(&self) -> &crate::config::RuleCommon {
            &self.common
        }
    };
}

mod connections;
mod disk;
mod fds;
mod host;
mod latency;
mod memory;
mod silent;

#[cfg(test)]
pub(crate) mod testing;

use nodewatch_proto::pb;

use super::rule::Rule;
use crate::config::RulesConfig;

pub use connections::{CloseWait, Conntrack, EphemeralPorts, ListenBacklog, TcpRetransmits};
pub use disk::{DiskFilling, DiskFull};
pub use fds::{FdExhaustion, FileHandles};
pub use host::{HostCpu, HostMemory};
pub use latency::SyscallLatency;
pub use memory::MemoryLeak;
pub use silent::AgentSilent;

/// Every rule, configured (disabled ones included: their alerts clear).
pub fn build(rules: &RulesConfig, hysteresis: f64) -> Vec<Box<dyn Rule>> {
    let h = hysteresis;
    vec![
        Box::new(FdExhaustion::new(rules.fd_exhaustion.clone(), h)),
        Box::new(FileHandles::new(rules.file_handles.clone(), h)),
        Box::new(Conntrack::new(rules.conntrack.clone(), h)),
        Box::new(DiskFull::new(rules.disk_full.clone(), h)),
        Box::new(HostMemory::new(rules.host_memory.clone(), h)),
        Box::new(HostCpu::new(rules.host_cpu.clone(), h)),
        Box::new(TcpRetransmits::new(rules.tcp_retransmits.clone(), h)),
        Box::new(ListenBacklog::new(rules.listen_backlog.clone(), h)),
        Box::new(CloseWait::new(rules.close_wait.clone(), h)),
        Box::new(EphemeralPorts::new(rules.ephemeral_ports.clone(), h)),
        Box::new(AgentSilent::new(rules.agent_silent.clone())),
        Box::new(MemoryLeak::new(rules.memory_leak.clone(), h)),
        Box::new(DiskFilling::new(rules.disk_filling.clone(), h)),
        Box::new(SyscallLatency::new(rules.syscall_latency.clone(), h)),
    ]
}

/// The subject naming one process (pid + start time, name, cgroup).
fn process_subject(p: &pb::ProcessStats) -> pb::AlertSubject {
    pb::AlertSubject {
        pid: p.pid,
        start_time_ticks: p.start_time_ticks,
        process: p.name.clone(),
        cgroup: p.cgroup.clone(),
        ..Default::default()
    }
}

/// "nginx (pid 4121)".
fn process_label(p: &pb::ProcessStats) -> String {
    format!("{} (pid {})", p.name, p.pid)
}

/// One figure of this process over the recent batches, as evidence points.
fn process_series(
    recent: &[std::sync::Arc<pb::Batch>],
    p: &pb::ProcessStats,
    f: impl Fn(&pb::ProcessStats) -> f64,
) -> Vec<pb::EvidencePoint> {
    recent
        .iter()
        .filter_map(|b| {
            b.processes
                .iter()
                .find(|q| q.pid == p.pid && q.start_time_ticks == p.start_time_ticks)
                .map(|q| pb::EvidencePoint {
                    time_unix_nano: b.time_unix_nano,
                    value: f(q),
                })
        })
        .collect()
}

/// One host-wide figure over the recent batches, as evidence points.
fn host_series(
    recent: &[std::sync::Arc<pb::Batch>],
    f: impl Fn(&pb::Batch) -> Option<f64>,
) -> Vec<pb::EvidencePoint> {
    recent
        .iter()
        .filter_map(|b| {
            f(b).map(|value| pb::EvidencePoint {
                time_unix_nano: b.time_unix_nano,
                value,
            })
        })
        .collect()
}

/// Recent batches within `window` of the newest one.
fn within(
    recent: &[std::sync::Arc<pb::Batch>],
    window: std::time::Duration,
) -> &[std::sync::Arc<pb::Batch>] {
    let newest = recent.last().map_or(0, |b| b.time_unix_nano);
    let since = newest.saturating_sub(nodewatch_proto::time::duration_nanos(window));
    let start = recent.partition_point(|b| b.time_unix_nano < since);
    &recent[start..]
}
