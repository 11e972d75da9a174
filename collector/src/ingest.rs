//! The `Ingest` service: one bidirectional stream per agent.
//!
//! Protocol: the agent's first message is `Hello`; the collector answers
//! `Welcome` with the highest durable seq of that (host, run). Every `Batch` is
//! validated, appended (idempotently, by (host, run, seq)) and acknowledged with
//! `Ack { seq }` once durable. Protocol violations end the stream with a status;
//! they never affect other streams.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::Stream;
use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::state::{HostRegistry, StateError};
use crate::validate::{self, ValidationLimits};

/// Counters of what the ingest path accepted and refused.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Streams opened.
    pub streams: AtomicU64,
    /// Batches stored.
    pub batches_stored: AtomicU64,
    /// Batches received again and ignored (already durable).
    pub batches_duplicate: AtomicU64,
    /// Batches rejected as invalid.
    pub batches_rejected: AtomicU64,
    /// Streams ended for a protocol violation.
    pub protocol_errors: AtomicU64,
}

/// What happened to an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored now.
    Stored,
    /// Already stored earlier; nothing done.
    Duplicate,
}

/// Highest durable seq per (host, run). In-memory: idempotent for the
/// collector's lifetime.
#[derive(Debug, Default)]
struct RunLedger {
    runs: Mutex<HashMap<(String, u64), u64>>,
}

/// Most (host, run) pairs remembered by the in-memory ledger.
const MAX_LEDGER_RUNS: usize = 100_000;

impl RunLedger {
    fn durable_seq(&self, host: &str, run: u64) -> u64 {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(&(host.to_string(), run)).copied().unwrap_or(0)
    }

    fn advance(&self, host: &str, run: u64, seq: u64) -> Appended {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.len() >= MAX_LEDGER_RUNS && !runs.contains_key(&(host.to_string(), run)) {
            // Forget the oldest-looking runs: lowest seq first is a fair proxy.
            if let Some(key) = runs.iter().min_by_key(|(_, s)| **s).map(|(k, _)| k.clone()) {
                runs.remove(&key);
            }
        }
        let entry = runs.entry((host.to_string(), run)).or_insert(0);
        if seq <= *entry {
            Appended::Duplicate
        } else {
            *entry = seq;
            Appended::Stored
        }
    }
}

/// Shared state of the ingest path.
#[derive(Debug)]
pub struct IngestPipeline {
    registry: Arc<HostRegistry>,
    ledger: RunLedger,
    /// Durable storage; without it batches are kept in memory only.
    store: Option<Arc<crate::store::Store>>,
    limits: ValidationLimits,
    /// What the ingest path accepted and refused.
    pub counters: IngestCounters,
}

impl IngestPipeline {
    /// A pipeline feeding `registry`.
    pub fn new(registry: Arc<HostRegistry>, limits: ValidationLimits) -> Self {
        Self {
            registry,
            ledger: RunLedger::default(),
            store: None,
            limits,
            counters: IngestCounters::default(),
        }
    }

    /// Stores batches durably in `store` (de-duplication and durable seqs come from it).
    pub fn with_store(mut self, store: Arc<crate::store::Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Highest durable seq of (host, run).
    pub fn durable_seq(&self, host_id: &str, run_id: u64) -> u64 {
        match &self.store {
            Some(store) => store.durable_seq(host_id, run_id),
            None => self.ledger.durable_seq(host_id, run_id),
        }
    }

    /// Records an agent's Hello durably (when a store is configured).
    pub async fn put_host(&self, hello: &pb::Hello) -> Result<(), Status> {
        match &self.store {
            Some(store) => store
                .put_host(hello)
                .await
                .map_err(|e| crate::series_query::store_status(&e)),
            None => Ok(()),
        }
    }

    /// Validates and stores one batch of `host_id`'s run `run_id`.
    pub async fn append(
        &self,
        host_id: &str,
        run_id: u64,
        batch: pb::Batch,
    ) -> Result<Appended, Status> {
        if let Err(e) = validate::batch(&batch, &self.limits, SystemTime::now()) {
            self.counters
                .batches_rejected
                .fetch_add(1, Ordering::Relaxed);
            let mut status = Status::invalid_argument(format!("batch {} rejected: {e}", batch.seq));
            if let Ok(value) = batch.seq.to_string().parse() {
                status
                    .metadata_mut()
                    .insert(nodewatch_proto::REJECTED_SEQ_METADATA, value);
            }
            return Err(status);
        }
        let outcome = match &self.store {
            Some(store) => match store.append(host_id, run_id, &batch).await.map_err(|e| {
                self.counters
                    .batches_rejected
                    .fetch_add(1, Ordering::Relaxed);
                let mut status = crate::series_query::store_status(&e);
                // Only a refusal of this batch's content is final; I/O
                // trouble must be retried by the agent, never dropped.
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
                ) && let Ok(value) = batch.seq.to_string().parse()
                {
                    status
                        .metadata_mut()
                        .insert(nodewatch_proto::REJECTED_SEQ_METADATA, value);
                }
                status
            })? {
                crate::store::Appended::Stored => Appended::Stored,
                crate::store::Appended::Duplicate => Appended::Duplicate,
            },
            None => self.ledger.advance(host_id, run_id, batch.seq),
        };
        match outcome {
            Appended::Stored => {
                self.counters.batches_stored.fetch_add(1, Ordering::Relaxed);
                self.registry.apply(host_id, batch, SystemTime::now());
            }
            Appended::Duplicate => {
                self.counters
                    .batches_duplicate
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(outcome)
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct IngestService {
    pipeline: Arc<IngestPipeline>,
    registry: Arc<HostRegistry>,
}

impl IngestService {
    /// A service appending through `pipeline` and registering hosts in `registry`.
    pub fn new(pipeline: Arc<IngestPipeline>, registry: Arc<HostRegistry>) -> Self {
        Self { pipeline, registry }
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
        pipeline.counters.streams.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut session = StreamSession {
                pipeline,
                registry,
                peer,
                host_id: None,
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
        let hello = match next(&mut inbound).await? {
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
        self.registry.connect(&hello).map_err(|e| match e {
            StateError::TooManyHosts(_) => Status::resource_exhausted(e.to_string()),
        })?;
        self.host_id = Some(host_id.clone());
        self.pipeline.put_host(&hello).await?;
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

        while let Some(kind) = next(&mut inbound).await? {
            match kind {
                AgentKind::Hello(_) => {
                    return Err(Status::failed_precondition(
                        "Hello already received on this stream; open a new stream to introduce again",
                    ));
                }
                AgentKind::Batch(batch) => {
                    let seq = batch.seq;
                    let outcome = self.pipeline.append(&host_id, run_id, batch).await?;
                    debug!(host = %host_id, seq, ?outcome, "batch");
                    let acked = self.pipeline.durable_seq(&host_id, run_id);
                    send(tx, CollectorKind::Ack(pb::Ack { seq: acked })).await?;
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
        Duration::from_secs(30),
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
