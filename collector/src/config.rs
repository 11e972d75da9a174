//! Collector configuration: defaults, then the TOML file, then flags and
//! `NODEWATCH_*` environment variables (flags and env win).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default listen address: loopback, plaintext.
pub const DEFAULT_LISTEN: &str = nodewatch_proto::DEFAULT_COLLECTOR_ADDR;
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/nodewatch";
/// Default in-memory history per host.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(15 * 60);
/// Most recent batches kept in memory per host, whatever their age.
pub const DEFAULT_MAX_HISTORY_BATCHES: usize = 1_800;
/// Default maximum number of hosts (registry and store).
pub const DEFAULT_MAX_HOSTS: usize = 10_000;
/// Default oldest batch accepted, by the collector's clock: agents replay what
/// they kept during an outage. Equal to the default retention: an older batch
/// would be deleted by the next retention pass anyway.
pub const DEFAULT_MAX_BATCH_AGE: Duration = DEFAULT_RETENTION;
/// Default time a new stream has to say Hello before it is closed.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an agent stream may stay silent before it is closed (agents
/// send a batch every interval, 1 s by default).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default limit of concurrent gRPC streams on one connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Default furthest a batch may be ahead of the collector's clock.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(10 * 60);

/// Default retention of stored samples.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(15 * 24 * 3600);
/// Default limit of active series per host.
pub const DEFAULT_MAX_SERIES_PER_HOST: usize = 100_000;
/// Default span of the in-memory head before it is cut into chunks.
pub const DEFAULT_CHUNK_DURATION: Duration = Duration::from_secs(20 * 60);
/// Default cap of head memory.
pub const DEFAULT_HEAD_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap of the current WAL segment.
pub const DEFAULT_WAL_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Default interval of the retention pass.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Default number of agent runs remembered per host for de-duplication.
pub const DEFAULT_MAX_RUNS_PER_HOST: usize = 32;

/// Store settings (the `[store]` table of the collector configuration).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How long samples are kept; older chunks are deleted in the background.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most series one host may have active in the head; a batch that would create
    /// more is refused with RESOURCE_EXHAUSTED.
    pub max_series_per_host: usize,
    /// Most hosts the store accepts: the top-level `max_hosts` (not a key of `[store]`).
    #[serde(skip)]
    pub max_hosts: usize,
    /// Samples timestamped further than this ahead of the collector clock are
    /// refused: the top-level `max_clock_skew` (not a key of `[store]`).
    #[serde(skip)]
    pub max_future_skew: Duration,
    /// Samples older than this (collector clock) are refused: the top-level
    /// `max_batch_age` (not a key of `[store]`).
    #[serde(skip)]
    pub max_sample_age: Duration,
    /// Span of the in-memory head before it is written out as compressed chunks.
    #[serde(with = "humantime_serde")]
    pub chunk_duration: Duration,
    /// Head memory that triggers an early cut, bytes.
    pub head_max_bytes: u64,
    /// WAL segment size that triggers an early cut, bytes.
    pub wal_max_bytes: u64,
    /// Interval of the retention pass.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Agent runs remembered per host for de-duplication (least recently used dropped).
    pub max_runs_per_host: usize,
    /// Longest WAL record replayed, bytes: the top-level `max_message_bytes`
    /// plus the record's framing (not a key of `[store]`).
    #[serde(skip)]
    pub max_record_bytes: usize,
    /// fsync the WAL before acknowledging appends. `false` acknowledges data that a
    /// crash or power loss can lose: only for measuring the in-memory path.
    pub fsync: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            max_series_per_host: DEFAULT_MAX_SERIES_PER_HOST,
            max_hosts: DEFAULT_MAX_HOSTS,
            max_future_skew: DEFAULT_MAX_CLOCK_SKEW,
            max_sample_age: DEFAULT_MAX_BATCH_AGE,
            chunk_duration: DEFAULT_CHUNK_DURATION,
            head_max_bytes: DEFAULT_HEAD_MAX_BYTES,
            wal_max_bytes: DEFAULT_WAL_MAX_BYTES,
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            max_runs_per_host: DEFAULT_MAX_RUNS_PER_HOST,
            max_record_bytes: nodewatch_proto::MAX_MESSAGE_BYTES
                + crate::store::wal::RECORD_OVERHEAD_BYTES,
            fsync: true,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] nodewatch_proto::daemon::ConfigFileError),
    /// A non-loopback address without `insecure_listen`.
    #[error(
        "refusing to listen on non-loopback address {0} without TLS; \
         pass --insecure-listen (or insecure_listen = true) to accept plaintext gRPC from the network"
    )]
    InsecureListen(SocketAddr),
}

/// Everything the collector can be configured with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Address to serve gRPC on (Ingest, Query, health, reflection).
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address without TLS (plaintext on the network).
    pub insecure_listen: bool,
    /// Directory for the collector's data.
    pub data_dir: PathBuf,
    /// How much recent history per host is kept in memory for fresh queries.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    /// Most hosts the collector tracks; further agents are refused with RESOURCE_EXHAUSTED.
    pub max_hosts: usize,
    /// Oldest batch accepted (agents replay what they kept during an outage).
    #[serde(with = "humantime_serde")]
    pub max_batch_age: Duration,
    /// Furthest ahead of the collector's clock a batch may be.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Largest gRPC message accepted, bytes.
    pub max_message_bytes: usize,
    /// A new ingest stream that sends no Hello within this is closed
    /// (DEADLINE_EXCEEDED).
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// An ingest stream with no message for this long is closed
    /// (DEADLINE_EXCEEDED); the agent reconnects.
    #[serde(with = "humantime_serde")]
    pub stream_idle_timeout: Duration,
    /// Most concurrent gRPC streams on one connection (HTTP/2 setting).
    pub max_streams_per_connection: u32,
    /// The embedded time-series store (`[store]` table). Its `max_hosts`,
    /// `max_sample_age` and `max_future_skew` are taken from the top-level
    /// `max_hosts`, `max_batch_age` and `max_clock_skew`.
    pub store: StoreConfig,
    /// The detectors (`[detect]` table).
    pub detect: DetectConfig,
    /// One table per rule (`[rules.<name>]`).
    pub rules: RulesConfig,
    /// Where alerts are sent (`[[notify.alertmanager]]`, `[[notify.webhook]]`).
    pub notify: NotifyConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            insecure_listen: false,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            history: DEFAULT_HISTORY,
            max_hosts: DEFAULT_MAX_HOSTS,
            max_batch_age: DEFAULT_MAX_BATCH_AGE,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            max_message_bytes: nodewatch_proto::MAX_MESSAGE_BYTES,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            store: StoreConfig::default(),
            detect: DetectConfig::default(),
            rules: RulesConfig::default(),
            notify: NotifyConfig::default(),
        }
    }
}

impl CollectorConfig {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Ok(nodewatch_proto::daemon::load_toml(path)?)
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The store settings with the collector-wide limits applied.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            max_hosts: self.max_hosts,
            max_sample_age: self.max_batch_age,
            max_future_skew: self.max_clock_skew,
            max_record_bytes: self.max_message_bytes + crate::store::wal::RECORD_OVERHEAD_BYTES,
            ..self.store.clone()
        }
    }

    /// Checks choices that must be explicit.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && !self.insecure_listen {
            return Err(ConfigError::InsecureListen(self.listen));
        }
        Ok(())
    }
}

/// Default tick of the detectors.
pub const DEFAULT_DETECT_INTERVAL: Duration = Duration::from_secs(10);
/// Default hysteresis: a threshold crossed upward clears only below
/// `threshold * (1 - hysteresis)` (and the mirror for lower-is-worse figures).
pub const DEFAULT_HYSTERESIS: f64 = 0.05;
/// Default time resolved alerts are kept (listed with `--all`, in the store).
pub const DEFAULT_KEEP_RESOLVED: Duration = Duration::from_secs(24 * 3600);
/// Default re-post interval of firing alerts to Alertmanager.
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// Default notifications queued per receiver before new ones are dropped.
pub const DEFAULT_NOTIFY_QUEUE: usize = 1024;
/// Default timeout of one notification request.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default first retry delay of a failed notification (doubling).
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_millis(500);
/// Default longest retry delay of a failed notification.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Default age after which an undelivered notification is dropped (counted).
pub const DEFAULT_MAX_RETRY_AGE: Duration = Duration::from_secs(3600);

const MIB: f64 = 1024.0 * 1024.0;
const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The detectors (`[detect]` table).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Evaluate the rules at all.
    pub enabled: bool,
    /// Every enabled rule is evaluated for every host at this tick.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Relative margin a value must fall back past a threshold before the
    /// alert clears or de-escalates (a value hovering at a threshold does not flap).
    pub hysteresis: f64,
    /// How long resolved alerts are kept (listed with `--all`, persisted).
    #[serde(with = "humantime_serde")]
    pub keep_resolved: Duration,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: DEFAULT_DETECT_INTERVAL,
            hysteresis: DEFAULT_HYSTERESIS,
            keep_resolved: DEFAULT_KEEP_RESOLVED,
        }
    }
}

/// What every rule table has: whether it runs, its hold times and its host matcher.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleCommon {
    /// Evaluate this rule.
    pub enabled: bool,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    /// How long a firing alert keeps firing after the condition stops holding.
    pub keep_firing_for: Duration,
    /// Only hosts whose labels include every one of these.
    pub hosts: BTreeMap<String, String>,
}

macro_rules! rule_tables {
    ($(
        $(#[$doc:meta])*
        $rule:ident : $ty:ident (for = $for:expr) {
            $( $(#[$fmeta:meta])* $field:ident : $fty:ty = $fdef:expr ),* $(,)?
        }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub struct $ty {
                /// Evaluate this rule.
                pub enabled: bool,
                /// How long the condition must hold before the alert fires.
                #[serde(rename = "for", with = "humantime_serde")]
                pub for_: Duration,
                /// How long a firing alert keeps firing after the condition stops holding.
                #[serde(with = "humantime_serde")]
                pub keep_firing_for: Duration,
                /// Only hosts whose labels include every one of these, e.g. `{ env = "prod" }`.
                pub hosts: BTreeMap<String, String>,
                $( $(#[$fmeta])* pub $field: $fty, )*
            }

            impl Default for $ty {
                fn default() -> Self {
                    Self {
                        enabled: true,
                        for_: $for,
                        keep_firing_for: Duration::ZERO,
                        hosts: BTreeMap::new(),
                        $( $field: $fdef, )*
                    }
                }
            }

            impl $ty {
                /// The keys every rule has.
                pub fn common(&self) -> RuleCommon {
                    RuleCommon {
                        enabled: self.enabled,
                        for_: self.for_,
                        keep_firing_for: self.keep_firing_for,
                        hosts: self.hosts.clone(),
                    }
                }
            }
        )*

        /// One table per rule (`[rules.<name>]`); unknown rule names are errors.
        #[derive(Debug, Clone, PartialEq, Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct RulesConfig {
            $( $(#[$doc])* pub $rule: $ty, )*
        }
    };
}

rule_tables! {
    /// `fd_exhaustion`: a process's open descriptors against its own soft RLIMIT_NOFILE.
    fd_exhaustion: FdExhaustionConfig (for = secs(60)) {
        /// Ratio of the soft limit from which the alert is high.
        high: f64 = 0.80,
        /// Ratio of the soft limit from which the alert is critical.
        critical: f64 = 0.95,
    }
    /// `file_handles`: allocated file handles (file-nr) against file-max.
    file_handles: FileHandlesConfig (for = secs(60)) {
        /// Ratio of file-max from which the alert is high.
        high: f64 = 0.70,
        /// Ratio of file-max from which the alert is critical.
        critical: f64 = 0.90,
    }
    /// `conntrack`: conntrack entries against nf_conntrack_max.
    conntrack: ConntrackConfig (for = secs(60)) {
        /// Ratio of nf_conntrack_max from which the alert is high.
        high: f64 = 0.75,
        /// Ratio of nf_conntrack_max from which the alert is critical.
        critical: f64 = 0.90,
    }
    /// `disk_full`: free space or inodes of a mount (read-only mounts are skipped).
    disk_full: DiskFullConfig (for = secs(60)) {
        /// Free ratio (available to unprivileged users) below which the alert is high.
        high: f64 = 0.05,
        /// Free ratio below which the alert is critical.
        critical: f64 = 0.03,
    }
    /// `host_memory`: used memory (MemTotal - MemAvailable; page cache is not used).
    host_memory: HostMemoryConfig (for = secs(300)) {
        /// Used ratio above which the alert is high.
        high: f64 = 0.85,
    }
    /// `host_cpu`: CPU busy share averaged over `window`.
    host_cpu: HostCpuConfig (for = secs(300)) {
        /// Busy ratio above which the alert is medium (the scaling trigger).
        medium: f64 = 0.70,
        /// Averaging window of the busy ratio (bounded by the in-memory `history`).
        #[serde(with = "humantime_serde")]
        window: Duration = secs(60),
    }
    /// `tcp_retransmits`: retransmitted TCP segments per packet sent over `window`.
    tcp_retransmits: TcpRetransmitsConfig (for = secs(300)) {
        /// Ratio above which the alert is medium.
        medium: f64 = 0.01,
        /// Window of the two counters (bounded by the in-memory `history`).
        #[serde(with = "humantime_serde")]
        window: Duration = secs(300),
        /// Fewest packets sent in the window for the ratio to count.
        min_packets: u64 = 1000,
    }
    /// `listen_backlog`: accept queues of listeners, and overflows rising.
    listen_backlog: ListenBacklogConfig (for = secs(30)) {
        /// Ratio of the backlog from which a listener's alert is high.
        high: f64 = 0.80,
        /// Connections waiting from which a listener's alert is high, whatever its backlog.
        high_queue: u64 = 1000,
        /// Window over which ListenOverflows / ListenDrops rising raise the host-wide alert.
        #[serde(with = "humantime_serde")]
        window: Duration = secs(60),
    }
    /// `close_wait`: CLOSE_WAIT sockets of a process rising over `window` (a socket leak).
    close_wait: CloseWaitConfig (for = secs(60)) {
        /// Fitting window (bounded by the in-memory `history`).
        #[serde(with = "humantime_serde")]
        window: Duration = secs(600),
        /// Fewest CLOSE_WAIT sockets held now for the alert.
        min_sockets: u64 = 32,
        /// Smallest fitted increase over the window, sockets.
        min_increase: f64 = 16.0,
    }
    /// `ephemeral_ports`: sockets per (source, destination, port) against the usable port range.
    ephemeral_ports: EphemeralPortsConfig (for = secs(60)) {
        /// Ratio of the port range from which the alert is high.
        high: f64 = 0.70,
        /// Ratio of the port range from which the alert is critical.
        critical: f64 = 0.90,
    }
    /// `agent_silent`: no batch from a host for `missed_intervals` of its interval.
    agent_silent: AgentSilentConfig (for = Duration::ZERO) {
        /// Intervals without a batch before the host is silent.
        missed_intervals: u32 = 3,
        /// After the collector starts, agents get this long to reconnect before
        /// any of them counts as silent (a collector restart pages nobody).
        #[serde(with = "humantime_serde")]
        grace: Duration = secs(60),
    }
    /// `memory_leak`: a process's RSS rising steadily (pid + start time).
    memory_leak: MemoryLeakConfig (for = secs(300)) {
        /// Fitting window (read from the store).
        #[serde(with = "humantime_serde")]
        window: Duration = secs(3600),
        /// Smallest growth, bytes per hour.
        min_growth_bytes_per_hour: f64 = 50.0 * MIB,
        /// Smallest growth per hour as a share of the process's limit.
        min_growth_of_limit: f64 = 0.05,
        /// Smallest growth per hour as a share of its current RSS.
        min_growth_ratio_per_hour: f64 = 0.10,
        /// Share of the window a process must have been sampled over.
        min_coverage: f64 = 0.5,
        /// Share of the window at its end that must still be rising.
        tail: f64 = 0.25,
        /// Projected out of memory within this: critical (else high).
        #[serde(with = "humantime_serde")]
        critical_within: Duration = secs(3600),
    }
    /// `disk_filling`: a mount's projected time to full (bytes and inodes).
    disk_filling: DiskFillingConfig (for = secs(600)) {
        /// Fitting window (read from the store).
        #[serde(with = "humantime_serde")]
        window: Duration = secs(6 * 3600),
        /// Projected full within this and free below `high_free`: high.
        #[serde(with = "humantime_serde")]
        high_within: Duration = secs(24 * 3600),
        /// Free ratio below which a projection within `high_within` is high.
        high_free: f64 = 0.40,
        /// Projected full within this and free below `critical_free`: critical.
        #[serde(with = "humantime_serde")]
        critical_within: Duration = secs(4 * 3600),
        /// Free ratio below which a projection within `critical_within` is critical.
        critical_free: f64 = 0.20,
        /// A rise of free space larger than this share of the size is a cleanup
        /// (rotation): the fit restarts after it.
        cleanup: f64 = 0.01,
        /// Share of the window the series after the last cleanup must span.
        min_coverage: f64 = 0.25,
    }
    /// `syscall_latency`: p99 of a syscall family that does not block by
    /// design, per cgroup, against its own baseline (needs the agent's eBPF).
    syscall_latency: SyscallLatencyConfig (for = secs(300)) {
        /// The recent window whose p99 is judged (bounded by the in-memory `history`).
        #[serde(with = "humantime_serde")]
        window: Duration = secs(60),
        /// The span before `window` whose per-interval p99s give the baseline
        /// (their median; bounded by the in-memory `history`).
        #[serde(with = "humantime_serde")]
        baseline: Duration = secs(14 * 60),
        /// The recent p99 must reach this many times the baseline.
        factor: f64 = 10.0,
        /// ... and at least this latency.
        #[serde(with = "humantime_serde")]
        min_latency: Duration = Duration::from_millis(100),
        /// Fewest calls in the window (and in the baseline) to judge.
        min_calls: u64 = 20,
        /// Families judged: those that do not block by design ("file": open,
        /// stat, fsync-like calls; not "io", whose reads wait for peers).
        families: Vec<String> = vec!["file".to_string()],
    }
}

/// Where alerts go (`[[notify.alertmanager]]`, `[[notify.webhook]]`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Alertmanagers (v2 API).
    pub alertmanager: Vec<AlertmanagerConfig>,
    /// Webhook receivers (Alertmanager's webhook payload).
    pub webhook: Vec<WebhookConfig>,
}

/// Delivery settings every receiver has: queue, timeout and retries.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Notifications queued before new ones are dropped (counted).
    pub queue: usize,
    /// Timeout of one request.
    pub timeout: Duration,
    /// First retry delay after a failure (doubling).
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// A notification not delivered within this is dropped (counted).
    pub max_retry_age: Duration,
}

macro_rules! receiver_tables {
    ($( $(#[$doc:meta])* $ty:ident { $( $(#[$fmeta:meta])* $field:ident : $fty:ty = $fdef:expr ),* $(,)? } )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub struct $ty {
                /// Base URL (http only), e.g. "http://127.0.0.1:9093".
                pub url: String,
                $( $(#[$fmeta])* pub $field: $fty, )*
                /// Notifications queued before new ones are dropped (counted).
                pub queue: usize,
                /// Timeout of one request.
                #[serde(with = "humantime_serde")]
                pub timeout: Duration,
                /// First retry delay after a failure (doubling).
                #[serde(with = "humantime_serde")]
                pub retry_min: Duration,
                /// Longest retry delay.
                #[serde(with = "humantime_serde")]
                pub retry_max: Duration,
                /// A notification not delivered within this is dropped (counted).
                #[serde(with = "humantime_serde")]
                pub max_retry_age: Duration,
            }

            impl Default for $ty {
                fn default() -> Self {
                    Self {
                        url: String::new(),
                        $( $field: $fdef, )*
                        queue: DEFAULT_NOTIFY_QUEUE,
                        timeout: DEFAULT_NOTIFY_TIMEOUT,
                        retry_min: DEFAULT_RETRY_MIN,
                        retry_max: DEFAULT_RETRY_MAX,
                        max_retry_age: DEFAULT_MAX_RETRY_AGE,
                    }
                }
            }

            impl $ty {
                /// Queue, timeout and retries.
                pub fn delivery(&self) -> DeliveryConfig {
                    DeliveryConfig {
                        queue: self.queue.max(1),
                        timeout: self.timeout,
                        retry_min: self.retry_min,
                        retry_max: self.retry_max.max(self.retry_min),
                        max_retry_age: self.max_retry_age,
                    }
                }
            }
        )*
    };
}

receiver_tables! {
    /// One Alertmanager (`[[notify.alertmanager]]`): alerts go to `<url>/api/v2/alerts`.
    AlertmanagerConfig {
        /// Firing alerts are re-posted this often (Alertmanager expires alerts
        /// that are not re-posted).
        #[serde(with = "humantime_serde")]
        resend_interval: Duration = DEFAULT_RESEND_INTERVAL,
    }
    /// One webhook receiver (`[[notify.webhook]]`): a JSON POST per transition
    /// in Alertmanager's webhook payload shape, to `url` itself.
    WebhookConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_is_the_defaults() {
        let text = include_str!("../../docs/collector.example.toml");
        let config = CollectorConfig::from_toml(text).unwrap();
        assert_eq!(config, CollectorConfig::default());
        assert_eq!(config.store_config(), StoreConfig::default());
    }

    #[test]
    fn store_limits_come_from_the_top_level_only() {
        let err = CollectorConfig::from_toml("[store]\nmax_hosts = 5").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let config = CollectorConfig::from_toml("max_hosts = 5\nmax_batch_age = \"1h\"").unwrap();
        let store = config.store_config();
        assert_eq!(store.max_hosts, 5);
        assert_eq!(store.max_sample_age, Duration::from_secs(3600));
        assert_eq!(store.max_future_skew, DEFAULT_MAX_CLOCK_SKEW);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = CollectorConfig::from_toml("listne = \"1.2.3.4:1\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn rules_and_receivers_are_strict_and_shrinkable() {
        let err = CollectorConfig::from_toml("[rules.memory_leek]\nenabled = false").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = CollectorConfig::from_toml("[rules.fd_exhaustion]\nhihg = 0.5").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let config = CollectorConfig::from_toml(
            "[detect]\ninterval = \"200ms\"\n\
             [rules.memory_leak]\nwindow = \"10s\"\nfor = \"1s\"\nhosts = { env = \"prod\" }\n\
             [[notify.webhook]]\nurl = \"http://127.0.0.1:1/x\"\nretry_max = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(config.detect.interval, Duration::from_millis(200));
        let leak = config.rules.memory_leak.common();
        assert_eq!(leak.for_, Duration::from_secs(1));
        assert_eq!(leak.hosts.get("env").map(String::as_str), Some("prod"));
        assert_eq!(config.rules.memory_leak.window, Duration::from_secs(10));
        assert_eq!(
            config.notify.webhook[0].delivery().retry_max,
            Duration::from_secs(1)
        );
        let err =
            CollectorConfig::from_toml("[[notify.webhook]]\nurl = \"x\"\nresend_interval = \"1s\"")
                .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn non_loopback_needs_insecure_listen() {
        let mut config = CollectorConfig::from_toml("listen = \"0.0.0.0:7077\"").unwrap();
        assert!(matches!(
            config.check(),
            Err(ConfigError::InsecureListen(_))
        ));
        config.insecure_listen = true;
        assert!(config.check().is_ok());
    }
}
