//! Client side of the `nodewatch` CLI: connecting, rendering tables and JSON.
//!
//! Each command lives in its own module and exposes `run(client, args, output)`.

pub mod conns;
pub mod disks;
pub mod hosts;
pub mod latency;
pub mod series;
pub mod top;

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewatch_proto::pb;
use tonic::transport::{Channel, Endpoint};

/// Output format of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts (one document on stdout).
    Json,
}

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The collector address is not a valid URI.
    #[error("invalid collector address {0:?}: {1}")]
    BadAddress(String, String),
    /// The collector could not be reached.
    #[error(
        "cannot reach the collector at {0}: {1}\n\
         is nodewatch-collector running there? (set --collector or NODEWATCH_COLLECTOR)"
    )]
    Unreachable(String, String),
    /// The collector answered with an error.
    #[error("{}", status_message(.0))]
    Status(#[from] tonic::Status),
    /// Output could not be written or encoded.
    #[error("cannot write output: {0}")]
    Output(String),
}

fn status_message(status: &tonic::Status) -> String {
    use tonic::Code;
    match status.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
            status.message().to_string()
        }
        Code::Unavailable => format!("collector unavailable: {}", status.message()),
        Code::Unimplemented => format!(
            "the collector does not support this query (older version?): {}",
            status.message()
        ),
        code => format!("collector error ({code:?}): {}", status.message()),
    }
}

/// Normalises a collector address: `host:port` becomes `http://host:port`.
pub fn collector_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Connects to the collector, failing fast with a clear error.
pub async fn connect(addr: &str) -> Result<Channel, CliError> {
    let uri = collector_uri(addr);
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| CliError::BadAddress(addr.to_string(), e.to_string()))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    endpoint
        .connect()
        .await
        .map_err(|e| CliError::Unreachable(uri, nodewatch_proto::daemon::root_cause(&e)))
}

/// A query client on `channel` with the project's message size limit.
pub fn query_client(channel: Channel) -> pb::query_client::QueryClient<Channel> {
    pb::query_client::QueryClient::new(channel)
        .max_decoding_message_size(nodewatch_proto::MAX_MESSAGE_BYTES)
}

/// One host's summary and latest snapshot (`Query.GetHost`).
pub async fn get_host(
    channel: Channel,
    host: &str,
) -> Result<(pb::HostSummary, pb::Batch), CliError> {
    let response = query_client(channel)
        .get_host(pb::GetHostRequest {
            host: host.to_string(),
        })
        .await?
        .into_inner();
    Ok((
        response.summary.unwrap_or_default(),
        response.latest.unwrap_or_default(),
    ))
}

/// Prints a JSON value to stdout.
pub fn print_json(value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// A table of left-aligned text columns (numbers right-aligned).
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(headers: I) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank.
    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let numeric: Vec<bool> = (0..cols)
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        r.get(i).is_none_or(|c| {
                            c.is_empty()
                                || c == "-"
                                || c.chars().next().is_some_and(|ch| ch.is_ascii_digit())
                        })
                    })
            })
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let mut text = String::new();
            for i in 0..cols {
                let cell = cells.get(i).map_or("", String::as_str);
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    text.push_str("  ");
                }
                if numeric[i] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    if i + 1 < cols {
                        text.push_str(&" ".repeat(pad));
                    }
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&mut out, &self.headers);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

/// Human-readable bytes in binary units, e.g. "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A ratio 0..1 as a percentage, e.g. "42.0%".
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// How long ago a Unix-nanosecond time was, e.g. "3s ago"; "never" for 0.
pub fn ago(unix_nano: i64) -> String {
    if unix_nano <= 0 {
        return "never".to_string();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let secs = (now - unix_nano).max(0) / 1_000_000_000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Short lowercase name of a feature state for JSON output.
pub fn state_name(state: i32) -> &'static str {
    match pb::FeatureState::try_from(state).unwrap_or_default() {
        pb::FeatureState::Active => "active",
        pb::FeatureState::Disabled => "disabled",
        pb::FeatureState::Unavailable => "unavailable",
        pb::FeatureState::Unspecified => "unknown",
    }
}

/// Display name of a feature state.
pub fn feature_state(status: Option<&pb::FeatureStatus>) -> String {
    let Some(status) = status else {
        return "unknown".to_string();
    };
    match pb::FeatureState::try_from(status.state).unwrap_or_default() {
        pb::FeatureState::Active => "active".to_string(),
        pb::FeatureState::Disabled => "disabled".to_string(),
        pb::FeatureState::Unavailable => format!("unavailable ({})", status.reason),
        pb::FeatureState::Unspecified => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_text_left_and_numbers_right() {
        let mut t = Table::new(["NAME", "RSS"]);
        t.row(["a", "10"]);
        t.row(["longer", "2000"]);
        assert_eq!(t.render(), "NAME     RSS\na         10\nlonger  2000\n");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(percent(0.4242), "42.4%");
        assert_eq!(collector_uri("127.0.0.1:7077"), "http://127.0.0.1:7077");
        assert_eq!(collector_uri("https://c:1"), "https://c:1");
    }
}
