//! Cuts and retention: the head becomes a generation of closed chunks in one
//! redb transaction (then the WAL segments it covers are deleted), and
//! generations older than the retention are deleted with the series not written since.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nodewatch_proto::time::{duration_nanos, now_nanos};
use prost::Message as _;
use redb::ReadableTable as _;

use super::codec;
use super::head::OpenSeries;
use super::head::{Body, lock};
use super::schema::{self, BACKFILL, CHUNKS, GENERATIONS, HOSTS, META, RUNS, SERIES, TIMES_SID};
use super::wal::Wal;
use super::{Shared, StoreError, db};

/// Writes every open chunk as generation `wal.segment()`, then starts a new segment.
pub(super) fn cut(shared: &Shared, wal: &mut Wal, flushed: &mut u64) -> Result<(), StoreError> {
    let generation = wal.segment();
    /// Encoded chunks by series id.
    type Chunks = Vec<(u32, Vec<u8>)>;
    struct HostCut {
        no: u32,
        id: String,
        record: Option<Vec<u8>>,
        times: Vec<u8>,
        chunks: Chunks,
        series: Vec<(u32, Vec<u8>)>,
        runs: Vec<(u64, u64)>,
        /// Backfill lanes: time column and chunks of each.
        lanes: Vec<(Vec<u8>, Chunks)>,
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
                runs: h
                    .runs
                    .iter()
                    .map(|(&r, s)| (r, s.durable.through))
                    .collect(),
                lanes: Vec::new(),
            };
            if let (Some(&f), Some(&l)) = (h.times.first(), h.times.last()) {
                first = first.min(f);
                last = last.max(l);
                hc.times = codec::encode_times(&h.times);
            }
            for (sid, s) in h.series.iter().enumerate() {
                if let Some(open) = &s.open {
                    hc.chunks.push((sid as u32, encode(open)));
                }
                if s.dirty {
                    let v = schema::encode_series(s.kind, s.last_time, &s.key);
                    hc.series.push((sid as u32, v));
                }
            }
            for lane in h.backfill.iter().filter(|l| !l.times.is_empty()) {
                first = first.min(lane.times[0]);
                last = last.max(lane.newest());
                let mut chunks: Chunks = lane
                    .open
                    .iter()
                    .filter_map(|(&sid, open)| Some((sid, encode(open.as_ref()?))))
                    .collect();
                chunks.sort_unstable_by_key(|c| c.0);
                hc.lanes.push((codec::encode_times(&lane.times), chunks));
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
        let mut backfill = tx.open_table(BACKFILL).map_err(db("open backfill"))?;
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
            for (k, (times, lane_chunks)) in hc.lanes.iter().enumerate() {
                let key = schema::lane_key(hc.no, k + 1);
                chunks
                    .insert((generation, key, TIMES_SID), times.as_slice())
                    .map_err(db("insert backfill times"))?;
                for (sid, b) in lane_chunks {
                    chunks
                        .insert((generation, key, *sid), b.as_slice())
                        .map_err(db("insert backfill chunk"))?;
                }
            }
            if !hc.lanes.is_empty() {
                backfill
                    .insert((generation, hc.no), hc.lanes.len() as u32)
                    .map_err(db("insert backfill lanes"))?;
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
            h.backfill.clear();
            h.backfill_accepted.clear();
            h.active = 0;
            h.dirty = false;
            for s in &mut h.series {
                s.open = None;
                s.dirty = false;
            }
        }
        head.open_bytes = 0;
        head.cut_requested = false;
    }
    wal.remove_through(generation)?;
    shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Deletes generations whose newest sample is older than the retention, and
/// series not written since.
pub(super) fn enforce_retention(shared: &Shared) -> Result<(), StoreError> {
    let cutoff = now_nanos().saturating_sub(duration_nanos(shared.config.retention));
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
        let mut backfill = tx.open_table(BACKFILL).map_err(db("open backfill"))?;
        for &g in &expired {
            gens.remove(g).map_err(db("remove generation"))?;
            chunks
                .retain_in((g, 0, 0)..=(g, u32::MAX, u32::MAX), |_, _| false)
                .map_err(db("remove chunks"))?;
            backfill
                .retain_in((g, 0)..=(g, u32::MAX), |_, _| false)
                .map_err(db("remove backfill lanes"))?;
        }
    }
    // Forget series with no sample since the cutoff (and not open in the head).
    let mut head = lock(&shared.head);
    let mut removed_bytes = 0usize;
    {
        let mut series_t = tx.open_table(SERIES).map_err(db("open series"))?;
        for h in head.hosts.values_mut() {
            let no = h.no;
            let open_sids: std::collections::HashSet<u32> = (0..h.series.len() as u32)
                .filter(|&sid| h.is_open(sid))
                .collect();
            for (sid, s) in h.series.iter_mut().enumerate() {
                if !open_sids.contains(&(sid as u32)) && !s.key.is_empty() && s.last_time < cutoff {
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

/// The closed form of an open chunk.
fn encode(open: &OpenSeries) -> Vec<u8> {
    match &open.body {
        Body::Scalar { xor } => codec::encode_scalar_chunk(&open.runs, xor),
        Body::Histogram { layout, body } => {
            codec::encode_histogram_chunk(&open.runs, *layout, body)
        }
    }
}
