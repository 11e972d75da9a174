//! The disk spool: unacknowledged batches in numbered segment files under
//! `spool_dir`, so that neither a collector outage nor an agent restart
//! (graceful or `kill -9`) loses them.
//!
//! Parts (after Vector's `disk_v2` buffer):
//! - [`segment`]: segment files and their framing (`len | crc32 | Batch`), and
//!   the reader that resyncs past damage;
//! - [`ledger`]: [`SpoolLedger`], the persisted state (host, run id, acked seq,
//!   dropped count), replaced atomically;
//! - `writer.rs`: appends, rotation, the size cap, syncing and deleting
//!   acknowledged segments; `reader.rs`: the next batch to send, from memory or
//!   from disk; `recovery.rs`: opening a spool directory.
//!
//! # Delivery guarantee
//!
//! - A pushed batch is written to the active segment with one `write(2)`
//!   before `push` returns: it survives a crash of the agent itself
//!   (`kill -9`, a panic), because the data is in the kernel's page cache.
//! - Segment data is `fdatasync`ed at most once per second (on the first push
//!   at least a second after the previous sync), on rotation and on shutdown
//!   ([`Outbox::sync`]): a power loss or kernel crash loses at most the batches
//!   pushed since the last sync, about one interval's worth at the defaults.
//! - The ledger is written when the spool is opened, before acknowledged
//!   segments are deleted, within a second of a new drop, at least every 10 s
//!   while acknowledgements arrive, and on shutdown.
//! - The run id and seqs persist in the ledger: after a restart the agent
//!   sends under the same run id, continues the seqs after the highest spooled
//!   one and resends every batch not acknowledged; the collector de-duplicates
//!   by (host, run id, seq), so what was stored before is stored once.
//! - Batches are lost only when counted in `dropped`: the oldest segment is
//!   deleted when the spool would exceed `spool_max_bytes`, a batch the
//!   collector refuses for good is dropped, and a damaged record is skipped
//!   (the intact records before and after it are kept).
//! - A damaged or missing ledger (with segments present) starts a new run id:
//!   without the ledger the spool cannot prove which run the segments' seqs
//!   belong to. The spooled batches are kept and sent again under the new run
//!   id, each exactly once; batches of them the collector already held under
//!   the old run id are older than the host's newest sample there, which the
//!   collector's store records as delivered without adding samples.
//! - Each host id has its own spool, `host-<host id>` in the spool directory:
//!   an agent started with a different `--host-id` starts a fresh spool (new
//!   run id) and never sends one host's batches as another's. A ledger naming
//!   another host (a directory copied or renamed by hand) is discarded with
//!   its segments, for the same reason.
//!
//! # Memory
//!
//! Recent batches are also kept encoded in memory (at most
//! [`SpoolConfig::memory_bytes`], 8 MiB by default), so the live path sends
//! without reading the disk; older ones (a backlog) are read from their
//! segment in order through a 256 KiB read-ahead window. Per segment the spool
//! keeps its size and its seqs as runs, a few dozen bytes.

pub mod ledger;
mod reader;
mod recovery;
pub mod segment;
mod summary;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nodewatch_proto::pb;
use tokio::sync::Notify;

pub use self::ledger::{LedgerError, SpoolLedger};
use self::segment::SegmentReader;
use self::summary::SegmentSummary;
use super::{Outbox, OutboxError, OutboxStats};

/// Default bound of the recent batches kept in memory, bytes.
pub const DEFAULT_MEMORY_BYTES: usize = 8 * 1024 * 1024;
/// Largest segment file before rotating to a new one, bytes.
pub const MAX_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Smallest segment size (tiny caps still rotate).
const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// Longest time pushed data stays without an fsync while pushes keep coming.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Longest time the ledger's acked seq lags behind while pushes keep coming
/// (it is also written before segments are deleted and on shutdown).
pub const LEDGER_EVERY: Duration = Duration::from_secs(10);

/// Where and how large the spool is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool directory (created if missing); each host id has its own
    /// spool in `host-<host id>` below it, so agents of different host ids
    /// never share one and a changed host id starts a fresh spool.
    pub dir: PathBuf,
    /// Most bytes of segment files; the oldest segment is dropped beyond it.
    pub max_bytes: u64,
    /// Rotate segments at this size.
    pub segment_bytes: u64,
    /// Most bytes of encoded recent batches also kept in memory.
    pub memory_bytes: usize,
}

impl SpoolConfig {
    /// A spool in `dir` capped at `max_bytes`: segments of an eighth of the cap
    /// (64 KiB to 8 MiB), so dropping the oldest frees a bounded share.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// Why the spool could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory cannot be created or used.
    #[error(
        "spool directory {path} is not usable ({what}: {source}); fix its permissions, point spool_dir (--spool-dir) at a writable directory, or set spool_dir = \"\" (--no-spool) to keep batches in memory only"
    )]
    Unusable {
        /// The spool directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The spool path exists and is not a directory.
    #[error(
        "spool directory {0} exists and is not a directory; remove it, point spool_dir (--spool-dir) elsewhere, or set spool_dir = \"\" (--no-spool)"
    )]
    NotADirectory(PathBuf),
    /// Another agent holds the spool.
    #[error(
        "spool directory {0} is in use by another nodewatch-agent; stop it or give this agent its own spool_dir (--spool-dir)"
    )]
    Locked(PathBuf),
}

/// Where an opened spool resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolStart {
    /// The run id to send under (kept from the ledger, or new).
    pub run_id: u64,
    /// The seq of the next batch (after every seq ever spooled or acknowledged).
    pub next_seq: u64,
    /// Unacknowledged batches found in the spool (to be resent).
    pub unacked: u64,
    /// True when the run id was kept from the ledger.
    pub resumed: bool,
    /// This host's spool directory: `host-<host id>` in the spool directory.
    pub dir: PathBuf,
}

/// A recent batch kept in memory, encoded.
#[derive(Debug)]
struct CachedRecord {
    seq: u64,
    payload: Vec<u8>,
    /// False when writing it to its segment failed: memory is its only copy.
    on_disk: bool,
}

/// Where the disk reader stopped: just after the record `seq` of `segment`.
#[derive(Debug)]
struct ReadCursor {
    segment: u64,
    pos: u64,
    seq: u64,
    reader: SegmentReader,
}

/// Everything behind the spool's lock.
#[derive(Debug)]
struct SpoolState {
    config: SpoolConfig,
    /// The ledger as last written to disk.
    ledger: SpoolLedger,
    /// When the ledger was last written.
    ledger_written: Instant,
    /// Highest seq done with: acknowledged by the collector, or dropped with
    /// the oldest segment (may be ahead of `ledger.acked_seq`).
    acked: u64,
    /// Batches dropped since the spool was created.
    dropped: u64,
    /// Segments, oldest first; the last one is the active (appended) segment.
    segments: VecDeque<SegmentSummary>,
    /// Id of the next segment created.
    next_segment_id: u64,
    /// Append handle of the active segment; `None` after a failed write (the
    /// next push rotates).
    active: Option<File>,
    /// Data written since the last fdatasync of the active segment.
    unsynced: bool,
    /// When the active segment was last synced.
    synced: Instant,
    /// Highest seq pushed.
    last_pushed: u64,
    /// Recent records, ascending; every spooled record with seq >= `cache_from`
    /// is here.
    cache: VecDeque<CachedRecord>,
    cache_bytes: usize,
    cache_from: u64,
    /// Refused batches above `acked` still in segment files: never sent again.
    rejected: BTreeSet<u64>,
    reader: Option<ReadCursor>,
    /// The last I/O failure logged, so that a failing disk logs once per change.
    last_error: Option<String>,
    /// Held for the spool's lifetime: one agent per spool directory.
    _lock: File,
}

/// Unacknowledged batches in segment files on disk (see the module docs for
/// the delivery guarantee).
#[derive(Debug)]
pub struct SpoolOutbox {
    state: Mutex<SpoolState>,
    notify: Notify,
}

impl SpoolOutbox {
    /// Opens (or creates) the spool in `config.dir` for host `host_id`:
    /// recovers the segments, keeps or renews the run id, and tells where to
    /// resume.
    pub fn open(config: SpoolConfig, host_id: &str) -> Result<(Self, SpoolStart), SpoolError> {
        let (state, start) = recovery::open(config, host_id)?;
        Ok((
            Self {
                state: Mutex::new(state),
                notify: Notify::new(),
            },
            start,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, SpoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Outbox for SpoolOutbox {
    fn push(&self, batch: pb::Batch) -> u64 {
        let dropped = self.lock().push(batch);
        self.notify.notify_waiters();
        dropped
    }

    fn ack(&self, seq: u64) {
        self.lock().ack(seq);
    }

    fn reject(&self, seq: u64) {
        self.lock().reject(seq);
    }

    fn next_after(&self, after: u64) -> Option<pb::Batch> {
        self.lock().next_after(after)
    }

    fn pushed(&self) -> &Notify {
        &self.notify
    }

    fn stats(&self) -> OutboxStats {
        self.lock().stats()
    }

    fn sync(&self) -> Result<(), OutboxError> {
        self.lock().sync_all()
    }
}

impl Drop for SpoolOutbox {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = state.sync_all() {
            tracing::error!("spool: {e}");
        }
    }
}

impl SpoolState {
    /// The figures of [`Outbox::stats`].
    fn stats(&self) -> OutboxStats {
        let on_disk: u64 = self
            .segments
            .iter()
            .map(|s| s.seqs.count_above(self.acked))
            .sum();
        let memory_only = self
            .cache
            .iter()
            .filter(|r| !r.on_disk && r.seq > self.acked)
            .count() as u64;
        let rejected = self.rejected.range(self.acked + 1..).count() as u64;
        OutboxStats {
            batches: (on_disk + memory_only).saturating_sub(rejected) as usize,
            bytes: self.segments.iter().map(|s| s.bytes).sum::<u64>() as usize,
            dropped: self.dropped,
            acked: self.acked,
            newest: self.last_pushed,
        }
    }

    /// Logs an I/O failure once per distinct message.
    fn log_io_error(&mut self, message: String) {
        if self.last_error.as_deref() != Some(message.as_str()) {
            tracing::error!("spool: {message}");
            self.last_error = Some(message);
        }
    }
}
