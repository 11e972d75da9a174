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

pub mod codec;
pub mod hist;
pub mod series;
pub mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodewatch_proto::pb;
use prost::Message as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use codec::{HistogramLayout, Runs, SparseHistogram, XorEncoder};
use series::SampleSink;
use wal::{Wal, WalRecord};

/// Default retention of stored samples.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(15 * 24 * 3600);
/// Default limit of active series per host.
pub const DEFAULT_MAX_SERIES_PER_HOST: usize = 100_000;
/// Default limit of hosts.
pub const DEFAULT_MAX_HOSTS: usize = 10_000;
/// Default tolerated clock skew into the future.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(10 * 60);
/// Default oldest accepted sample age (an agent replaying its spool after an outage).
pub const DEFAULT_MAX_SAMPLE_AGE: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default span of the in-memory head before it is cut into chunks.
pub const DEFAULT_CHUNK_DURATION: Duration = Duration::from_secs(20 * 60);
/// Default cap of head memory.
pub const DEFAULT_HEAD_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap of the current WAL segment.
pub const DEFAULT_WAL_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Default interval of the retention pass.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Default number of agent runs remembered per host for de-duplication.
pub const DEFAULT_MAX_RUNS_PER_HOST: usize = 32;
/// Most appends committed with one fsync.
const MAX_GROUP: usize = 1024;
/// Series id reserved for a host's time column in the chunk table.
const TIMES_SID: u32 = u32::MAX;
/// Longest accepted host id, bytes.
const MAX_HOST_ID_BYTES: usize = 256;

/// Store settings (the `[store]` table of the collector configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How long samples are kept; older chunks are deleted in the background.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most series one host may have active in the head; a batch that would create
    /// more is refused with RESOURCE_EXHAUSTED.
    pub max_series_per_host: usize,
    /// Most hosts the store accepts.
    pub max_hosts: usize,
    /// Samples timestamped further than this ahead of the collector clock are refused.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Samples older than this (collector clock) are refused.
    #[serde(with = "humantime_serde")]
    pub max_sample_age: Duration,
    /// Span of the in-memory head before it is written out as compressed chunks.
    #[serde(with = "humantime_serde")]
    pub chunk_duration: Duration,
    /// Head memory that triggers an early cut, bytes.
    pub head_max_bytes: u64,
    /// WAL segment size that triggers an early cut, bytes.
    pub wal_max_bytes: u64,
    /// Interval of the retention pass.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Agent runs remembered per host for de-duplication (least recently used dropped).
    pub max_runs_per_host: usize,
    /// fsync the WAL before acknowledging appends. `false` acknowledges data that a
    /// crash or power loss can lose: only for measuring the in-memory path.
    pub fsync: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            max_series_per_host: DEFAULT_MAX_SERIES_PER_HOST,
            max_hosts: DEFAULT_MAX_HOSTS,
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            max_sample_age: DEFAULT_MAX_SAMPLE_AGE,
            chunk_duration: DEFAULT_CHUNK_DURATION,
            head_max_bytes: DEFAULT_HEAD_MAX_BYTES,
            wal_max_bytes: DEFAULT_WAL_MAX_BYTES,
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            max_runs_per_host: DEFAULT_MAX_RUNS_PER_HOST,
            fsync: true,
        }
    }
}

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
    /// The batch would create more active series than allowed for the host.
    #[error("host {host_id} would have {would_have} active series, limit is {limit}")]
    CardinalityExceeded {
        /// Host id.
        host_id: String,
        /// Series the host would have.
        would_have: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The store already holds the maximum number of hosts.
    #[error("host limit of {limit} reached")]
    TooManyHosts {
        /// Configured limit.
        limit: usize,
    },
    /// No host matches a query.
    #[error("no host matches {0:?}")]
    UnknownHost(String),
    /// Several hosts match a query.
    #[error("{0:?} matches several hosts")]
    AmbiguousHost(String),
    /// The store stopped after a failed write; restart the collector.
    #[error("store is unavailable after a failed write")]
    Unavailable,
}

fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
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
    /// Batches refused by the per-host series limit.
    pub rejected_cardinality: AtomicU64,
    /// Batches refused by the host limit.
    pub rejected_hosts: AtomicU64,
    /// Batches whose time was not after the host's latest stored batch: recorded
    /// as delivered, samples dropped (logged).
    pub out_of_order_batches: AtomicU64,
    /// Histogram samples dropped because their layout changed within a chunk.
    pub histogram_layout_changes: AtomicU64,
    /// WAL fsyncs (one per commit group).
    pub wal_syncs: AtomicU64,
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
    fn matches(&self, labels: &[(&str, &str)]) -> bool {
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
    /// Key (metric + labels, see [`series`]).
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

// ---- redb tables -------------------------------------------------------------

/// host id -> encoded [`HostRecord`].
const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
/// (host no, series id) -> kind byte | last sample time i64 LE | key.
const SERIES: TableDefinition<(u32, u32), &[u8]> = TableDefinition::new("series");
/// (generation, host no, series id) -> chunk; series id u32::MAX is the time column.
const CHUNKS: TableDefinition<(u64, u32, u32), &[u8]> = TableDefinition::new("chunks");
/// generation -> (first, last) sample time in it.
const GENERATIONS: TableDefinition<u64, (i64, i64)> = TableDefinition::new("generations");
/// (host no, run id) -> highest durable seq.
const RUNS: TableDefinition<(u32, u64), u64> = TableDefinition::new("runs");
/// Store-wide counters: "flushed_generation", "next_host_no".
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A host's persisted record.
#[derive(Clone, PartialEq, prost::Message)]
struct HostRecord {
    /// Host number used in chunk keys.
    #[prost(uint32, tag = "1")]
    no: u32,
    /// Last Hello.
    #[prost(message, optional, tag = "2")]
    hello: Option<pb::Hello>,
    /// Last batch arrival, Unix nanoseconds.
    #[prost(int64, tag = "3")]
    last_seen_unix_nano: i64,
    /// Latest parts.
    #[prost(message, optional, tag = "4")]
    latest: Option<pb::Batch>,
}

// ---- head --------------------------------------------------------------------

#[derive(Debug)]
enum Body {
    Scalar {
        xor: XorEncoder,
    },
    Histogram {
        layout: HistogramLayout,
        body: Vec<u8>,
    },
}

#[derive(Debug)]
struct OpenSeries {
    runs: Runs,
    body: Body,
}

impl OpenSeries {
    fn heap_bytes(&self) -> usize {
        self.runs.capacity() * 8
            + match &self.body {
                Body::Scalar { xor, .. } => xor.heap_bytes(),
                Body::Histogram { body, .. } => body.capacity(),
            }
    }
}

#[derive(Debug)]
struct SeriesMeta {
    key: Arc<str>,
    kind: SeriesKind,
    last_time: i64,
    /// Open chunk of the current head generation.
    open: Option<OpenSeries>,
    /// Not yet written to the series table.
    dirty: bool,
}

#[derive(Debug, Clone, Copy)]
struct RunState {
    /// Highest seq accepted into a commit group (durable once that group synced).
    accepted: u64,
    /// Highest durable seq.
    durable: u64,
    /// Logical clock of the last use, for least-recently-used eviction.
    used: u64,
}

/// Latest batch parts of a host, each from the newest batch carrying it.
#[derive(Debug, Default)]
struct LatestParts {
    newest: Option<Arc<pb::Batch>>,
    cpu: Option<Arc<pb::Batch>>,
    memory: Option<Arc<pb::Batch>>,
    disks: Option<Arc<pb::Batch>>,
    block: Option<Arc<pb::Batch>>,
    conns: Option<Arc<pb::Batch>>,
    procs: Option<Arc<pb::Batch>>,
    syscalls: Option<Arc<pb::Batch>>,
    ebpf: Option<Arc<pb::Batch>>,
}

impl LatestParts {
    fn update(&mut self, b: &Arc<pb::Batch>) {
        self.newest = Some(b.clone());
        let set = |slot: &mut Option<Arc<pb::Batch>>, has: bool| {
            if has {
                *slot = Some(b.clone());
            }
        };
        set(&mut self.cpu, b.cpu.is_some());
        set(&mut self.memory, b.memory.is_some());
        set(&mut self.disks, !b.disks.is_empty());
        set(&mut self.block, !b.block_devices.is_empty());
        set(&mut self.conns, b.connections.is_some());
        set(&mut self.procs, !b.processes.is_empty());
        set(&mut self.syscalls, !b.syscalls.is_empty());
        set(&mut self.ebpf, b.ebpf.is_some());
    }

    fn merged(&self) -> Option<pb::Batch> {
        let newest = self.newest.as_ref()?;
        let mut out = pb::Batch {
            seq: newest.seq,
            time_unix_nano: newest.time_unix_nano,
            ..Default::default()
        };
        if let Some(b) = &self.cpu {
            out.cpu = b.cpu.clone();
        }
        if let Some(b) = &self.memory {
            out.memory = b.memory;
        }
        if let Some(b) = &self.disks {
            out.disks = b.disks.clone();
        }
        if let Some(b) = &self.block {
            out.block_devices = b.block_devices.clone();
        }
        if let Some(b) = &self.conns {
            out.connections = b.connections.clone();
        }
        if let Some(b) = &self.procs {
            out.processes = b.processes.clone();
            out.processes_complete = b.processes_complete;
        }
        if let Some(b) = &self.syscalls {
            out.syscalls = b.syscalls.clone();
        }
        if let Some(b) = &self.ebpf {
            out.ebpf = b.ebpf.clone();
        }
        Some(out)
    }
}

#[derive(Debug)]
struct HostHead {
    no: u32,
    hello: Option<pb::Hello>,
    last_seen_unix_nano: i64,
    latest: LatestParts,
    runs: HashMap<u64, RunState>,
    index: HashMap<Arc<str>, u32>,
    series: Vec<SeriesMeta>,
    /// Series with an open chunk.
    active: usize,
    /// Batch times of the current generation, ascending.
    times: Vec<i64>,
    /// Host record changed since the last flush.
    dirty: bool,
    /// Time of the newest stored batch (batches are stored in time order).
    newest_time: i64,
}

impl HostHead {
    fn new(no: u32) -> Self {
        Self {
            no,
            hello: None,
            last_seen_unix_nano: 0,
            latest: LatestParts::default(),
            runs: HashMap::new(),
            index: HashMap::new(),
            series: Vec::new(),
            active: 0,
            times: Vec::new(),
            dirty: true,
            newest_time: i64::MIN,
        }
    }

    fn last_time(&self) -> i64 {
        self.newest_time
    }

    fn record(&self) -> HostRecord {
        HostRecord {
            no: self.no,
            hello: self.hello.clone(),
            last_seen_unix_nano: self.last_seen_unix_nano,
            latest: self.latest.merged(),
        }
    }
}

#[derive(Debug, Default)]
struct Head {
    hosts: HashMap<String, HostHead>,
    next_host_no: u32,
    /// Logical clock for run eviction.
    clock: u64,
    /// Estimated heap bytes of open chunks and time columns.
    open_bytes: usize,
    /// Estimated heap bytes of series indexes.
    index_bytes: usize,
}

impl Head {
    fn host_mut(&mut self, host_id: &str, max_hosts: usize) -> Result<&mut HostHead, StoreError> {
        if !self.hosts.contains_key(host_id) {
            if self.hosts.len() >= max_hosts {
                return Err(StoreError::TooManyHosts { limit: max_hosts });
            }
            let no = self.next_host_no;
            self.next_host_no += 1;
            self.hosts.insert(host_id.to_string(), HostHead::new(no));
        }
        Ok(self.hosts.get_mut(host_id).expect("inserted above"))
    }
}

/// A batch resolved to series ids, ready to apply after its WAL record is durable.
#[derive(Debug, Default)]
struct Resolved {
    scalars: Vec<(u32, f64)>,
    histograms: Vec<(u32, HistogramLayout, Vec<u32>, Vec<u64>)>,
}

/// Resolves a batch's samples against a host's index; new series are collected
/// and only created when the host stays within its limit.
struct Resolver<'a> {
    host: &'a HostHead,
    out: Resolved,
    /// Keys not in the index yet, with their kind; referenced as `u32::MAX - i`.
    new_keys: Vec<(String, SeriesKind)>,
    new_index: HashMap<String, u32>,
}

impl Resolver<'_> {
    fn sid(&mut self, key: &str, kind: SeriesKind) -> u32 {
        if let Some(&sid) = self.host.index.get(key) {
            return sid;
        }
        if let Some(&i) = self.new_index.get(key) {
            return u32::MAX - i;
        }
        let i = self.new_keys.len() as u32;
        self.new_keys.push((key.to_string(), kind));
        self.new_index.insert(key.to_string(), i);
        u32::MAX - i
    }
}

impl SampleSink for Resolver<'_> {
    fn scalar(&mut self, key: &str, value: f64) {
        let sid = self.sid(key, SeriesKind::Scalar);
        self.out.scalars.push((sid, value));
    }

    fn histogram(&mut self, key: &str, h: &pb::Histogram) {
        let sid = self.sid(key, SeriesKind::Histogram);
        let layout = HistogramLayout {
            grouping_power: h.grouping_power.min(255) as u8,
            max_value_power: h.max_value_power.min(255) as u8,
        };
        self.out
            .histograms
            .push((sid, layout, h.indices.clone(), h.counts.clone()));
    }
}

// ---- writer ------------------------------------------------------------------

enum WriterMsg {
    Append {
        host_id: String,
        run_id: u64,
        batch: Arc<pb::Batch>,
        record: Vec<u8>,
        received: i64,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    /// Cut the head now (see [`Store::flush`]).
    Cut {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Time passed: time-based cuts and retention.
    Tick,
}

struct Shared {
    dir: PathBuf,
    config: StoreConfig,
    db: Database,
    head: Mutex<Head>,
    counters: StoreCounters,
    poisoned: AtomicBool,
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

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn dur_nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// Checks every f64 of a batch (the walk is shared with ingest validation).
fn check_finite(b: &pb::Batch) -> Result<(), StoreError> {
    match crate::validate::first_non_finite(b) {
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
        let (mut head, flushed) = load_head(&database)?;
        let started = Instant::now();
        let shared_counters = StoreCounters::default();
        // Replay WAL segments newer than the last committed generation.
        let mut replayed = 0usize;
        let segs = wal::segments(&wal_dir)?;
        for &n in segs.iter().filter(|&&n| n > flushed) {
            let (records, torn) = wal::read_segment(&wal_dir, n)?;
            if torn {
                warn!(
                    segment = n,
                    "wal segment ends in a torn record; later bytes ignored"
                );
            }
            for rec in records {
                let Ok(rec) = WalRecord::decode(rec.as_slice()) else {
                    warn!(segment = n, "undecodable wal record skipped");
                    continue;
                };
                let Some(batch) = rec.batch else { continue };
                let batch = Arc::new(batch);
                if let Ok(Some(resolved)) = prepare(
                    &mut head,
                    &config,
                    &shared_counters,
                    &rec.host_id,
                    rec.run_id,
                    &batch,
                ) {
                    apply(
                        &mut head,
                        &shared_counters,
                        &rec.host_id,
                        rec.run_id,
                        &batch,
                        resolved,
                        rec.received_unix_nano,
                    );
                    replayed += 1;
                }
            }
        }
        // New appends go to a fresh segment after everything replayed; the replayed
        // segments stay until the next cut commits their data.
        let next_seg = segs.last().copied().unwrap_or(flushed).max(flushed) + 1;
        let wal = Wal::create(&wal_dir, next_seg)?;
        if replayed > 0 {
            info!(
                batches = replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed write-ahead log"
            );
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            db: database,
            head: Mutex::new(head),
            counters: shared_counters,
            poisoned: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        let weak = tx.downgrade();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("nodewatch-store".into())
            .spawn(move || writer_loop(writer_shared, rx, wal, flushed))
            .map_err(|source| StoreError::Io {
                op: "spawn store writer",
                source,
            })?;
        // Ticks drive time-based cuts and retention while no batch arrives.
        std::thread::Builder::new()
            .name("nodewatch-store-tick".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(tx) = weak.upgrade() else { return };
                    if tx.try_send(WriterMsg::Tick).is_err() && tx.is_closed() {
                        return;
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                op: "spawn store ticker",
                source,
            })?;
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
        if self.shared.poisoned.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable);
        }
        // Cheap duplicate check first: a replaying agent should cost little.
        if batch.seq <= self.durable_seq(host_id, run_id) {
            c.batches_duplicate.fetch_add(1, Ordering::Relaxed);
            return Ok(Appended::Duplicate);
        }
        let now = now_nanos();
        let cfg = &self.shared.config;
        if batch.time_unix_nano > now.saturating_add(dur_nanos(cfg.max_future_skew)) {
            c.rejected_future.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::BadTimestamp {
                time_unix_nano: batch.time_unix_nano,
                reason: "too far in the future",
            });
        }
        if batch.time_unix_nano < now.saturating_sub(dur_nanos(cfg.max_sample_age)) {
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

    /// Highest durable seq of (host, run), 0 if none.
    pub fn durable_seq(&self, host_id: &str, run_id: u64) -> u64 {
        let head = self.lock();
        head.hosts
            .get(host_id)
            .and_then(|h| h.runs.get(&run_id))
            .map_or(0, |r| r.durable)
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

    /// Resolves a host id, hostname or unique prefix of either to a host id.
    pub fn resolve_host(&self, name: &str) -> Result<String, StoreError> {
        let head = self.lock();
        if head.hosts.contains_key(name) {
            return Ok(name.to_string());
        }
        let hostname = |h: &HostHead| {
            h.hello
                .as_ref()
                .and_then(|x| x.host.as_ref())
                .map(|x| x.hostname.clone())
                .unwrap_or_default()
        };
        let exact: Vec<&String> = head
            .hosts
            .iter()
            .filter(|(_, h)| hostname(h) == name)
            .map(|(id, _)| id)
            .collect();
        let candidates = if exact.is_empty() {
            head.hosts
                .iter()
                .filter(|(id, h)| {
                    !name.is_empty() && (id.starts_with(name) || hostname(h).starts_with(name))
                })
                .map(|(id, _)| id)
                .collect()
        } else {
            exact
        };
        match candidates.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::UnknownHost(name.to_string())),
            _ => Err(StoreError::AmbiguousHost(name.to_string())),
        }
    }

    /// Series of `host_id` named `metric` (every metric when empty) matching all `matchers`.
    pub fn find_series(
        &self,
        host_id: &str,
        metric: &str,
        matchers: &[LabelMatch],
        limit: usize,
    ) -> Vec<SeriesRef> {
        let head = self.lock();
        let Some(h) = head.hosts.get(host_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (sid, s) in h.series.iter().enumerate() {
            let (m, labels) = series::parse_key(&s.key);
            if s.key.is_empty()
                || (!metric.is_empty() && m != metric)
                || !matchers.iter().all(|x| x.matches(&labels))
            {
                continue;
            }
            out.push(SeriesRef {
                sid: sid as u32,
                key: s.key.clone(),
                kind: s.kind,
            });
            if out.len() >= limit {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Scalar samples of one series in `[start, end]`, time-ordered.
    pub fn read_scalar(
        &self,
        host_id: &str,
        sid: u32,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut out = Vec::new();
        self.read_chunks(host_id, sid, start, end, |times, chunk| {
            let (runs, values) = match chunk {
                ChunkRef::Scalar(runs, values) => (runs, values),
                ChunkRef::Bytes(b) => {
                    let (r, v) = codec::decode_scalar_chunk(b)?;
                    return push_scalar(times, &r, &v, start, end, &mut out);
                }
                ChunkRef::Histogram(..) => return Ok(()),
            };
            push_scalar(times, runs, values, start, end, &mut out)
        })?;
        dedup_sorted(&mut out);
        Ok(out)
    }

    /// Histogram samples of one series in `[start, end]`, time-ordered, with the
    /// grouping power of each.
    pub fn read_histograms(
        &self,
        host_id: &str,
        sid: u32,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, u8, SparseHistogram)>, StoreError> {
        let mut out = Vec::new();
        self.read_chunks(host_id, sid, start, end, |times, chunk| {
            let owned;
            let (layout, runs, hs) = match chunk {
                ChunkRef::Histogram(l, r, h) => (*l, r, h),
                ChunkRef::Bytes(b) => {
                    owned = codec::decode_histogram_chunk(b)?;
                    (owned.0, &owned.1, &owned.2)
                }
                ChunkRef::Scalar(..) => return Ok(()),
            };
            let mut k = 0;
            for &(s, len) in runs {
                for i in s..s + len {
                    let t = *times
                        .get(i as usize)
                        .ok_or(StoreError::Corrupt("run beyond time column"))?;
                    if t >= start && t <= end {
                        out.push((t, layout.grouping_power, hs[k].clone()));
                    }
                    k += 1;
                }
            }
            Ok(())
        })?;
        out.sort_by_key(|x| x.0);
        out.dedup_by_key(|x| x.0);
        Ok(out)
    }

    /// Visits the head chunk and every stored chunk of one series overlapping `[start, end]`.
    fn read_chunks(
        &self,
        host_id: &str,
        sid: u32,
        start: i64,
        end: i64,
        mut visit: impl FnMut(&[i64], &ChunkRef<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Head first, then the database: a cut committing in between shows up twice
        // (removed by the caller's de-duplication), never zero times.
        let (no, head_part) = {
            let head = self.lock();
            let Some(h) = head.hosts.get(host_id) else {
                return Ok(());
            };
            let part = h.series.get(sid as usize).and_then(|s| {
                let open = s.open.as_ref()?;
                let first = *h.times.first()?;
                let last = *h.times.last()?;
                if first > end || last < start {
                    return None;
                }
                Some((h.times.clone(), open_snapshot(open)))
            });
            (h.no, part)
        };
        let mut chunks: Vec<(Vec<i64>, Vec<u8>)> = Vec::new();
        {
            let tx = self.shared.db.begin_read().map_err(db("begin read"))?;
            let gens = match tx.open_table(GENERATIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return finish(head_part, &mut visit);
                }
                Err(e) => return Err(db("open generations")(e)),
            };
            let table = tx.open_table(CHUNKS).map_err(db("open chunks"))?;
            for g in gens.iter().map_err(db("scan generations"))? {
                let (g, span) = g.map_err(db("scan generations"))?;
                let (first, last) = span.value();
                if last < start || first > end {
                    continue;
                }
                let g = g.value();
                let Some(c) = table.get((g, no, sid)).map_err(db("read chunk"))? else {
                    continue;
                };
                let c = c.value().to_vec();
                let times = table
                    .get((g, no, TIMES_SID))
                    .map_err(db("read time column"))?
                    .ok_or(StoreError::Corrupt("chunk without time column"))?;
                let times = codec::decode_times(times.value())?;
                chunks.push((times, c));
            }
        }
        for (times, c) in &chunks {
            visit(times, &ChunkRef::Bytes(c))?;
        }
        finish(head_part, &mut visit)
    }

    fn lock(&self) -> MutexGuard<'_, Head> {
        lock(&self.shared.head)
    }
}

fn finish(
    head_part: Option<(Vec<i64>, ChunkRef<'static>)>,
    visit: &mut impl FnMut(&[i64], &ChunkRef<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if let Some((times, c)) = head_part {
        visit(&times, &c)?;
    }
    Ok(())
}

fn lock(m: &Mutex<Head>) -> MutexGuard<'_, Head> {
    // A panic while holding the lock leaves consistent-enough data (counters and
    // appends only); keep serving rather than propagating the poison.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A chunk handed to a reader.
enum ChunkRef<'a> {
    Bytes(&'a [u8]),
    Scalar(Runs, Vec<f64>),
    Histogram(HistogramLayout, Runs, Vec<SparseHistogram>),
}

fn open_snapshot(open: &OpenSeries) -> ChunkRef<'static> {
    match &open.body {
        Body::Scalar { xor, .. } => {
            let mut v = Vec::with_capacity(xor.len() as usize);
            // The head encoder is written by this process: decoding cannot fail short
            // of memory corruption; an error leaves the values empty.
            let _ = codec::xor_decode(xor.bytes(), xor.len() as usize, &mut v);
            ChunkRef::Scalar(open.runs.clone(), v)
        }
        Body::Histogram { layout, body } => {
            let n = codec::runs_len(&open.runs);
            let hs = codec::decode_histogram_body(body, n).unwrap_or_default();
            ChunkRef::Histogram(*layout, open.runs.clone(), hs)
        }
    }
}

fn push_scalar(
    times: &[i64],
    runs: &Runs,
    values: &[f64],
    start: i64,
    end: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), StoreError> {
    let mut k = 0;
    for &(s, len) in runs {
        for i in s..s + len {
            let t = *times
                .get(i as usize)
                .ok_or(StoreError::Corrupt("run beyond time column"))?;
            let v = *values
                .get(k)
                .ok_or(StoreError::Corrupt("fewer values than runs"))?;
            if t >= start && t <= end {
                out.push((t, v));
            }
            k += 1;
        }
    }
    Ok(())
}

fn dedup_sorted(v: &mut Vec<(i64, f64)>) {
    v.sort_by_key(|x| x.0);
    v.dedup_by_key(|x| x.0);
}

/// Loads hosts, series indexes and durable seqs from the database.
fn load_head(database: &Database) -> Result<(Head, u64), StoreError> {
    let mut head = Head::default();
    let tx = database.begin_write().map_err(db("begin init"))?;
    {
        // Create every table so readers never see a missing one.
        tx.open_table(HOSTS).map_err(db("create hosts"))?;
        tx.open_table(SERIES).map_err(db("create series"))?;
        tx.open_table(CHUNKS).map_err(db("create chunks"))?;
        tx.open_table(GENERATIONS)
            .map_err(db("create generations"))?;
        tx.open_table(RUNS).map_err(db("create runs"))?;
        tx.open_table(META).map_err(db("create meta"))?;
    }
    tx.commit().map_err(db("commit init"))?;
    let tx = database.begin_read().map_err(db("begin load"))?;
    let meta = tx.open_table(META).map_err(db("open meta"))?;
    let flushed = meta
        .get("flushed_generation")
        .map_err(db("read meta"))?
        .map_or(0, |v| v.value());
    head.next_host_no = meta
        .get("next_host_no")
        .map_err(db("read meta"))?
        .map_or(0, |v| v.value()) as u32;
    let mut by_no: HashMap<u32, String> = HashMap::new();
    for r in tx
        .open_table(HOSTS)
        .map_err(db("open hosts"))?
        .iter()
        .map_err(db("scan hosts"))?
    {
        let (k, v) = r.map_err(db("scan hosts"))?;
        let rec = HostRecord::decode(v.value()).map_err(|_| StoreError::Corrupt("host record"))?;
        let mut h = HostHead::new(rec.no);
        h.hello = rec.hello;
        h.last_seen_unix_nano = rec.last_seen_unix_nano;
        if let Some(b) = rec.latest {
            h.newest_time = b.time_unix_nano;
            h.latest.update(&Arc::new(b));
        }
        h.dirty = false;
        head.next_host_no = head.next_host_no.max(rec.no + 1);
        by_no.insert(rec.no, k.value().to_string());
        head.hosts.insert(k.value().to_string(), h);
    }
    for r in tx
        .open_table(SERIES)
        .map_err(db("open series"))?
        .iter()
        .map_err(db("scan series"))?
    {
        let (k, v) = r.map_err(db("scan series"))?;
        let (no, sid) = k.value();
        let v = v.value();
        if v.len() < 9 {
            return Err(StoreError::Corrupt("series record"));
        }
        let Some(h) = by_no.get(&no).and_then(|id| head.hosts.get_mut(id)) else {
            continue;
        };
        let kind = if v[0] == 1 {
            SeriesKind::Histogram
        } else {
            SeriesKind::Scalar
        };
        let last_time = i64::from_le_bytes(v[1..9].try_into().unwrap_or_default());
        let key: Arc<str> = Arc::from(String::from_utf8_lossy(&v[9..]).as_ref());
        let sid = sid as usize;
        while h.series.len() <= sid {
            // Holes (series removed by retention) keep ids stable.
            h.series.push(SeriesMeta {
                key: Arc::from(""),
                kind: SeriesKind::Scalar,
                last_time: i64::MIN,
                open: None,
                dirty: false,
            });
        }
        head.index_bytes += key.len() * 2 + 96;
        h.index.insert(key.clone(), sid as u32);
        h.series[sid] = SeriesMeta {
            key,
            kind,
            last_time,
            open: None,
            dirty: false,
        };
    }
    for r in tx
        .open_table(RUNS)
        .map_err(db("open runs"))?
        .iter()
        .map_err(db("scan runs"))?
    {
        let (k, v) = r.map_err(db("scan runs"))?;
        let (no, run) = k.value();
        if let Some(h) = by_no.get(&no).and_then(|id| head.hosts.get_mut(id)) {
            let seq = v.value();
            h.runs.insert(
                run,
                RunState {
                    accepted: seq,
                    durable: seq,
                    used: 0,
                },
            );
        }
    }
    Ok((head, flushed))
}

/// Checks a batch against dedup state and limits and resolves its series.
/// `Ok(None)` = duplicate.
fn prepare(
    head: &mut Head,
    config: &StoreConfig,
    counters: &StoreCounters,
    host_id: &str,
    run_id: u64,
    batch: &pb::Batch,
) -> Result<Option<Resolved>, StoreError> {
    head.clock += 1;
    let clock = head.clock;
    let h = match head.host_mut(host_id, config.max_hosts) {
        Ok(h) => h,
        Err(e) => {
            counters.rejected_hosts.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    if let Some(r) = h.runs.get_mut(&run_id) {
        r.used = clock;
        if batch.seq <= r.accepted {
            return Ok(None);
        }
    }
    if batch.time_unix_nano <= h.last_time() {
        // Stored in order only: the run's seq still advances so the agent moves on.
        return Ok(Some(Resolved::default()));
    }
    let mut r = Resolver {
        host: h,
        out: Resolved::default(),
        new_keys: Vec::new(),
        new_index: HashMap::new(),
    };
    series::map_batch(batch, &mut r);
    let Resolver { out, new_keys, .. } = r;
    // Active series after this batch: open ones plus new ones plus existing but
    // currently closed ones this batch reopens.
    let reopened = out
        .scalars
        .iter()
        .map(|s| s.0)
        .chain(out.histograms.iter().map(|s| s.0))
        .filter(|&sid| (sid as usize) < h.series.len() && h.series[sid as usize].open.is_none())
        .count();
    let would_have = h.active + reopened + new_keys.len();
    if would_have > config.max_series_per_host {
        counters
            .rejected_cardinality
            .fetch_add(1, Ordering::Relaxed);
        return Err(StoreError::CardinalityExceeded {
            host_id: host_id.to_string(),
            would_have,
            limit: config.max_series_per_host,
        });
    }
    let mut out = out;
    let mut index_bytes = 0;
    if !new_keys.is_empty() {
        let base = h.series.len() as u32;
        for (key, kind) in new_keys {
            let key: Arc<str> = Arc::from(key);
            index_bytes += key.len() * 2 + 96;
            let sid = h.series.len() as u32;
            h.index.insert(key.clone(), sid);
            h.series.push(SeriesMeta {
                key,
                kind,
                last_time: i64::MIN,
                open: None,
                dirty: true,
            });
        }
        // Temporary ids count down from u32::MAX; existing ids are below `base`.
        let fix = |sid: &mut u32| {
            if *sid >= base {
                *sid = base + (u32::MAX - *sid);
            }
        };
        for s in &mut out.scalars {
            fix(&mut s.0);
        }
        for s in &mut out.histograms {
            fix(&mut s.0);
        }
    }
    let run = h.runs.entry(run_id).or_insert(RunState {
        accepted: 0,
        durable: 0,
        used: clock,
    });
    run.accepted = batch.seq;
    if h.runs.len() > config.max_runs_per_host.max(1)
        && let Some((&oldest, _)) = h
            .runs
            .iter()
            .filter(|(k, _)| **k != run_id)
            .min_by_key(|(_, r)| r.used)
    {
        h.runs.remove(&oldest);
    }
    head.index_bytes += index_bytes;
    Ok(Some(out))
}

/// Applies a durable, resolved batch to the head.
fn apply(
    head: &mut Head,
    counters: &StoreCounters,
    host_id: &str,
    run_id: u64,
    batch: &Arc<pb::Batch>,
    resolved: Resolved,
    received: i64,
) {
    let Some(h) = head.hosts.get_mut(host_id) else {
        return;
    };
    if let Some(r) = h.runs.get_mut(&run_id) {
        r.durable = r.durable.max(batch.seq);
    }
    h.last_seen_unix_nano = h.last_seen_unix_nano.max(received);
    h.dirty = true;
    if resolved.scalars.is_empty() && resolved.histograms.is_empty() {
        if batch.time_unix_nano <= h.last_time() {
            counters
                .out_of_order_batches
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                host_id,
                seq = batch.seq,
                "batch time not after the host's latest; samples dropped"
            );
        }
        return;
    }
    h.latest.update(batch);
    let t = batch.time_unix_nano;
    h.newest_time = t;
    let idx = h.times.len() as u32;
    h.times.push(t);
    let mut grown = 8usize;
    let mut samples = 0u64;
    for (sid, v) in resolved.scalars {
        let Some(s) = h.series.get_mut(sid as usize) else {
            continue;
        };
        if s.last_time >= t {
            continue; // the same key twice in one batch
        }
        if s.open.is_none() {
            h.active += 1;
            s.open = Some(OpenSeries {
                runs: Runs::new(),
                body: Body::Scalar {
                    xor: XorEncoder::default(),
                },
            });
        }
        let Some(open) = s.open.as_mut() else {
            continue;
        };
        let before = open.heap_bytes();
        if let Body::Scalar { xor } = &mut open.body {
            xor.push(v);
            codec::runs_push(&mut open.runs, idx);
        }
        grown += open.heap_bytes().saturating_sub(before);
        s.last_time = t;
        s.dirty = true;
        samples += 1;
    }
    for (sid, layout, indices, counts) in resolved.histograms {
        let Some(s) = h.series.get_mut(sid as usize) else {
            continue;
        };
        if s.last_time >= t {
            continue;
        }
        if s.open.is_none() {
            h.active += 1;
            s.open = Some(OpenSeries {
                runs: Runs::new(),
                body: Body::Histogram {
                    layout,
                    body: Vec::new(),
                },
            });
        }
        let Some(open) = s.open.as_mut() else {
            continue;
        };
        let before = open.heap_bytes();
        if let Body::Histogram { layout: l, body } = &mut open.body {
            if *l != layout {
                counters
                    .histogram_layout_changes
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            codec::histogram_push(body, &indices, &counts);
            codec::runs_push(&mut open.runs, idx);
        }
        grown += open.heap_bytes().saturating_sub(before);
        s.last_time = t;
        s.dirty = true;
        samples += 1;
    }
    head.open_bytes += grown;
    counters
        .samples_stored
        .fetch_add(samples, Ordering::Relaxed);
}

fn writer_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<WriterMsg>,
    mut wal: Wal,
    mut flushed: u64,
) {
    let mut last_cut = Instant::now();
    let mut last_retention: Option<Instant> = None;
    let c = &shared.counters;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        let mut framed = Vec::new();
        let mut pending = Vec::new();
        let mut force_cut = Vec::new();
        {
            let mut head = lock(&shared.head);
            for msg in group {
                let (host_id, run_id, batch, record, received, reply) = match msg {
                    WriterMsg::Append {
                        host_id,
                        run_id,
                        batch,
                        record,
                        received,
                        reply,
                    } => (host_id, run_id, batch, record, received, reply),
                    WriterMsg::Cut { reply } => {
                        force_cut.push(reply);
                        continue;
                    }
                    WriterMsg::Tick => continue,
                };
                if shared.poisoned.load(Ordering::Relaxed) {
                    let _ = reply.send(Err(StoreError::Unavailable));
                    continue;
                }
                match prepare(&mut head, &shared.config, c, &host_id, run_id, &batch) {
                    Ok(None) => pending.push((reply, None)),
                    Ok(Some(resolved)) => {
                        framed.extend_from_slice(&record);
                        pending.push((reply, Some((host_id, run_id, batch, resolved, received))));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
        if let Err(e) = wal.write(&framed, shared.config.fsync) {
            // The log's state on disk is unknown: refuse everything from now on
            // rather than acknowledge what may not be durable.
            warn!(error = %e, "wal write failed; store stops accepting batches");
            shared.poisoned.store(true, Ordering::Relaxed);
            for (reply, _) in pending {
                let _ = reply.send(Err(StoreError::Unavailable));
            }
            continue;
        }
        if !framed.is_empty() {
            c.wal_syncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut replies = Vec::with_capacity(pending.len());
        {
            let mut head = lock(&shared.head);
            for (reply, p) in pending {
                if let Some((host_id, run_id, batch, resolved, received)) = p {
                    apply(&mut head, c, &host_id, run_id, &batch, resolved, received);
                    c.batches_stored.fetch_add(1, Ordering::Relaxed);
                    replies.push((reply, Appended::Stored));
                } else {
                    c.batches_duplicate.fetch_add(1, Ordering::Relaxed);
                    replies.push((reply, Appended::Duplicate));
                }
            }
        }
        for (reply, outcome) in replies {
            let _ = reply.send(Ok(outcome));
        }
        let (head_bytes, wal_bytes) = {
            let head = lock(&shared.head);
            (head.open_bytes as u64, wal.bytes())
        };
        if !force_cut.is_empty()
            || last_cut.elapsed() >= shared.config.chunk_duration
            || head_bytes >= shared.config.head_max_bytes
            || wal_bytes >= shared.config.wal_max_bytes
        {
            let r = cut(&shared, &mut wal, &mut flushed);
            if let Err(e) = &r {
                warn!(error = %e, "writing chunks failed; the wal keeps the data");
            }
            last_cut = Instant::now();
            for reply in force_cut {
                let _ = reply.send(match &r {
                    Ok(()) => Ok(()),
                    Err(_) => Err(StoreError::Unavailable),
                });
            }
        }
        if last_retention.is_none_or(|t| t.elapsed() >= shared.config.retention_interval) {
            if let Err(e) = enforce_retention(&shared) {
                warn!(error = %e, "retention pass failed");
            }
            last_retention = Some(Instant::now());
        }
    }
}

/// Writes every open chunk as generation `wal.segment()`, then starts a new segment.
fn cut(shared: &Shared, wal: &mut Wal, flushed: &mut u64) -> Result<(), StoreError> {
    let generation = wal.segment();
    struct HostCut {
        no: u32,
        id: String,
        record: Option<Vec<u8>>,
        times: Vec<u8>,
        chunks: Vec<(u32, Vec<u8>)>,
        series: Vec<(u32, Vec<u8>)>,
        runs: Vec<(u64, u64)>,
    }
    let mut cuts = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let next_host_no;
    {
        let head = lock(&shared.head);
        next_host_no = head.next_host_no;
        for (id, h) in &head.hosts {
            let mut hc = HostCut {
                no: h.no,
                id: id.clone(),
                record: h.dirty.then(|| h.record().encode_to_vec()),
                times: Vec::new(),
                chunks: Vec::new(),
                series: Vec::new(),
                runs: h.runs.iter().map(|(&r, s)| (r, s.durable)).collect(),
            };
            if let (Some(&f), Some(&l)) = (h.times.first(), h.times.last()) {
                first = first.min(f);
                last = last.max(l);
                hc.times = codec::encode_times(&h.times);
            }
            for (sid, s) in h.series.iter().enumerate() {
                if let Some(open) = &s.open {
                    let bytes = match &open.body {
                        Body::Scalar { xor } => codec::encode_scalar_chunk(&open.runs, xor),
                        Body::Histogram { layout, body } => {
                            codec::encode_histogram_chunk(&open.runs, *layout, body)
                        }
                    };
                    hc.chunks.push((sid as u32, bytes));
                }
                if s.dirty {
                    let mut v = Vec::with_capacity(9 + s.key.len());
                    v.push(u8::from(s.kind == SeriesKind::Histogram));
                    v.extend_from_slice(&s.last_time.to_le_bytes());
                    v.extend_from_slice(s.key.as_bytes());
                    hc.series.push((sid as u32, v));
                }
            }
            cuts.push(hc);
        }
    }
    // New appends go to the next segment from here on.
    wal.rotate()?;
    let tx = shared.db.begin_write().map_err(db("begin cut"))?;
    {
        let mut chunks = tx.open_table(CHUNKS).map_err(db("open chunks"))?;
        let mut series_t = tx.open_table(SERIES).map_err(db("open series"))?;
        let mut hosts = tx.open_table(HOSTS).map_err(db("open hosts"))?;
        let mut runs = tx.open_table(RUNS).map_err(db("open runs"))?;
        for hc in &cuts {
            if !hc.times.is_empty() {
                chunks
                    .insert((generation, hc.no, TIMES_SID), hc.times.as_slice())
                    .map_err(db("insert times"))?;
            }
            for (sid, b) in &hc.chunks {
                chunks
                    .insert((generation, hc.no, *sid), b.as_slice())
                    .map_err(db("insert chunk"))?;
            }
            for (sid, v) in &hc.series {
                series_t
                    .insert((hc.no, *sid), v.as_slice())
                    .map_err(db("insert series"))?;
            }
            if let Some(r) = &hc.record {
                hosts
                    .insert(hc.id.as_str(), r.as_slice())
                    .map_err(db("insert host"))?;
            }
            // Keep exactly the runs the head remembers.
            let stale: Vec<u64> = runs
                .range((hc.no, 0)..=(hc.no, u64::MAX))
                .map_err(db("scan runs"))?
                .filter_map(Result::ok)
                .map(|(k, _)| k.value().1)
                .filter(|r| !hc.runs.iter().any(|(x, _)| x == r))
                .collect();
            for r in stale {
                runs.remove((hc.no, r)).map_err(db("remove run"))?;
            }
            for &(r, seq) in &hc.runs {
                runs.insert((hc.no, r), seq).map_err(db("insert run"))?;
            }
        }
        if first <= last {
            tx.open_table(GENERATIONS)
                .map_err(db("open generations"))?
                .insert(generation, (first, last))
                .map_err(db("insert generation"))?;
        }
        let mut meta = tx.open_table(META).map_err(db("open meta"))?;
        meta.insert("flushed_generation", generation)
            .map_err(db("write meta"))?;
        meta.insert("next_host_no", u64::from(next_host_no))
            .map_err(db("write meta"))?;
    }
    tx.commit().map_err(db("commit cut"))?;
    *flushed = generation;
    // Drop the head's copy now that the chunks are committed.
    {
        let mut head = lock(&shared.head);
        for h in head.hosts.values_mut() {
            h.times.clear();
            h.times.shrink_to(64);
            h.active = 0;
            h.dirty = false;
            for s in &mut h.series {
                s.open = None;
                s.dirty = false;
            }
        }
        head.open_bytes = 0;
    }
    wal.remove_through(generation)?;
    shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Deletes generations whose newest sample is older than the retention, and
/// series not written since.
fn enforce_retention(shared: &Shared) -> Result<(), StoreError> {
    let cutoff = now_nanos().saturating_sub(dur_nanos(shared.config.retention));
    let tx = shared.db.begin_write().map_err(db("begin retention"))?;
    let mut expired = Vec::new();
    {
        let mut gens = tx.open_table(GENERATIONS).map_err(db("open generations"))?;
        for g in gens.iter().map_err(db("scan generations"))? {
            let (g, span) = g.map_err(db("scan generations"))?;
            if span.value().1 < cutoff {
                expired.push(g.value());
            }
        }
        let mut chunks = tx.open_table(CHUNKS).map_err(db("open chunks"))?;
        for &g in &expired {
            gens.remove(g).map_err(db("remove generation"))?;
            chunks
                .retain_in((g, 0, 0)..=(g, u32::MAX, u32::MAX), |_, _| false)
                .map_err(db("remove chunks"))?;
        }
    }
    // Forget series with no sample since the cutoff (and not open in the head).
    let mut head = lock(&shared.head);
    let mut removed_bytes = 0usize;
    {
        let mut series_t = tx.open_table(SERIES).map_err(db("open series"))?;
        for h in head.hosts.values_mut() {
            let no = h.no;
            for (sid, s) in h.series.iter_mut().enumerate() {
                if s.open.is_none() && !s.key.is_empty() && s.last_time < cutoff {
                    h.index.remove(&s.key);
                    removed_bytes += s.key.len() * 2 + 96;
                    s.key = Arc::from("");
                    series_t
                        .remove((no, sid as u32))
                        .map_err(db("remove series"))?;
                }
            }
        }
    }
    tx.commit().map_err(db("commit retention"))?;
    head.index_bytes = head.index_bytes.saturating_sub(removed_bytes);
    drop(head);
    shared
        .counters
        .expired_generations
        .fetch_add(expired.len() as u64, Ordering::Relaxed);
    Ok(())
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
