//! Streams batches to the collector over `Ingest.Stream`, reconnecting with
//! exponential backoff and jitter. Batches stay in the [`Outbox`] until the
//! collector acknowledges them as durable, so a collector outage loses nothing
//! as long as the outbox bound holds.

use std::sync::Arc;
use std::time::Duration;

use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{debug, error, info, warn};

use crate::outbox::Outbox;

/// Why a stream to the collector ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
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

/// Reconnect policy.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay before attempt `failures` (1-based), with full jitter in [d/2, d].
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        let half = base / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }
}

/// Streams to one collector until `shutdown` turns true.
pub struct Client {
    /// Collector URI.
    pub uri: String,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Builds the Hello of each new stream (capabilities may change).
    pub hello: Box<dyn Fn() -> pb::Hello + Send + Sync>,
    /// Batches to send.
    pub outbox: Arc<Outbox>,
}

impl Client {
    /// Runs sessions back to back until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                r = self.session(&mut failures) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match result {
                Ok(()) => {}
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(collector = %self.uri, "collector unreachable: {e}; retrying with backoff, batches are kept meanwhile");
                    } else {
                        debug!(collector = %self.uri, failures, "still unreachable: {e}");
                    }
                }
            }
            let delay = self.backoff.delay(failures.max(1));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn session(&self, failures: &mut u32) -> Result<(), SessionError> {
        let endpoint = Endpoint::from_shared(self.uri.clone())
            .map_err(|_| SessionError::BadAddress(self.uri.clone()))?
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
        let hello = (self.hello)();
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
        self.outbox.ack(welcome.durable_seq);
        let stats = self.outbox.stats();
        if *failures > 0 {
            info!(
                collector = %self.uri,
                failed_attempts = *failures,
                backlog = stats.batches,
                "reconnected to collector; replaying kept batches"
            );
        } else {
            info!(collector = %self.uri, collector_version = %welcome.collector_version, "connected to collector");
        }
        *failures = 0;

        let mut last_sent = welcome.durable_seq.max(stats.acked);
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(pb::CollectorMessage { kind: Some(CollectorKind::Ack(ack)) })) => {
                        self.outbox.ack(ack.seq);
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
                            self.outbox.reject(seq);
                        }
                        return Err(status.into());
                    }
                },
                batch = self.outbox.wait_after(last_sent) => {
                    let seq = batch.seq;
                    if tx.send(pb::AgentMessage { kind: Some(AgentKind::Batch(batch)) }).await.is_err() {
                        return Err(SessionError::Closed);
                    }
                    last_sent = seq;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_max_with_jitter() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d4 = b.delay(4);
            assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800));
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_secs(1) && d30 <= Duration::from_secs(2));
        }
    }
}
