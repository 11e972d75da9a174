//! Which samplers run and at which cadence (`[samplers]` of the agent's
//! configuration), with the defaults.

use std::time::Duration;

use serde::Deserialize;

/// Default cadence of the disk pass (statvfs of every mount, /proc/diskstats).
pub(crate) const DEFAULT_DISK_INTERVAL: Duration = Duration::from_secs(10);
/// Default cadence of the per-process pass.
pub(crate) const DEFAULT_PROCESS_INTERVAL: Duration = Duration::from_secs(10);
/// Default cadence of the socket pass (netlink sock_diag, owners, ephemeral ports).
pub(crate) const DEFAULT_SOCKET_INTERVAL: Duration = Duration::from_secs(10);
/// Default cadence of PSS (/proc/PID/smaps_rollup, expensive for large processes).
pub(crate) const DEFAULT_PSS_INTERVAL: Duration = Duration::from_secs(300);
/// Default length a command line is shortened to, bytes.
pub(crate) const DEFAULT_CMDLINE_MAX_BYTES: usize = 256;
/// Default length of the socket pass's busiest-first lists.
pub(crate) const DEFAULT_TOP_ENTRIES: usize = 64;
/// Default bound on the processes tracked per pass.
pub(crate) const DEFAULT_MAX_PROCESSES: usize = 32_768;

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

#[cfg(test)]
mod tests {
    use super::*;

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
