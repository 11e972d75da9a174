//! Agent configuration: defaults, then the TOML file, then flags and
//! `NODEWATCH_*` environment variables (flags and env win).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ebpf::EbpfConfig;
use crate::samplers::config::SamplersConfig;

/// Default sampling interval of the host-wide samplers.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest sampling interval accepted.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Default bound of unacknowledged batches kept in memory, bytes.
pub(crate) const DEFAULT_OUTBOX_BYTES: usize = 64 * 1024 * 1024;

/// The collector URI for an address: as given when it names a scheme
/// ("https://..."), else plaintext `http://<addr>`.
pub fn collector_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid setting {0}: {1}")]
    Invalid(&'static str, String),
}

/// Default first reconnect delay after a failure.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(200);
/// Default longest reconnect delay: a returning collector is noticed within
/// a few seconds (Prometheus remote-write caps its backoff at 5 s too), and the
/// jitter (each delay drawn from its upper half) spreads a fleet's reconnects.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Everything the agent can be configured with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Collector address, e.g. "http://127.0.0.1:7077".
    pub collector: String,
    /// Interval of the host-wide samplers (and of batches).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Host id to report instead of /etc/machine-id (containers without one, tests).
    pub host_id: Option<String>,
    /// Labels attached to this host, e.g. { env = "prod" }.
    pub labels: BTreeMap<String, String>,
    /// Most unacknowledged batches kept in memory while the collector is away, bytes.
    pub outbox_bytes: usize,
    /// First reconnect delay after a failure; doubles up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// eBPF syscall tracing.
    pub ebpf: EbpfConfig,
    /// /proc and /sys samplers.
    pub samplers: SamplersConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            // http://127.0.0.1:7077
            collector: collector_uri(nodewatch_proto::DEFAULT_COLLECTOR_ADDR),
            interval: DEFAULT_INTERVAL,
            host_id: None,
            labels: BTreeMap::new(),
            outbox_bytes: DEFAULT_OUTBOX_BYTES,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            ebpf: EbpfConfig::default(),
            samplers: SamplersConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks ranges.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.interval < MIN_INTERVAL {
            return Err(ConfigError::Invalid(
                "interval",
                format!(
                    "{:?} is below the minimum {:?}",
                    self.interval, MIN_INTERVAL
                ),
            ));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(ConfigError::Invalid(
                "reconnect_min",
                "must be > 0 and <= reconnect_max".to_string(),
            ));
        }
        if self.outbox_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid(
                "outbox_bytes",
                "must be at least 65536".to_string(),
            ));
        }
        Ok(())
    }
}

/// Parses a `key=value` label argument.
pub fn parse_label(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {arg:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_is_the_defaults() {
        let text = include_str!("../../docs/agent.example.toml");
        let config: AgentConfig = toml::from_str(text).unwrap();
        assert_eq!(config, AgentConfig::default());
        assert_eq!(config.collector, "http://127.0.0.1:7077");
        config.check().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_tiny_intervals() {
        assert!(toml::from_str::<AgentConfig>("colector = \"x\"").is_err());
        let config: AgentConfig = toml::from_str("interval = \"1ms\"").unwrap();
        assert!(config.check().is_err());
        assert_eq!(
            parse_label("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert!(parse_label("=x").is_err());
    }
}
