//! Appending one batch to the head in two steps around the WAL write
//! (batches newer than a host's newest go to its main lane, older ones to a
//! backfill lane; both are stored and queryable):
//! [`prepare`] checks de-duplication and limits and resolves the batch's series
//! before its record is written; [`apply`] adds its samples once the record is
//! durable (or replayed from the WAL at start-up).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nodewatch_proto::pb;
use tracing::warn;

use super::codec::{self, Runs, XorEncoder};
use super::head::{
    Body, Head, Lane, MAX_BACKFILL_LANES, OpenSeries, Resolved, Resolver, RunState, SeriesMeta,
};
use super::{SeriesKind, StoreConfig, StoreCounters, StoreError};

/// Checks a batch against dedup state and limits and resolves its series.
/// `Ok(None)` = duplicate.
pub(super) fn prepare(
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
        if r.accepted.contains(batch.seq) {
            return Ok(None);
        }
        if !r.accepted.has_room_for(batch.seq) {
            return Err(StoreError::Unavailable);
        }
    }
    // Each lane holds batches in time order: newer than everything goes to the
    // main lane, older batches (backfill) to the first lane they extend.
    let t = batch.time_unix_nano;
    let lane = if t > h.accepted_newest {
        0
    } else if let Some(i) = h.backfill_accepted.iter().position(|&newest| newest < t) {
        i + 1
    } else if h.backfill_accepted.len() < MAX_BACKFILL_LANES {
        h.backfill_accepted.push(i64::MIN);
        h.backfill_accepted.len()
    } else {
        head.cut_requested = true;
        return Err(StoreError::BackfillBusy {
            lanes: MAX_BACKFILL_LANES,
        });
    };
    let mut r = Resolver {
        host: h,
        out: Resolved::default(),
        new_keys: Vec::new(),
        new_index: HashMap::new(),
    };
    crate::metrics::map_batch(batch, &mut r);
    let Resolver {
        mut out,
        mut new_keys,
        ..
    } = r;
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
        // Store what fits: series already open always, then the ones this batch
        // opens in the order the batch maps them (host-wide figures first,
        // processes and sockets after), until the limit; refuse the rest.
        let refused = keep_within(
            &mut out,
            &mut new_keys,
            |sid| (sid as usize) < h.series.len() && h.series[sid as usize].open.is_some(),
            config.max_series_per_host.saturating_sub(h.active),
        );
        counters
            .rejected_cardinality
            .fetch_add(1, Ordering::Relaxed);
        counters
            .series_refused
            .fetch_add(refused as u64, Ordering::Relaxed);
        if !h.over_series_limit {
            h.over_series_limit = true;
            warn!(
                host_id,
                limit = config.max_series_per_host,
                would_have,
                "host over its series limit: samples of new series are refused (counted as series_refused), the rest is stored; raise max_series_per_host or find the label that floods"
            );
        }
    } else {
        h.over_series_limit = false;
    }
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
    if lane == 0 {
        h.accepted_newest = t;
    } else {
        h.backfill_accepted[lane - 1] = t;
    }
    out.lane = lane;
    let run = h.runs.entry(run_id).or_insert(RunState::new(clock));
    run.accepted.insert(batch.seq);
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
pub(super) fn apply(
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
        r.durable.insert(batch.seq);
    }
    h.last_seen_unix_nano = h.last_seen_unix_nano.max(received);
    h.dirty = true;
    if resolved.scalars.is_empty() && resolved.histograms.is_empty() {
        return;
    }
    let t = batch.time_unix_nano;
    let lane = resolved.lane;
    let (times, mut backfill) = if lane == 0 {
        h.latest.update(batch);
        h.newest_time = t;
        (&mut h.times, None)
    } else {
        counters
            .out_of_order_batches
            .fetch_add(1, Ordering::Relaxed);
        while h.backfill.len() < lane {
            h.backfill.push(Lane::default());
        }
        let l = &mut h.backfill[lane - 1];
        (&mut l.times, Some(&mut l.open))
    };
    let idx = times.len() as u32;
    times.push(t);
    let mut grown = 8usize;
    let mut samples = 0u64;
    for (sid, v) in resolved.scalars {
        let Some(s) = h.series.get_mut(sid as usize) else {
            continue;
        };
        let slot = match &mut backfill {
            None => &mut s.open,
            Some(open) => open.entry(sid).or_default(),
        };
        if has_index(slot, idx) {
            continue; // the same key twice in one batch
        }
        if slot.is_none() {
            if lane == 0 {
                h.active += 1;
            }
            *slot = Some(OpenSeries {
                runs: Runs::new(),
                body: Body::Scalar {
                    xor: XorEncoder::default(),
                },
            });
        }
        let Some(open) = slot.as_mut() else {
            continue;
        };
        let before = open.heap_bytes();
        if let Body::Scalar { xor } = &mut open.body {
            xor.push(v);
            codec::runs_push(&mut open.runs, idx);
        }
        grown += open.heap_bytes().saturating_sub(before);
        s.last_time = s.last_time.max(t);
        s.dirty = true;
        samples += 1;
    }
    for (sid, layout, indices, counts) in resolved.histograms {
        let Some(s) = h.series.get_mut(sid as usize) else {
            continue;
        };
        let slot = match &mut backfill {
            None => &mut s.open,
            Some(open) => open.entry(sid).or_default(),
        };
        if has_index(slot, idx) {
            continue;
        }
        if slot.is_none() {
            if lane == 0 {
                h.active += 1;
            }
            *slot = Some(OpenSeries {
                runs: Runs::new(),
                body: Body::Histogram {
                    layout,
                    body: Vec::new(),
                },
            });
        }
        let Some(open) = slot.as_mut() else {
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
        s.last_time = s.last_time.max(t);
        s.dirty = true;
        samples += 1;
    }
    head.open_bytes += grown;
    counters
        .samples_stored
        .fetch_add(samples, Ordering::Relaxed);
}

/// Whether an open chunk already holds a value at time index `idx` (its newest).
fn has_index(open: &Option<OpenSeries>, idx: u32) -> bool {
    open.as_ref()
        .and_then(|o| o.runs.last())
        .is_some_and(|&(start, len)| start + len > idx)
}

/// Drops the samples of series that would open beyond `budget` more open
/// series; `is_open(sid)` tells series that are open already (always kept). New
/// series (temporary ids counting down from `u32::MAX`) that get no room are
/// removed from `new_keys` and the remaining temporary ids renumbered. Returns
/// the samples dropped.
fn keep_within(
    out: &mut Resolved,
    new_keys: &mut Vec<(String, SeriesKind)>,
    is_open: impl Fn(u32) -> bool,
    mut budget: usize,
) -> usize {
    let first_temp = u32::MAX - (new_keys.len() as u32).saturating_sub(1);
    let is_temp = |sid: u32| !new_keys.is_empty() && sid >= first_temp;
    let mut room: HashMap<u32, bool> = HashMap::new();
    let order = out
        .scalars
        .iter()
        .map(|s| s.0)
        .chain(out.histograms.iter().map(|s| s.0));
    for sid in order {
        if is_open(sid) && !is_temp(sid) {
            continue;
        }
        room.entry(sid).or_insert_with(|| {
            let fits = budget > 0;
            budget = budget.saturating_sub(1);
            fits
        });
    }
    let keep = |sid: u32| room.get(&sid).copied().unwrap_or(true);
    let before = out.scalars.len() + out.histograms.len();
    out.scalars.retain(|s| keep(s.0));
    out.histograms.retain(|s| keep(s.0));
    let dropped = before - out.scalars.len() - out.histograms.len();
    // Renumber the kept new keys densely: temporary id `u32::MAX - i` for the
    // i-th kept key.
    let mut renumber: HashMap<u32, u32> = HashMap::new();
    let mut kept = Vec::new();
    for (i, key) in std::mem::take(new_keys).into_iter().enumerate() {
        let old = u32::MAX - i as u32;
        if keep(old) {
            renumber.insert(old, u32::MAX - kept.len() as u32);
            kept.push(key);
        }
    }
    *new_keys = kept;
    for sid in out
        .scalars
        .iter_mut()
        .map(|s| &mut s.0)
        .chain(out.histograms.iter_mut().map(|s| &mut s.0))
    {
        if let Some(&n) = renumber.get(sid) {
            *sid = n;
        }
    }
    dropped
}
