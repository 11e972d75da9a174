//! The [`SamplerRegistry`]: builds every sampler, records which ones work
//! (for `Hello.capabilities.samplers`), runs each at its cadence and counts
//! and logs failures without ever stopping.

use std::time::{Duration, Instant};

use nodewatch_proto::pb;

use super::config::SamplersConfig;
use super::connections::{ConnectionsSampler, SocketsByPid};
use super::cpu::CpuSampler;
use super::disk::DiskSampler;
use super::memory::MemorySampler;
use super::processes::ProcessSampler;
use super::{CADENCE_SLACK, Sampler, SamplerError};
use crate::sys::rlimit::raise_nofile_limit;

/// Descriptors kept free for everything else the agent does.
const FD_RESERVE: u64 = 256;

/// One registered sampler and its bookkeeping.
struct Entry {
    name: &'static str,
    sampler: Option<Box<dyn Sampler>>,
    state: pb::FeatureState,
    reason: String,
    cadence: Duration,
    next_due: Option<Instant>,
    errors: u64,
    last_error: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("state", &self.state)
            .field("reason", &self.reason)
            .field("cadence", &self.cadence)
            .field("errors", &self.errors)
            .finish()
    }
}

/// Every sampler of the agent with its state (active / disabled / unavailable).
#[derive(Debug)]
pub struct SamplerRegistry {
    entries: Vec<Entry>,
}

impl SamplerRegistry {
    /// Builds every sampler; one that cannot start is recorded as failed/disabled with its reason. Logs one summary line.
    pub fn new(config: &SamplersConfig) -> SamplerRegistry {
        let mut registry = SamplerRegistry {
            entries: Vec::new(),
        };
        registry.add("cpu", config.cpu, Duration::ZERO, || {
            Ok(Box::new(CpuSampler::new()?))
        });
        registry.add("memory", config.memory, Duration::ZERO, || {
            Ok(Box::new(MemorySampler::new()?))
        });
        registry.add("disks", config.disks, config.disk_interval, || {
            Ok(Box::new(DiskSampler::new(config.disk_remote)?))
        });
        // The socket pass runs before the process pass so that each process's
        // sockets by state come from the same cycle: it leaves them, with each
        // process's descriptor count and its /proc pid listing, in `by_pid`,
        // which the process pass reads if they are from this cycle.
        let by_pid = SocketsByPid::default();
        let shared = by_pid.clone();
        // Per-process files stay open: half the descriptor budget each for the
        // socket pass (fd directories) and the process pass (stat + fd directory).
        let budget = raise_nofile_limit().saturating_sub(FD_RESERVE) as usize / 2;
        registry.add(
            "connections",
            config.connections,
            config.socket_interval,
            || {
                Ok(Box::new(ConnectionsSampler::new(
                    config.top_entries,
                    config.max_processes,
                    config.pss_interval,
                    budget,
                    shared,
                )?))
            },
        );
        registry.add(
            "processes",
            config.processes,
            config.process_interval,
            || {
                Ok(Box::new(ProcessSampler::new(
                    config.cmdline_max_bytes,
                    config.max_processes,
                    config.pss_interval,
                    budget,
                    by_pid,
                )?))
            },
        );
        registry.log_summary();
        registry
    }

    /// Builds a registry from samplers made elsewhere (each runs every call).
    /// For tests; the agent uses [`SamplerRegistry::new`].
    #[cfg(test)]
    fn from_samplers(samplers: Vec<(Box<dyn Sampler>, Duration)>) -> SamplerRegistry {
        let mut registry = SamplerRegistry {
            entries: Vec::new(),
        };
        for (sampler, cadence) in samplers {
            let name = sampler.name();
            registry.add(name, true, cadence, || Ok(sampler));
        }
        registry
    }

    fn add(
        &mut self,
        name: &'static str,
        enabled: bool,
        cadence: Duration,
        build: impl FnOnce() -> Result<Box<dyn Sampler>, SamplerError>,
    ) {
        let (sampler, state, reason) = if !enabled {
            (
                None,
                pb::FeatureState::Disabled,
                "disabled by configuration".to_string(),
            )
        } else {
            match build() {
                Ok(s) => (Some(s), pb::FeatureState::Active, String::new()),
                Err(e) => (None, pb::FeatureState::Unavailable, e.to_string()),
            }
        };
        self.entries.push(Entry {
            name,
            sampler,
            state,
            reason,
            cadence,
            next_due: None,
            errors: 0,
            last_error: None,
        });
    }

    fn log_summary(&self) {
        let list = |state: pb::FeatureState| {
            self.entries
                .iter()
                .filter(|e| e.state == state)
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(",")
        };
        let failed: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.state == pb::FeatureState::Unavailable)
            .map(|e| format!("{} ({})", e.name, e.reason))
            .collect();
        tracing::info!(
            active = %list(pb::FeatureState::Active),
            disabled = %list(pb::FeatureState::Disabled),
            unavailable = %failed.join(", "),
            "samplers ready"
        );
    }

    /// Per-sampler state for Hello.capabilities.samplers.
    pub fn statuses(&self) -> Vec<pb::FeatureStatus> {
        self.entries
            .iter()
            .map(|e| pb::FeatureStatus {
                name: e.name.to_string(),
                state: e.state as i32,
                reason: e.reason.clone(),
            })
            .collect()
    }

    /// Errors counted per sampler since start, by name.
    #[cfg(test)]
    fn error_counts(&self) -> Vec<(&'static str, u64)> {
        self.entries.iter().map(|e| (e.name, e.errors)).collect()
    }

    /// Runs the samplers due at `now` (cadences), never fails; errors are counted and logged once per change.
    pub fn sample(&mut self, batch: &mut pb::Batch, now: Instant) {
        for e in &mut self.entries {
            let Some(sampler) = e.sampler.as_mut() else {
                continue;
            };
            if let Some(due) = e.next_due
                && now + CADENCE_SLACK < due
            {
                continue;
            }
            e.next_due = Some(match e.next_due {
                // Stay on the schedule unless we fell more than one cadence behind.
                Some(due) if now < due + e.cadence => due + e.cadence,
                _ => now + e.cadence,
            });
            match sampler.sample(batch) {
                Ok(()) => {
                    if e.last_error.take().is_some() {
                        tracing::info!(sampler = e.name, "sampler recovered");
                    }
                }
                Err(err) => {
                    e.errors += 1;
                    let msg = err.to_string();
                    if e.last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(
                            sampler = e.name,
                            errors = e.errors,
                            "sampler failed: {msg}"
                        );
                        e.last_error = Some(msg);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
        fail: bool,
    }

    impl Sampler for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.fail {
                return Err(SamplerError::Netlink("boom"));
            }
            batch.processes_complete = true;
            Ok(())
        }
    }

    #[test]
    fn default_registry_fills_cpu_and_memory() {
        let mut r = SamplerRegistry::new(&SamplersConfig::default());
        let statuses = r.statuses();
        let state = |name: &str| statuses.iter().find(|s| s.name == name).unwrap().state;
        assert_eq!(state("cpu"), pb::FeatureState::Active as i32);
        assert_eq!(state("memory"), pb::FeatureState::Active as i32);
        let mut b = pb::Batch::default();
        r.sample(&mut b, Instant::now());
        assert!(b.cpu.is_some() && b.memory.is_some());
    }

    #[test]
    fn disabled_sampler_is_reported_and_skipped() {
        let config = SamplersConfig {
            cpu: false,
            ..SamplersConfig::default()
        };
        let mut r = SamplerRegistry::new(&config);
        let cpu = r.statuses().into_iter().find(|s| s.name == "cpu").unwrap();
        assert_eq!(cpu.state, pb::FeatureState::Disabled as i32);
        assert!(!cpu.reason.is_empty());
        let mut b = pb::Batch::default();
        r.sample(&mut b, Instant::now());
        assert!(b.cpu.is_none());
        assert!(b.memory.is_some());
    }

    #[test]
    fn cadence_and_failures() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut r = SamplerRegistry::from_samplers(vec![
            (
                Box::new(Counting {
                    calls: calls.clone(),
                    fail: false,
                }),
                Duration::from_secs(10),
            ),
            (
                Box::new(Counting {
                    calls: failing.clone(),
                    fail: true,
                }),
                Duration::ZERO,
            ),
        ]);
        let t0 = Instant::now();
        let mut b = pb::Batch::default();
        for i in 0..25u64 {
            // Calls arrive slightly early, as jittered ticks do.
            let now =
                t0 + Duration::from_secs(i) - Duration::from_millis(if i > 0 { 50 } else { 0 });
            r.sample(&mut b, now);
        }
        // Runs at 0, 10 and 20 s.
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(failing.load(std::sync::atomic::Ordering::Relaxed), 25);
        assert_eq!(r.error_counts()[1], ("counting", 25));
        assert!(b.processes_complete, "the working sampler still ran");
    }
}
