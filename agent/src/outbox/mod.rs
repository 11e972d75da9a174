//! Batches sampled but not yet acknowledged by the collector.
//!
//! Sampling never waits for the network: the sampling loop pushes every batch
//! into an [`Outbox`]; the client sends from it and frees batches once the
//! collector acknowledges them as durable. [`memory::MemoryOutbox`] keeps them
//! in memory, bounded by encoded size; [`spool::SpoolOutbox`] keeps them in
//! segment files on disk, across agent restarts.

pub mod memory;
pub mod spool;

use std::path::PathBuf;

use futures::future::BoxFuture;
use nodewatch_proto::pb;

/// What the outbox holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Batches waiting for an acknowledgement.
    pub batches: usize,
    /// Their encoded size.
    pub bytes: usize,
    /// Batches dropped: the outbox was full, the collector refused them, or
    /// (spool) their records were damaged. The spool counts since it was created.
    pub dropped: u64,
    /// Highest seq done with (acknowledged, or dropped as the oldest).
    pub acked: u64,
    /// Highest seq pushed (0 before any).
    pub newest: u64,
}

/// Why an outbox could not make its contents durable.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// fdatasync of the active spool segment failed.
    #[error("cannot sync the spool segment in {path}")]
    Sync {
        /// The spool directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the spool ledger failed.
    #[error("cannot write the spool ledger in {path}")]
    Ledger {
        /// The spool directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where batches wait for the collector's acknowledgement, oldest first.
/// Batches are identified by their `seq`, which only grows.
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// Adds a batch; returns how many old batches were dropped to make room.
    fn push(&self, batch: pb::Batch) -> u64;
    /// Frees every batch with seq <= `seq` (the collector holds them durably).
    fn ack(&self, seq: u64);
    /// Drops the batch `seq` (the collector refused it as invalid); counted as dropped.
    fn reject(&self, seq: u64);
    /// The oldest batch with seq > `after`, if any.
    fn next_after(&self, after: u64) -> Option<pb::Batch>;
    /// Woken on every push.
    fn pushed(&self) -> &tokio::sync::Notify;
    /// Waits for the next batch with seq > `after`.
    fn wait_after(&self, after: u64) -> BoxFuture<'_, pb::Batch> {
        Box::pin(async move {
            loop {
                // Registered before looking, so a push in between still wakes us.
                let notified = self.pushed().notified();
                if let Some(batch) = self.next_after(after) {
                    return batch;
                }
                notified.await;
            }
        })
    }
    /// Current contents.
    fn stats(&self) -> OutboxStats;
    /// Makes everything pushed so far durable (the spool fsyncs; memory has
    /// nothing to do). Called on shutdown.
    fn sync(&self) -> Result<(), OutboxError> {
        Ok(())
    }
}
