//! The `Ingest` service: one bidirectional stream per agent.
//!
//! Protocol: the agent's first message is `Hello`; the collector answers
//! `Welcome` with the highest durable seq of that (host, run). Every `Batch` is
//! appended through the [`IngestPipeline`] and acknowledged with `Ack { seq }`
//! (the highest durable seq) once durable. Protocol violations end the stream
//! with a status; they never affect other streams.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::Stream;
use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::status;
use crate::hosts::HostRegistry;
use crate::ingest::{IngestPipeline, validate};

/// How long a stream waits for an agent to read its acknowledgements.
const ACK_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// `nodewatch.v1.Ingest`: appends through the pipeline, registers hosts in the registry.
#[derive(Debug, Clone)]
pub struct IngestService {
    pipeline: Arc<IngestPipeline>,
    registry: Arc<HostRegistry>,
    stopping: watch::Receiver<bool>,
    limits: StreamLimits,
}

/// Time limits of one ingest stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// A stream must say Hello within this.
    pub hello_timeout: Duration,
    /// A stream with no message for this long is closed.
    pub idle_timeout: Duration,
}

impl IngestService {
    /// A service appending through `pipeline` and registering hosts in
    /// `registry`; when `stopping` turns true every stream ends cleanly after
    /// its in-flight append.
    pub fn new(
        pipeline: Arc<IngestPipeline>,
        registry: Arc<HostRegistry>,
        stopping: watch::Receiver<bool>,
        limits: StreamLimits,
    ) -> Self {
        Self {
            pipeline,
            registry,
            stopping,
            limits,
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::CollectorMessage, Status>> + Send>>;

/// Replies queued per stream before the reader waits for the agent to read them.
const REPLY_QUEUE: usize = 64;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "in-process".to_string(), |a| a.to_string());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        let pipeline = self.pipeline.clone();
        let registry = self.registry.clone();
        let stopping = self.stopping.clone();
        let limits = self.limits;
        pipeline.counters.streams.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut session = StreamSession {
                pipeline,
                registry,
                peer,
                host_id: None,
                stopping,
                limits,
            };
            if let Err(status) = session.run(inbound, &tx).await {
                session
                    .pipeline
                    .counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    peer = %session.peer,
                    host = session.host_id.as_deref().unwrap_or("-"),
                    code = ?status.code(),
                    "ingest stream ended: {}",
                    status.message()
                );
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct StreamSession {
    pipeline: Arc<IngestPipeline>,
    registry: Arc<HostRegistry>,
    peer: String,
    host_id: Option<String>,
    stopping: watch::Receiver<bool>,
    limits: StreamLimits,
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        if let Some(host) = &self.host_id {
            self.registry.disconnect(host);
            info!(peer = %self.peer, host = %host, "agent disconnected");
        }
    }
}

impl StreamSession {
    async fn run(
        &mut self,
        mut inbound: Streaming<pb::AgentMessage>,
        tx: &mpsc::Sender<Result<pb::CollectorMessage, Status>>,
    ) -> Result<(), Status> {
        let first = tokio::time::timeout(self.limits.hello_timeout, next(&mut inbound))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no Hello within {:?}; closing the stream",
                    self.limits.hello_timeout
                ))
            })??;
        let hello = match first {
            None => return Ok(()),
            Some(AgentKind::Hello(hello)) => hello,
            Some(AgentKind::Batch(b)) => {
                return Err(Status::failed_precondition(format!(
                    "expected Hello as the first message of the stream, got Batch (seq {})",
                    b.seq
                )));
            }
        };
        validate::hello(&hello).map_err(|e| Status::invalid_argument(format!("bad Hello: {e}")))?;
        let host_id = hello
            .host
            .as_ref()
            .map(|h| h.host_id.clone())
            .unwrap_or_default();
        let run_id = hello.run_id;
        self.registry
            .connect(&hello)
            .map_err(|e| status::state(&e))?;
        self.host_id = Some(host_id.clone());
        self.pipeline
            .put_host(&hello)
            .await
            .map_err(|e| status::store(&e))?;
        self.pipeline
            .settle_below(&host_id, run_id, hello.first_seq);
        let durable_seq = self.pipeline.durable_seq(&host_id, run_id);
        info!(
            peer = %self.peer,
            host = %host_id,
            hostname = hello.host.as_ref().map_or("", |h| h.hostname.as_str()),
            agent_version = %hello.agent_version,
            run_id,
            durable_seq,
            "agent connected"
        );
        send(
            tx,
            CollectorKind::Welcome(pb::Welcome {
                collector_version: env!("CARGO_PKG_VERSION").to_string(),
                durable_seq,
            }),
        )
        .await?;

        loop {
            // Between messages only: an append in flight always completes.
            let kind = tokio::select! {
                biased;
                _ = self.stopping.wait_for(|stop| *stop) => {
                    debug!(peer = %self.peer, host = %host_id, "collector stopping: stream ended");
                    return Ok(());
                }
                kind = tokio::time::timeout(self.limits.idle_timeout, next(&mut inbound)) => {
                    kind.map_err(|_| {
                        Status::deadline_exceeded(format!(
                            "no message for {:?}; closing the stream",
                            self.limits.idle_timeout
                        ))
                    })??
                }
            };
            let Some(kind) = kind else { break };
            match kind {
                AgentKind::Hello(_) => {
                    return Err(Status::failed_precondition(
                        "Hello already received on this stream; open a new stream to introduce again",
                    ));
                }
                AgentKind::Batch(batch) => {
                    let seq = batch.seq;
                    let outcome = self
                        .pipeline
                        .append(&host_id, run_id, batch)
                        .await
                        .map_err(|e| status::ingest(&e))?;
                    debug!(host = %host_id, seq, ?outcome, "batch");
                    let acked = self.pipeline.durable_seq(&host_id, run_id);
                    send(
                        tx,
                        CollectorKind::Ack(pb::Ack {
                            seq: acked,
                            batch_seq: seq,
                        }),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

async fn next(inbound: &mut Streaming<pb::AgentMessage>) -> Result<Option<AgentKind>, Status> {
    match inbound.message().await {
        Ok(None) => Ok(None),
        Ok(Some(pb::AgentMessage { kind: Some(kind) })) => Ok(Some(kind)),
        Ok(Some(pb::AgentMessage { kind: None })) => Err(Status::invalid_argument(
            "empty AgentMessage: set hello or batch",
        )),
        // Decode errors, oversized messages and transport errors surface here.
        Err(status) => Err(status),
    }
}

async fn send(
    tx: &mpsc::Sender<Result<pb::CollectorMessage, Status>>,
    kind: CollectorKind,
) -> Result<(), Status> {
    // A full queue means the agent does not read its acks: wait a bounded time.
    match tokio::time::timeout(
        ACK_SEND_TIMEOUT,
        tx.send(Ok(pb::CollectorMessage { kind: Some(kind) })),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Status::cancelled("agent went away")),
        Err(_) => Err(Status::deadline_exceeded(
            "agent did not read its acknowledgements for 30 s",
        )),
    }
}
