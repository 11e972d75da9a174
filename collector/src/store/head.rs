//! The in-memory head: per host the open chunks of the current generation
//! (already compressed), the time column, the series index, the runs' durable
//! seqs and the latest parts of its batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nodewatch_proto::pb;

use super::codec::{HistogramLayout, Runs, XorEncoder};
use super::schema::HostRecord;
use super::{SeriesKind, StoreError};
use crate::hosts::LatestParts;
use crate::metrics::SampleSink;

#[derive(Debug)]
pub(super) enum Body {
    Scalar {
        xor: XorEncoder,
    },
    Histogram {
        layout: HistogramLayout,
        body: Vec<u8>,
    },
}

#[derive(Debug)]
pub(super) struct OpenSeries {
    pub(super) runs: Runs,
    pub(super) body: Body,
}

impl OpenSeries {
    pub(super) fn heap_bytes(&self) -> usize {
        self.runs.capacity() * 8
            + match &self.body {
                Body::Scalar { xor, .. } => xor.heap_bytes(),
                Body::Histogram { body, .. } => body.capacity(),
            }
    }
}

#[derive(Debug)]
pub(super) struct SeriesMeta {
    pub(super) key: Arc<str>,
    pub(super) kind: SeriesKind,
    pub(super) last_time: i64,
    /// Open chunk of the current head generation.
    pub(super) open: Option<OpenSeries>,
    /// Not yet written to the series table.
    pub(super) dirty: bool,
}

/// The seqs of a run held so far: every seq up to `through`, and ranges above
/// it that arrived out of order (live batches sent before a backlog).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SeqSet {
    /// Every seq `<= through` is held.
    pub(super) through: u64,
    /// Disjoint, ascending, non-adjacent inclusive ranges above `through + 1`.
    pub(super) above: Vec<(u64, u64)>,
}

/// Most separate ranges a run may hold above its contiguous prefix.
pub(super) const MAX_SEQ_RANGES: usize = 1024;

impl SeqSet {
    /// Everything up to `through`.
    pub(super) fn through(through: u64) -> Self {
        Self {
            through,
            above: Vec::new(),
        }
    }

    /// Whether `seq` is held.
    pub(super) fn contains(&self, seq: u64) -> bool {
        seq <= self.through || self.above.iter().any(|&(lo, hi)| lo <= seq && seq <= hi)
    }

    /// Whether inserting `seq` stays within [`MAX_SEQ_RANGES`].
    pub(super) fn has_room_for(&self, seq: u64) -> bool {
        self.above.len() < MAX_SEQ_RANGES
            || seq == self.through + 1
            || self
                .above
                .iter()
                .any(|&(lo, hi)| lo <= seq + 1 && seq <= hi + 1)
    }

    /// Adds `seq`, merging ranges and folding them into the prefix.
    pub(super) fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        let pos = self.above.partition_point(|&(_, hi)| hi + 1 < seq);
        match self.above.get_mut(pos) {
            Some(r) if r.0 <= seq + 1 => {
                r.0 = r.0.min(seq);
                r.1 = r.1.max(seq);
                // Merge with the next range if they now touch.
                if let Some(&(nlo, nhi)) = self.above.get(pos + 1)
                    && nlo <= self.above[pos].1 + 1
                {
                    self.above[pos].1 = nhi;
                    self.above.remove(pos + 1);
                }
            }
            _ => self.above.insert(pos, (seq, seq)),
        }
        self.fold();
    }

    /// Everything up to `through` is settled from now on.
    pub(super) fn settle_through(&mut self, through: u64) {
        if through > self.through {
            self.through = through;
            self.above.retain(|&(_, hi)| hi > through);
            self.fold();
        }
    }

    fn fold(&mut self) {
        while let Some(&(lo, hi)) = self.above.first() {
            if lo > self.through + 1 {
                break;
            }
            self.through = self.through.max(hi);
            self.above.remove(0);
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct RunState {
    /// Seqs accepted into a commit group (durable once that group synced).
    pub(super) accepted: SeqSet,
    /// Seqs durable.
    pub(super) durable: SeqSet,
    /// Logical clock of the last use, for least-recently-used eviction.
    pub(super) used: u64,
}

#[derive(Debug)]
pub(super) struct HostHead {
    pub(super) no: u32,
    pub(super) hello: Option<pb::Hello>,
    pub(super) last_seen_unix_nano: i64,
    pub(super) latest: LatestParts,
    pub(super) runs: HashMap<u64, RunState>,
    pub(super) index: HashMap<Arc<str>, u32>,
    pub(super) series: Vec<SeriesMeta>,
    /// Series with an open chunk.
    pub(super) active: usize,
    /// Batch times of the current generation, ascending.
    pub(super) times: Vec<i64>,
    /// Host record changed since the last flush.
    pub(super) dirty: bool,
    /// Time of the newest batch in the main lane: newer batches go there (the
    /// common case: one agent streaming live).
    pub(super) newest_time: i64,
    /// `newest_time` including batches accepted into a commit group but not
    /// applied yet, so that a group's batches pick their lanes consistently.
    pub(super) accepted_newest: i64,
    /// Backfill lanes of the current generation: batches older than the main
    /// lane's newest (a spool replay, a clock step back, a second agent run),
    /// each lane in time order of its own.
    pub(super) backfill: Vec<Lane>,
    /// Newest accepted time per backfill lane (as `accepted_newest`).
    pub(super) backfill_accepted: Vec<i64>,
    /// The last batch had series refused by the series limit (logged once per episode).
    pub(super) over_series_limit: bool,
}

/// Most backfill lanes per host and generation; when all are taken by newer
/// data than a batch, the batch is refused as retryable and the head is cut.
pub(super) const MAX_BACKFILL_LANES: usize = 3;

/// One backfill lane: its own time column and open chunks (by series id).
#[derive(Debug, Default)]
pub(super) struct Lane {
    /// Batch times, ascending.
    pub(super) times: Vec<i64>,
    /// Open chunk per series id.
    pub(super) open: HashMap<u32, Option<OpenSeries>>,
}

impl Lane {
    /// Newest time in the lane.
    pub(super) fn newest(&self) -> i64 {
        self.times.last().copied().unwrap_or(i64::MIN)
    }
}

impl HostHead {
    pub(super) fn new(no: u32) -> Self {
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
            accepted_newest: i64::MIN,
            backfill: Vec::new(),
            backfill_accepted: Vec::new(),
            over_series_limit: false,
        }
    }

    /// Whether series `sid` has an open chunk in any lane.
    pub(super) fn is_open(&self, sid: u32) -> bool {
        self.series
            .get(sid as usize)
            .is_some_and(|s| s.open.is_some())
            || self
                .backfill
                .iter()
                .any(|l| l.open.get(&sid).is_some_and(Option::is_some))
    }

    /// Forgets lane choices of batches that were accepted but never applied.
    pub(super) fn rollback_lanes(&mut self) {
        self.accepted_newest = self.newest_time;
        self.backfill_accepted = self.backfill.iter().map(Lane::newest).collect();
    }

    pub(super) fn record(&self) -> HostRecord {
        HostRecord {
            no: self.no,
            hello: self.hello.clone(),
            last_seen_unix_nano: self.last_seen_unix_nano,
            latest: self.latest.merged(),
            next_series_id: u32::try_from(self.series.len()).unwrap_or(u32::MAX),
        }
    }
}

impl RunState {
    /// A run nothing is known of yet, last used at `used`.
    pub(super) fn new(used: u64) -> Self {
        Self {
            accepted: SeqSet::default(),
            durable: SeqSet::default(),
            used,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Head {
    pub(super) hosts: HashMap<String, HostHead>,
    pub(super) next_host_no: u32,
    /// Logical clock for run eviction.
    pub(super) clock: u64,
    /// Estimated heap bytes of open chunks and time columns.
    pub(super) open_bytes: usize,
    /// Estimated heap bytes of series indexes.
    pub(super) index_bytes: usize,
    /// A batch found every backfill lane taken: cut the head soon.
    pub(super) cut_requested: bool,
}

impl Head {
    /// The state of (host, run) of a known host, created if new and marked used.
    pub(super) fn run_mut(&mut self, host_id: &str, run_id: u64) -> Option<&mut RunState> {
        self.clock += 1;
        let used = self.clock;
        let r = self
            .hosts
            .get_mut(host_id)?
            .runs
            .entry(run_id)
            .or_insert_with(|| RunState::new(used));
        r.used = used;
        Some(r)
    }

    pub(super) fn host_mut(
        &mut self,
        host_id: &str,
        max_hosts: usize,
    ) -> Result<&mut HostHead, StoreError> {
        if !self.hosts.contains_key(host_id) {
            if self.hosts.len() >= max_hosts {
                return Err(StoreError::TooManyHosts { limit: max_hosts });
            }
            let no = self.next_host_no;
            if no >= super::schema::MAX_HOST_NO {
                return Err(StoreError::TooManyHosts { limit: max_hosts });
            }
            self.next_host_no += 1;
            self.hosts.insert(host_id.to_string(), HostHead::new(no));
        }
        Ok(self.hosts.get_mut(host_id).expect("inserted above"))
    }
}

/// A batch resolved to series ids, ready to apply after its WAL record is durable.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    /// 0: the main lane; `k >= 1`: backfill lane `k - 1`.
    pub(super) lane: usize,
    pub(super) scalars: Vec<(u32, f64)>,
    pub(super) histograms: Vec<(u32, HistogramLayout, Vec<u32>, Vec<u64>)>,
}

/// Resolves a batch's samples against a host's index; new series are collected
/// and only created when the host stays within its limit.
pub(super) struct Resolver<'a> {
    pub(super) host: &'a HostHead,
    pub(super) out: Resolved,
    /// Keys not in the index yet, with their kind; referenced as `u32::MAX - i`.
    pub(super) new_keys: Vec<(String, SeriesKind)>,
    pub(super) new_index: HashMap<String, u32>,
}

impl Resolver<'_> {
    pub(super) fn sid(&mut self, key: &str, kind: SeriesKind) -> u32 {
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

pub(super) fn lock(m: &Mutex<Head>) -> MutexGuard<'_, Head> {
    // A panic while holding the lock leaves consistent-enough data (counters and
    // appends only); keep serving rather than propagating the poison.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sets_merge_and_fold() {
        let mut s = SeqSet::default();
        for seq in [5, 7, 6, 10] {
            s.insert(seq);
        }
        assert_eq!(s.through, 0);
        assert_eq!(s.above, vec![(5, 7), (10, 10)]);
        assert!(s.contains(6) && s.contains(10) && !s.contains(8) && !s.contains(1));
        for seq in 1..=4 {
            s.insert(seq);
        }
        assert_eq!((s.through, s.above.clone()), (7, vec![(10, 10)]));
        s.insert(9);
        assert_eq!(s.above, vec![(9, 10)]);
        s.insert(8);
        assert_eq!((s.through, s.above.is_empty()), (10, true));
        // Already held: nothing changes.
        s.insert(3);
        assert_eq!(s.through, 10);
        // Settling past a gap keeps what lies above it.
        s.insert(20);
        s.insert(30);
        s.settle_through(25);
        assert_eq!((s.through, s.above.clone()), (25, vec![(30, 30)]));
        s.settle_through(29);
        assert_eq!((s.through, s.above.is_empty()), (30, true));
    }

    #[test]
    fn seq_sets_are_bounded() {
        let mut s = SeqSet::default();
        for i in 0..MAX_SEQ_RANGES as u64 {
            s.insert(10 + 2 * i);
        }
        assert!(!s.has_room_for(1_000_000));
        // Extending an existing range or the prefix is always allowed.
        assert!(s.has_room_for(11));
        assert!(s.has_room_for(1));
    }
}
