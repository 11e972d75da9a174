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
/// Default spool directory.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/nodewatch-agent/spool";
/// Default cap of the spool's segment files, bytes: 4 GiB.
///
/// Measured (`cargo xtask bench outage`, docs/BENCHMARKS.md "outage"): the
/// release agent at the default cadences, eBPF on, on a host with ~1,080
/// processes spools 56.6 MB (53.9 MiB) per hour, 1.3 GiB per 24 h; 4 GiB holds
/// ~76 h at that rate, room for busier hosts (more processes, sockets and
/// cgroups make bigger batches) to still keep >= 24 h.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Smallest spool cap accepted, bytes.
const MIN_SPOOL_MAX_BYTES: u64 = 1024 * 1024;

/// Limits of the collector on what a Hello carries, shared with it: checked
/// at start-up, so a refused Hello is a configuration error with a clear
/// message rather than an agent retrying forever.
pub use nodewatch_proto::hello_limits;

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
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] nodewatch_proto::daemon::ConfigFileError),
    /// A value is out of range.
    #[error("invalid setting {0}: {1}")]
    Invalid(&'static str, String),
    /// What the agent would send in its Hello breaks the collector's limits.
    #[error("the collector would refuse this agent's Hello: {0}")]
    Hello(String),
}

/// Checks a host id against the collector's rule: 1..=64 characters of
/// `[0-9A-Za-z._-]`.
pub fn check_host_id(id: &str) -> Result<(), ConfigError> {
    if hello_limits::valid_host_id(id) {
        Ok(())
    } else {
        Err(ConfigError::Hello(format!(
            "host id {:?} must be 1..={} characters of [0-9A-Za-z._-] (set host_id / --host-id)",
            id.chars().take(80).collect::<String>(),
            hello_limits::MAX_HOST_ID_BYTES
        )))
    }
}

/// Checks the identity strings the Hello carries (host id, hostname, kernel,
/// OS, agent version) against the collector's limits.
pub fn check_identity(identity: &nodewatch_proto::pb::HostIdentity) -> Result<(), ConfigError> {
    check_host_id(&identity.host_id)?;
    for (field, value) in [
        ("hostname", &identity.hostname),
        ("kernel", &identity.kernel),
        ("os", &identity.os),
        ("agent version", &env!("CARGO_PKG_VERSION").to_string()),
    ] {
        if value.len() > hello_limits::MAX_STRING_BYTES {
            return Err(ConfigError::Hello(format!(
                "{field} is {} bytes, at most {} allowed",
                value.len(),
                hello_limits::MAX_STRING_BYTES
            )));
        }
    }
    Ok(())
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
    /// Most unacknowledged batches kept in memory while the collector is away,
    /// bytes; used only without a spool (`spool_dir = ""`).
    pub outbox_bytes: usize,
    /// Directory of the disk spool, which keeps unacknowledged batches (and the
    /// run id and seqs) across collector outages and agent restarts; "" keeps
    /// batches in memory only (`outbox_bytes`), lost when the agent stops.
    pub spool_dir: PathBuf,
    /// Most bytes of spool segment files; beyond it the oldest segment is
    /// dropped and its batches counted as dropped.
    pub spool_max_bytes: u64,
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
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
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
        Ok(nodewatch_proto::daemon::load_toml(path)?)
    }

    /// The spool directory, `None` when the spool is off (`spool_dir = ""`).
    pub fn spool_dir(&self) -> Option<&Path> {
        (!self.spool_dir.as_os_str().is_empty()).then_some(self.spool_dir.as_path())
    }

    /// Checks ranges, and that the collector would accept this agent's Hello
    /// (host id, labels).
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
        if self.spool_dir().is_some() && self.spool_max_bytes < MIN_SPOOL_MAX_BYTES {
            return Err(ConfigError::Invalid(
                "spool_max_bytes",
                format!("must be at least {MIN_SPOOL_MAX_BYTES}"),
            ));
        }
        if let Some(id) = &self.host_id {
            check_host_id(id)?;
        }
        if self.labels.len() > hello_limits::MAX_LABELS {
            return Err(ConfigError::Hello(format!(
                "{} labels, at most {} allowed",
                self.labels.len(),
                hello_limits::MAX_LABELS
            )));
        }
        let max = hello_limits::MAX_STRING_BYTES;
        if let Some((k, _)) = self
            .labels
            .iter()
            .find(|(k, v)| k.len() > max || v.len() > max)
        {
            return Err(ConfigError::Hello(format!(
                "label {:?}: keys and values are at most {max} bytes",
                k.chars().take(40).collect::<String>()
            )));
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

    #[test]
    fn hello_limits_match_the_collector() {
        let mut config = AgentConfig {
            host_id: Some("web-01.example_A".into()),
            ..Default::default()
        };
        config.check().unwrap();
        for bad in ["", "ab/../cd", "with space", &"x".repeat(65)] {
            config.host_id = Some(bad.to_string());
            let err = config.check().unwrap_err().to_string();
            assert!(err.contains("host id"), "{err}");
        }
        config.host_id = Some("x".repeat(64));
        config.check().unwrap();
        for i in 0..=hello_limits::MAX_LABELS {
            config.labels.insert(format!("k{i}"), "v".into());
        }
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("65 labels")
        );
        config.labels.clear();
        config.labels.insert("k".into(), "v".repeat(257));
        assert!(config.check().is_err());
        config.labels.insert("k".into(), "v".repeat(256));
        config.check().unwrap();
        let mut identity = nodewatch_proto::pb::HostIdentity {
            host_id: "abc".into(),
            hostname: "h".repeat(256),
            ..Default::default()
        };
        check_identity(&identity).unwrap();
        identity.hostname.push('h');
        assert!(
            check_identity(&identity)
                .unwrap_err()
                .to_string()
                .contains("hostname")
        );
    }

    #[test]
    fn empty_spool_dir_turns_the_spool_off() {
        let config: AgentConfig = toml::from_str("spool_dir = \"\"").unwrap();
        assert!(config.spool_dir().is_none());
        assert_eq!(
            AgentConfig::default().spool_dir(),
            Some(Path::new(DEFAULT_SPOOL_DIR))
        );
        let config: AgentConfig = toml::from_str("spool_max_bytes = 1000").unwrap();
        assert!(config.check().is_err());
    }
}
