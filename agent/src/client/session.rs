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

    // Live data first: batches pushed from now on go out as they come; the
    // backlog (everything up to `backlog_end` the collector does not hold)
    // follows behind them whenever the stream has room. The collector takes a
    // run's batches in any order and stores each once.
    let mut backlog = Backlog::new(welcome.durable_seq.max(stats.acked), stats.newest);
    let mut live_sent = stats.newest;
    // Highest seq the collector can have from us: an Ack beyond it is not
    // from our collector (or a broken one), and trusting it would free
    // batches never delivered.
    let mut max_sent = welcome.durable_seq.max(stats.acked).max(stats.newest);
    loop {
        tokio::select! {
            biased;
            message = inbound.message() => match message {
                Ok(Some(pb::CollectorMessage { kind: Some(CollectorKind::Ack(ack)) })) => {
                    if ack.seq > max_sent || ack.batch_seq > max_sent {
                        return Err(SessionError::Protocol(format!(
                            "acknowledgement of seq {} (batch {}) never sent (highest sent {max_sent})",
                            ack.seq, ack.batch_seq
                        )));
                    }
                    outbox.ack(ack.seq);
                }
                Ok(Some(other)) => {
                    return Err(SessionError::Protocol(format!("unexpected message {other:?}")));
                }
                Ok(None) => return Err(SessionError::Closed),
                Err(status) => {
                    // The collector names a batch it refuses for good
                    // (invalid content): drop it, or it would be resent
                    // forever and block everything after it.
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
            batch = outbox.wait_after(live_sent) => {
                let seq = batch.seq;
                if tx.send(pb::AgentMessage { kind: Some(AgentKind::Batch(batch)) }).await.is_err() {
                    return Err(SessionError::Closed);
                }
                live_sent = seq;
                max_sent = max_sent.max(seq);
            }
            permit = tx.reserve(), if backlog.pending() => {
                let Ok(permit) = permit else {
                    return Err(SessionError::Closed);
                };
                match outbox.next_after(backlog.sent).filter(|b| b.seq <= backlog.end) {
                    Some(batch) => {
                        max_sent = max_sent.max(batch.seq);
                        backlog.sent_one(batch.seq);
                        permit.send(pb::AgentMessage { kind: Some(AgentKind::Batch(batch)) });
                    }
                    None => backlog.finish(),
                }
            }
        }
    }
}

/// Progress of replaying what the agent kept while the collector was away.
struct Backlog {
    /// Highest seq of the backlog (pushed before this session).
    end: u64,
    /// Highest backlog seq sent.
    sent: u64,
    started: std::time::Instant,
    first: u64,
    last_report: std::time::Instant,
    done: bool,
}

/// How often a long replay reports its progress.
const BACKLOG_REPORT: Duration = Duration::from_secs(10);

impl Backlog {
    fn new(settled: u64, end: u64) -> Self {
        let now = std::time::Instant::now();
        let done = settled >= end;
        if !done {
            info!(
                batches = end - settled,
                "replaying the backlog behind live data"
            );
        }
        Self {
            end,
            sent: settled,
            started: now,
            first: settled,
            last_report: now,
            done,
        }
    }

    fn pending(&self) -> bool {
        !self.done
    }

    fn sent_one(&mut self, seq: u64) {
        self.sent = seq;
        if self.last_report.elapsed() >= BACKLOG_REPORT {
            self.last_report = std::time::Instant::now();
            let rate = (seq - self.first) as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            info!(
                left = self.end.saturating_sub(seq),
                batches_per_second = rate.round() as u64,
                "replaying the backlog"
            );
        }
        if seq >= self.end {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            let secs = self.started.elapsed().as_secs_f64();
            info!(
                batches = self.sent.saturating_sub(self.first),
                seconds = format!("{secs:.2}"),
                "backlog replayed"
            );
        }
    }
}
