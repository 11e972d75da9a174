//! One stream session with the collector over `Ingest.Stream`.

use std::time::Duration;

use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{error, info};

use crate::outbox::Outbox;

/// Why a stream to the collector ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The collector address is not a valid URI.
    #[error("invalid collector address {0:?}")]
    BadAddress(String),
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The collector ended the stream with a status.
    #[error("collector ended the stream: {code:?}: {message}")]
    Status {
        /// gRPC status code.
        code: tonic::Code,
        /// Status message.
        message: String,
    },
    /// The collector closed the stream.
    #[error("collector closed the stream")]
    Closed,
    /// The collector broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<tonic::Status> for SessionError {
    fn from(status: tonic::Status) -> Self {
        SessionError::Status {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// One stream session: connects, sends the Hello, waits for the Welcome
/// (whose `durable_seq` frees what the collector already holds), then sends
/// every batch after the last one sent while reading acks, until the stream
/// ends. `failures` (failed attempts in a row) is reset once connected.
pub(super) async fn session(
    uri: &str,
    hello: &(dyn Fn() -> pb::Hello + Send + Sync),
    outbox: &dyn Outbox,
    failures: &mut u32,
) -> Result<(), SessionError> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|_| SessionError::BadAddress(uri.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| SessionError::Connect(nodewatch_proto::daemon::root_cause(&e)))?;
    let mut client = pb::ingest_client::IngestClient::new(channel)
        .max_encoding_message_size(nodewatch_proto::MAX_MESSAGE_BYTES)
        .max_decoding_message_size(nodewatch_proto::MAX_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    let hello = hello();
    let _ = tx
        .send(pb::AgentMessage {
            kind: Some(AgentKind::Hello(hello)),
        })
        .await;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let welcome = match inbound.message().await? {
        Some(pb::CollectorMessage {
            kind: Some(CollectorKind::Welcome(w)),
        }) => w,
        Some(other) => {
            return Err(SessionError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
        None => return Err(SessionError::Closed),
    };
    outbox.ack(welcome.durable_seq);
    let stats = outbox.stats();
    if *failures > 0 {
        info!(
            collector = %uri,
            failed_attempts = *failures,
            backlog = stats.batches,
            "reconnected to collector; replaying kept batches"
        );
    } else {
        info!(collector = %uri, collector_version = %welcome.collector_version, "connected to collector");
    }
    *failures = 0;

    let mut last_sent = welcome.durable_seq.max(stats.acked);
    loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(pb::CollectorMessage { kind: Some(CollectorKind::Ack(ack)) })) => {
                    outbox.ack(ack.seq);
                }
                Ok(Some(other)) => {
                    return Err(SessionError::Protocol(format!("unexpected message {other:?}")));
                }
                Ok(None) => return Err(SessionError::Closed),
                Err(status) => {
                    // The collector names a batch it refuses for good
                    // (invalid content, series limit): drop it, or it would
                    // be resent forever and block everything after it.
                    if let Some(seq) = status
                            .metadata()
                            .get(nodewatch_proto::REJECTED_SEQ_METADATA)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                    {
                        error!(seq, "collector refused batch, dropping it: {}", status.message());
                        outbox.reject(seq);
                    }
                    return Err(status.into());
                }
            },
            batch = outbox.wait_after(last_sent) => {
                let seq = batch.seq;
                if tx.send(pb::AgentMessage { kind: Some(AgentKind::Batch(batch)) }).await.is_err() {
                    return Err(SessionError::Closed);
                }
                last_sent = seq;
            }
        }
    }
}
