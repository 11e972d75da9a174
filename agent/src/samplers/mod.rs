//! Samplers: each reads one area of the host (/proc, /sys, netlink) into its part
//! of a [`pb::Batch`]. The [`SamplerRegistry`] builds them, records which ones
//! work, runs each at its cadence and keeps going when one fails.
//!
//! Hot paths keep their /proc files open and re-read them with `pread` into
//! reused buffers ([`procfile::ProcFile`]); parsers are plain functions over
//! bytes, unit-tested on copies of real /proc files in `fixtures/`.

pub mod cpu;
pub mod disk;
pub mod fdscan;
pub mod memory;
pub mod net;
pub mod owners;
pub mod pressure;
pub mod process;
pub mod procfile;
pub mod sockdiag;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nodewatch_proto::pb;
use serde::Deserialize;

/// Hasher for the integer keys the kernel hands out (pids): one multiply
/// instead of SipHash, in maps looked up once per process or socket per pass.
/// Keys are not chosen by an adversary able to gain from collisions (pids are
/// bounded by pid_max and the maps by the process bound).
#[derive(Debug, Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing: the high bits (which hashbrown uses for its
        // control bytes) depend on every bit of the key.
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by pid.
pub type PidMap<V> = HashMap<u32, V, BuildHasherDefault<IntHasher>>;

/// Errors of a sampler.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content did not have the expected shape.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Os {
        /// The call, e.g. "statvfs" or "sendmsg".
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A netlink reply was malformed or reported an error.
    #[error("netlink: {0}")]
    Netlink(&'static str),
}

/// One source of samples (rezolus style). A failed sampler never stops the agent.
pub trait Sampler: Send {
    /// Short name, e.g. "cpu"; used in logs and in Hello.capabilities.samplers.
    fn name(&self) -> &'static str;
    /// Fills this sampler's part of `batch`.
    fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError>;
}

/// Default cadence of the disk pass (statvfs of every mount, /proc/diskstats).
pub const DEFAULT_DISK_INTERVAL: Duration = Duration::from_secs(10);
/// Default cadence of the per-process pass.
pub const DEFAULT_PROCESS_INTERVAL: Duration = Duration::from_secs(10);
/// Default cadence of the socket pass (netlink sock_diag, owners, ephemeral ports).
pub const DEFAULT_SOCKET_INTERVAL: Duration = Duration::from_secs(10);
/// Default cadence of PSS (/proc/PID/smaps_rollup, expensive for large processes).
pub const DEFAULT_PSS_INTERVAL: Duration = Duration::from_secs(300);
/// Default length a command line is shortened to, bytes.
pub const DEFAULT_CMDLINE_MAX_BYTES: usize = 256;
/// Default length of the socket pass's busiest-first lists.
pub const DEFAULT_TOP_ENTRIES: usize = 64;
/// Default bound on the processes tracked per pass.
pub const DEFAULT_MAX_PROCESSES: usize = 32_768;

/// Which samplers run and at which cadence. Host-wide CPU and memory run at
/// every agent interval; the other passes have their own, slower cadence.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplersConfig {
    /// Sample host CPU (/proc/stat, /proc/loadavg, CPU pressure) every interval.
    pub cpu: bool,
    /// Sample host memory (/proc/meminfo, /proc/vmstat, memory and I/O pressure) every interval.
    pub memory: bool,
    /// Sample mounted filesystems and block devices.
    pub disks: bool,
    /// Sample network interfaces and connections (netlink sock_diag).
    pub connections: bool,
    /// Sample every process.
    pub processes: bool,
    /// Cadence of the disk pass, e.g. "10s".
    #[serde(with = "humantime_serde")]
    pub disk_interval: Duration,
    /// Also `statvfs` network filesystems (nfs, cifs, ceph, ...); off by default
    /// because a hung server blocks the call.
    pub disk_remote: bool,
    /// Cadence of the per-process pass, e.g. "10s".
    #[serde(with = "humantime_serde")]
    pub process_interval: Duration,
    /// Cadence of the socket pass (socket states, listeners, owners, ephemeral ports), e.g. "10s".
    #[serde(with = "humantime_serde")]
    pub socket_interval: Duration,
    /// Cadence of PSS per process (reads smaps_rollup, which walks page tables), e.g. "5m".
    #[serde(with = "humantime_serde")]
    pub pss_interval: Duration,
    /// Command lines are shortened to this many bytes.
    pub cmdline_max_bytes: usize,
    /// At most this many processes are reported per pass (lowest pids first).
    pub max_processes: usize,
    /// Length of the busiest-first lists of the socket pass (ephemeral-port
    /// tuples, CLOSE_WAIT / TIME_WAIT owners and destinations).
    pub top_entries: usize,
}

impl Default for SamplersConfig {
    fn default() -> Self {
        Self {
            cpu: true,
            memory: true,
            disks: true,
            connections: true,
            processes: true,
            disk_interval: DEFAULT_DISK_INTERVAL,
            disk_remote: false,
            process_interval: DEFAULT_PROCESS_INTERVAL,
            socket_interval: DEFAULT_SOCKET_INTERVAL,
            pss_interval: DEFAULT_PSS_INTERVAL,
            cmdline_max_bytes: DEFAULT_CMDLINE_MAX_BYTES,
            max_processes: DEFAULT_MAX_PROCESSES,
            top_entries: DEFAULT_TOP_ENTRIES,
        }
    }
}

/// Descriptors kept free for everything else the agent does.
const FD_RESERVE: u64 = 256;

/// Raises the soft RLIMIT_NOFILE to the hard limit (per-process files stay
/// open) and returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// A sampler that ran a little early still counts as due: calls come once per
/// agent interval with some jitter, and a 10 s cadence must not slip to 11 s.
const CADENCE_SLACK: Duration = Duration::from_millis(200);

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
            Ok(Box::new(cpu::CpuSampler::new()?))
        });
        registry.add("memory", config.memory, Duration::ZERO, || {
            Ok(Box::new(memory::MemorySampler::new()?))
        });
        registry.add("disks", config.disks, config.disk_interval, || {
            Ok(Box::new(disk::DiskSampler::new(config.disk_remote)?))
        });
        // The socket pass runs before the process pass so that each process's
        // sockets by state come from the same cycle.
        let by_pid = net::SocketsByPid::default();
        let shared = by_pid.clone();
        // Per-process files stay open: half the descriptor budget each for the
        // socket pass (fd directories) and the process pass (stat + fd directory).
        let budget = raise_nofile_limit().saturating_sub(FD_RESERVE) as usize / 2;
        registry.add(
            "connections",
            config.connections,
            config.socket_interval,
            || {
                Ok(Box::new(net::ConnectionsSampler::new(
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
                Ok(Box::new(process::ProcessSampler::new(
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
    /// For embedding and tests; the agent uses [`SamplerRegistry::new`].
    pub fn from_samplers(samplers: Vec<(Box<dyn Sampler>, Duration)>) -> SamplerRegistry {
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
    pub fn error_counts(&self) -> Vec<(&'static str, u64)> {
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

    #[test]
    fn pid_map_spreads_sequential_keys() {
        let mut m: PidMap<u32> = PidMap::default();
        for pid in 0..10_000u32 {
            m.insert(pid, pid * 2);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u32).all(|p| m.get(&p) == Some(&(p * 2))));
        assert_eq!(m.get(&10_000), None);
        // Top 7 bits (hashbrown's tag) of sequential pids are spread out.
        let tags: std::collections::HashSet<u64> = (0..1_000u32)
            .map(|p| {
                let mut h = IntHasher::default();
                h.write_u32(p);
                h.finish() >> 57
            })
            .collect();
        assert!(tags.len() > 100, "{}", tags.len());
    }

    #[test]
    fn config_from_toml() {
        let c: SamplersConfig =
            toml::from_str("process_interval = \"30s\"\npss_interval = \"10m\"\ncpu = false\n")
                .unwrap();
        assert_eq!(c.process_interval, Duration::from_secs(30));
        assert_eq!(c.pss_interval, Duration::from_secs(600));
        assert!(!c.cpu);
        assert_eq!(c.socket_interval, DEFAULT_SOCKET_INTERVAL);
        assert!(toml::from_str::<SamplersConfig>("bogus = 1\n").is_err());
    }
}
