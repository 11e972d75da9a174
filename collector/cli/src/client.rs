//! The connection to the collector: address normalisation, a fast failure
//! with a clear message when it is unreachable, and readable status errors.

use std::time::Duration;

use nodewatch_proto::pb;
use tonic::transport::{Channel, Endpoint};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(collector_uri("127.0.0.1:7077"), "http://127.0.0.1:7077");
        assert_eq!(collector_uri("https://c:1"), "https://c:1");
    }
}
