//! Collector configuration: defaults, then the TOML file, then flags and
//! `NODEWATCH_*` environment variables (flags and env win).

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
