//! The ingest path: a batch from an agent is validated, stored durably
//! (idempotently, by (host, run, seq)) and applied to the host registry.
//! The stream protocol around it lives in `grpc::ingest`.

pub mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nodewatch_proto::pb;

use crate::hosts::HostRegistry;
use crate::store::{Appended, Store, StoreError};
use validate::{ValidationError, ValidationLimits};

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

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch failed validation (final: resending it cannot help).
    #[error("batch {seq} rejected: {source}")]
    Invalid {
        /// The batch's seq.
        seq: u64,
        /// What is wrong with it.
        #[source]
        source: ValidationError,
    },
    /// The store refused or failed to store the batch.
    #[error("batch {seq}: {source}")]
    Store {
        /// The batch's seq.
        seq: u64,
        /// The store's reason.
        #[source]
        source: StoreError,
    },
}

/// Shared state of the ingest path.
#[derive(Debug)]
pub struct IngestPipeline {
    registry: Arc<HostRegistry>,
    store: Arc<Store>,
    limits: ValidationLimits,
    /// What the ingest path accepted and refused.
    pub counters: IngestCounters,
}

impl IngestPipeline {
    /// A pipeline storing into `store` and feeding `registry`.
    pub fn new(registry: Arc<HostRegistry>, store: Arc<Store>, limits: ValidationLimits) -> Self {
        Self {
            registry,
            store,
            limits,
            counters: IngestCounters::default(),
        }
    }

    /// Highest durable seq of (host, run).
    pub fn durable_seq(&self, host_id: &str, run_id: u64) -> u64 {
        self.store.durable_seq(host_id, run_id)
    }

    /// The agent of (host, run) will never send seqs below `first_seq`.
    pub fn settle_below(&self, host_id: &str, run_id: u64, first_seq: u64) {
        self.store.settle_below(host_id, run_id, first_seq);
    }

    /// Records an agent's Hello durably.
    pub async fn put_host(&self, hello: &pb::Hello) -> Result<(), StoreError> {
        self.store.put_host(hello).await
    }

    /// Validates and stores one batch of `host_id`'s run `run_id`; returns once
    /// it is durable (or known to be a duplicate).
    pub async fn append(
        &self,
        host_id: &str,
        run_id: u64,
        batch: pb::Batch,
    ) -> Result<Appended, IngestError> {
        let seq = batch.seq;
        let rejected = || {
            self.counters
                .batches_rejected
                .fetch_add(1, Ordering::Relaxed);
        };
        if let Err(source) = validate::batch(&batch, &self.limits, SystemTime::now()) {
            rejected();
            // Refused for good: the agent drops it, so it counts as settled.
            self.store.settle_seq(host_id, run_id, seq);
            return Err(IngestError::Invalid { seq, source });
        }
        let outcome = match self.store.append(host_id, run_id, &batch).await {
            Ok(outcome) => outcome,
            Err(source) => {
                rejected();
                if source.is_final() {
                    self.store.settle_seq(host_id, run_id, seq);
                }
                return Err(IngestError::Store { seq, source });
            }
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
