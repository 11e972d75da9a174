//! The collector's embedded time-series store.
//!
//! Layout under the data directory:
//! - `wal/NNNN.wal`: the write-ahead log. An append is acknowledged once its
//!   record is fsynced; concurrent appends share one fsync (group commit).
//! - `chunks.redb`: closed, compressed chunks, the series index, host records and
//!   the per-(host, run) durable sequence numbers, in a redb database.
//!
//! Recent data lives in the in-memory head (already Gorilla-encoded). Every
//! `chunk_duration` (or earlier when the head or the WAL grows past its cap) the
//! head is cut: its chunks are committed to redb as generation `n` (= the WAL
//! segment that holds them) and WAL segments `<= n` are deleted. On start-up the
//! WAL segments after the last committed generation are replayed into the head.

mod append;
pub mod codec;
mod compact;
mod head;
mod read;
mod recovery;
mod schema;
pub mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nodewatch_proto::pb;
use nodewatch_proto::time::{duration_nanos, now_nanos};
use prost::Message as _;
use redb::{Database, ReadableTable as _};
use tokio::sync::{mpsc, oneshot};

pub use crate::config::StoreConfig;
use head::Head;
use schema::{HOSTS, META};
use wal::{Wal, WalRecord};
use writer::{MAX_GROUP, WriterMsg};

/// Longest accepted host id, bytes.
const MAX_HOST_ID_BYTES: usize = 256;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The chunk database failed.
    #[error("chunk database: {op}: {source}")]
    Db {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// Stored data does not decode.
    #[error("corrupt store data: {0}")]
    Corrupt(&'static str),
    /// A value is NaN or infinite.
    #[error("non-finite value in {field}")]
    NonFinite {
        /// Where the value was.
        field: &'static str,
    },
    /// A batch timestamp is outside the accepted window.
    #[error("batch time {time_unix_nano} is {reason}")]
    BadTimestamp {
        /// The timestamp, Unix nanoseconds.
        time_unix_nano: i64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The host id is empty or too long.
    #[error("invalid host id: {0}")]
    BadHostId(&'static str),
    /// The store already holds the maximum number of hosts.
    #[error("host limit of {limit} reached")]
    TooManyHosts {
        /// Configured limit.
        limit: usize,
    },
    /// Every backfill lane of the host already holds newer data than the
    /// batch; the head is cut soon, after which the batch is taken.
    #[error("batch overlaps {lanes} backfill streams of its host already; retry in a moment")]
    BackfillBusy {
        /// Backfill lanes per host.
        lanes: usize,
    },
    /// The store cannot write (its WAL write failed, or it is shutting down);
    /// nothing was stored, the agent keeps the batch and retries.
    #[error("store cannot write now (disk full or I/O error, see the collector log); retry later")]
    Unavailable,
}

impl StoreError {
    /// Whether the batch is refused for good (its content or a limit), as
    /// opposed to trouble worth retrying (I/O, a busy head).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            StoreError::NonFinite { .. }
                | StoreError::BadTimestamp { .. }
                | StoreError::BadHostId(_)
                | StoreError::TooManyHosts { .. }
        )
    }
}

pub(crate) fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: Box::new(e.into()),
    }
}

/// Outcome of [`Store::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored durably now.
    Stored,
    /// Already stored earlier (seq <= durable seq of the run); nothing done.
    Duplicate,
}

/// A host as known to the store.
#[derive(Debug, Clone)]
pub struct StoredHost {
    /// Host id.
    pub host_id: String,
    /// The agent's last Hello, if one was recorded.
    pub hello: Option<pb::Hello>,
    /// Collector clock when the last batch arrived, Unix nanoseconds (0 if never).
    pub last_seen_unix_nano: i64,
    /// Latest value of every part of a batch (each part from the newest batch carrying it).
    pub latest: Option<pb::Batch>,
}

/// Counters of the store (monotonic since start).
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Batches stored.
    pub batches_stored: AtomicU64,
    /// Batches ignored as duplicates.
    pub batches_duplicate: AtomicU64,
    /// Samples stored (scalar and histogram).
    pub samples_stored: AtomicU64,
    /// Batches refused for a NaN or infinite value.
    pub rejected_non_finite: AtomicU64,
    /// Batches refused for a timestamp too far in the future.
    pub rejected_future: AtomicU64,
    /// Batches refused for a timestamp too far in the past.
    pub rejected_past: AtomicU64,
    /// Batches with samples refused by the per-host series limit (the rest of
    /// each was stored).
    pub rejected_cardinality: AtomicU64,
    /// Samples refused by the per-host series limit (of series that would
    /// have opened beyond it).
    pub series_refused: AtomicU64,
    /// Batches refused by the host limit.
    pub rejected_hosts: AtomicU64,
    /// Batches older than their host's newest stored batch, stored in a
    /// backfill lane.
    pub out_of_order_batches: AtomicU64,
    /// Histogram samples dropped because their layout changed within a chunk.
    pub histogram_layout_changes: AtomicU64,
    /// WAL fsyncs (one per commit group).
    pub wal_syncs: AtomicU64,
    /// WAL writes that failed; their batches were answered UNAVAILABLE.
    pub wal_write_errors: AtomicU64,
    /// WAL records skipped on replay because they failed their checksum.
    pub wal_corrupt_records: AtomicU64,
    /// Head cuts written to the chunk database.
    pub flushes: AtomicU64,
    /// Chunk generations deleted by retention.
    pub expired_generations: AtomicU64,
}

/// How a query selects series by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelMatch {
    /// Label equals the value (a missing label equals "").
    Equal(String, String),
    /// Label differs from the value.
    NotEqual(String, String),
    /// Label starts with the value.
    Prefix(String, String),
}

impl LabelMatch {
    pub(crate) fn matches(&self, labels: &[(&str, &str)]) -> bool {
        let get = |name: &str| {
            labels
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .unwrap_or("")
        };
        match self {
            LabelMatch::Equal(k, v) => get(k) == v,
            LabelMatch::NotEqual(k, v) => get(k) != v,
            LabelMatch::Prefix(k, v) => get(k).starts_with(v.as_str()),
        }
    }
}

/// Kind of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// One f64 per sample.
    Scalar,
    /// One sparse histogram per sample.
    Histogram,
}

/// A series selected by a query.
#[derive(Debug, Clone)]
pub struct SeriesRef {
    /// Id within its host.
    pub sid: u32,
    /// Key (metric + labels, see [`crate::metrics`]).
    pub key: Arc<str>,
    /// Kind.
    pub kind: SeriesKind,
}

/// Size of the store on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreSize {
    /// Chunk database file, bytes.
    pub chunk_bytes: u64,
    /// WAL segments, bytes.
    pub wal_bytes: u64,
    /// Estimated head memory, bytes.
    pub head_bytes: u64,
    /// Active series in the head, all hosts.
    pub head_series: u64,
}

/// What the store's handle, its writer thread and its readers share.
struct Shared {
    dir: PathBuf,
    config: StoreConfig,
    db: Database,
    head: Mutex<Head>,
    counters: StoreCounters,
    /// Set while WAL writes fail (disk full, I/O error); cleared by the next
    /// successful write.
    failing: AtomicBool,
}

/// The embedded store. `Send + Sync`; hold it in an `Arc`.
pub struct Store {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<WriterMsg>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// Checks every f64 of a batch (the walk is shared with ingest validation).
fn check_finite(b: &pb::Batch) -> Result<(), StoreError> {
    match crate::metrics::first_non_finite(b) {
        Some(field) => Err(StoreError::NonFinite { field }),
        None => Ok(()),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, replaying the WAL.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|source| StoreError::Io {
            op: "create data dir",
            source,
        })?;
        let database = Database::create(dir.join("chunks.redb")).map_err(db("open"))?;
        let (mut head, flushed) = recovery::load_head(&database)?;
        let counters = StoreCounters::default();
        let (segs, _) = recovery::replay_wal(&wal_dir, flushed, &mut head, &config, &counters)?;
        // New appends go to a fresh segment after everything replayed; the replayed
        // segments stay until the next cut commits their data.
        let next_seg = segs.last().copied().unwrap_or(flushed).max(flushed) + 1;
        let wal = Wal::create(&wal_dir, next_seg)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            db: database,
            head: Mutex::new(head),
            counters,
            failing: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        let writer = writer::spawn(shared.clone(), rx, tx.downgrade(), wal, flushed)?;
        Ok(Store {
            shared,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Appends a batch. Returns once the batch would survive `kill -9`. A batch
    /// whose seq is `<=` the durable seq of its (host, run) returns
    /// `Ok(Appended::Duplicate)` and stores nothing.
    pub async fn append(
        &self,
        host_id: &str,
        run_id: u64,
        batch: &pb::Batch,
    ) -> Result<Appended, StoreError> {
        let c = &self.shared.counters;
        if host_id.is_empty() {
            return Err(StoreError::BadHostId("empty"));
        }
        if host_id.len() > MAX_HOST_ID_BYTES {
            return Err(StoreError::BadHostId("longer than 256 bytes"));
        }
        // Cheap duplicate check first: a replaying agent should cost little.
        if self.holds(host_id, run_id, batch.seq) {
            c.batches_duplicate.fetch_add(1, Ordering::Relaxed);
            return Ok(Appended::Duplicate);
        }
        let now = now_nanos();
        let cfg = &self.shared.config;
        if batch.time_unix_nano > now.saturating_add(duration_nanos(cfg.max_future_skew)) {
            c.rejected_future.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::BadTimestamp {
                time_unix_nano: batch.time_unix_nano,
                reason: "too far in the future",
            });
        }
        if batch.time_unix_nano < now.saturating_sub(duration_nanos(cfg.max_sample_age)) {
            c.rejected_past.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::BadTimestamp {
                time_unix_nano: batch.time_unix_nano,
                reason: "too far in the past",
            });
        }
        if let Err(e) = check_finite(batch) {
            c.rejected_non_finite.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let rec = WalRecord {
            host_id: host_id.to_string(),
            run_id,
            batch: Some(batch.clone()),
            received_unix_nano: now,
        };
        let mut payload = Vec::with_capacity(rec.encoded_len());
        rec.encode(&mut payload)
            .map_err(|_| StoreError::Corrupt("wal record encoding"))?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        wal::frame(&mut record, &payload);
        let batch = Arc::new(rec.batch.unwrap_or_default());
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(StoreError::Unavailable)?;
        tx.send(WriterMsg::Append {
            host_id: host_id.to_string(),
            run_id,
            batch,
            record,
            received: now,
            reply,
        })
        .await
        .map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Seq of (host, run) through which every batch is settled (durable, or
    /// declared dropped by the agent), 0 if none.
    pub fn durable_seq(&self, host_id: &str, run_id: u64) -> u64 {
        let head = self.lock();
        head.hosts
            .get(host_id)
            .and_then(|h| h.runs.get(&run_id))
            .map_or(0, |r| r.durable.through)
    }

    /// Whether batch `seq` of (host, run) is durable (also above a gap).
    pub fn holds(&self, host_id: &str, run_id: u64, seq: u64) -> bool {
        let head = self.lock();
        head.hosts
            .get(host_id)
            .and_then(|h| h.runs.get(&run_id))
            .is_some_and(|r| r.durable.contains(seq))
    }

    /// Counts batch `seq` of (host, run) as settled without storing it: it was
    /// refused for good (invalid content), and the agent drops it. Keeps the
    /// settled prefix (Welcome/Ack seq) moving past it.
    pub fn settle_seq(&self, host_id: &str, run_id: u64, seq: u64) {
        if let Some(r) = self.lock().run_mut(host_id, run_id)
            && r.accepted.has_room_for(seq)
            && r.durable.has_room_for(seq)
        {
            r.accepted.insert(seq);
            r.durable.insert(seq);
        }
    }

    /// Records that the agent will never send seqs of (host, run) below
    /// `first_seq` (it dropped them): the run counts as settled through
    /// `first_seq - 1`. Kept in memory (and in the run's durable seq written
    /// by the next cut): an agent declares it again with every Hello.
    pub fn settle_below(&self, host_id: &str, run_id: u64, first_seq: u64) {
        let Some(through) = first_seq.checked_sub(1).filter(|&t| t > 0) else {
            return;
        };
        if let Some(r) = self.lock().run_mut(host_id, run_id) {
            r.accepted.settle_through(through);
            r.durable.settle_through(through);
        }
    }

    /// Persists the agent's Hello (identity, labels, capabilities).
    pub async fn put_host(&self, hello: &pb::Hello) -> Result<(), StoreError> {
        let host_id = hello
            .host
            .as_ref()
            .map(|h| h.host_id.clone())
            .unwrap_or_default();
        if host_id.is_empty() {
            return Err(StoreError::BadHostId("empty"));
        }
        if host_id.len() > MAX_HOST_ID_BYTES {
            return Err(StoreError::BadHostId("longer than 256 bytes"));
        }
        let (record, next_no) = {
            let mut head = self.lock();
            let max = self.shared.config.max_hosts;
            let h = match head.host_mut(&host_id, max) {
                Ok(h) => h,
                Err(e) => {
                    self.shared
                        .counters
                        .rejected_hosts
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            h.hello = Some(hello.clone());
            h.dirty = true;
            let rec = h.record();
            (rec, head.next_host_no)
        };
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let tx = shared.db.begin_write().map_err(db("begin put_host"))?;
            {
                let mut hosts = tx.open_table(HOSTS).map_err(db("open hosts"))?;
                hosts
                    .insert(host_id.as_str(), record.encode_to_vec().as_slice())
                    .map_err(db("insert host"))?;
                let mut meta = tx.open_table(META).map_err(db("open meta"))?;
                let cur = meta
                    .get("next_host_no")
                    .map_err(db("read meta"))?
                    .map_or(0, |v| v.value());
                meta.insert("next_host_no", cur.max(u64::from(next_no)))
                    .map_err(db("write meta"))?;
            }
            tx.commit().map_err(db("commit put_host"))
        })
        .await
        .map_err(|_| StoreError::Unavailable)?
    }

    /// Hosts known to the store with their last Hello, last seen time and latest batch.
    pub fn hosts(&self) -> Vec<StoredHost> {
        let head = self.lock();
        let mut out: Vec<StoredHost> = head
            .hosts
            .iter()
            .map(|(id, h)| StoredHost {
                host_id: id.clone(),
                hello: h.hello.clone(),
                last_seen_unix_nano: h.last_seen_unix_nano,
                latest: h.latest.merged(),
            })
            .collect();
        out.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        out
    }

    /// False while WAL writes fail: appends are answered UNAVAILABLE until a
    /// write succeeds again (each new append tries).
    pub fn writable(&self) -> bool {
        !self.shared.failing.load(Ordering::Relaxed)
    }

    /// Counters since start.
    pub fn counters(&self) -> &StoreCounters {
        &self.shared.counters
    }

    /// Size of the store on disk and of its head in memory.
    pub fn size(&self) -> StoreSize {
        let chunk_bytes =
            std::fs::metadata(self.shared.dir.join("chunks.redb")).map_or(0, |m| m.len());
        let wal_bytes = std::fs::read_dir(self.shared.dir.join("wal"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let head = self.lock();
        StoreSize {
            chunk_bytes,
            wal_bytes,
            head_bytes: (head.open_bytes + head.index_bytes) as u64,
            head_series: head.hosts.values().map(|h| h.active as u64).sum(),
        }
    }

    /// Cuts the head now: writes every open chunk to the chunk database and
    /// drops the WAL segments it covers. Returns once committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(StoreError::Unavailable)?;
        tx.send(WriterMsg::Cut { reply })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }
    fn lock(&self) -> MutexGuard<'_, Head> {
        head::lock(&self.shared.head)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel stops the writer; join it so the database file is
        // released before a new Store opens the same directory.
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests;
