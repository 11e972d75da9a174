//! Start-up: the head is rebuilt from redb (hosts, series index, durable seqs)
//! and the WAL segments newer than the last committed generation are replayed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use prost::Message as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _};
use tracing::{error, info, warn};

use super::append::{apply, prepare};
use super::head::{Head, HostHead, RunState, SeqSet, SeriesMeta};
use super::schema::{self, BACKFILL, CHUNKS, GENERATIONS, HOSTS, HostRecord, META, RUNS, SERIES};
use super::wal::{self, WalRecord};
use super::{SeriesKind, StoreConfig, StoreCounters, StoreError, db};

/// Loads hosts, series indexes and durable seqs from the database.
pub(super) fn load_head(database: &Database) -> Result<(Head, u64), StoreError> {
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
        tx.open_table(BACKFILL).map_err(db("create backfill"))?;
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
    let mut next_sid: HashMap<u32, u32> = HashMap::new();
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
        // The record's latest parts are for display only: they may come from
        // batches still only in the WAL (a Hello writes the record between
        // cuts), so they must not say how far the stored data reaches. That
        // is the newest sample time of the committed series, set below.
        if let Some(b) = rec.latest {
            h.latest.update(&Arc::new(b));
        }
        h.dirty = false;
        next_sid.insert(rec.no, rec.next_series_id);
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
        let (kind, last_time, key) =
            schema::decode_series(v.value()).ok_or(StoreError::Corrupt("series record"))?;
        let Some(h) = by_no.get(&no).and_then(|id| head.hosts.get_mut(id)) else {
            continue;
        };
        let key: Arc<str> = Arc::from(key);
        let sid = sid as usize;
        reserve_ids(&mut h.series, sid + 1);
        head.index_bytes += key.len() * 2 + 96;
        h.index.insert(key.clone(), sid as u32);
        h.newest_time = h.newest_time.max(last_time);
        h.series[sid] = SeriesMeta {
            key,
            kind,
            last_time,
            open: None,
            dirty: false,
        };
    }
    // Ids of series retention removed stay taken (see `HostRecord::next_series_id`).
    for (no, next) in next_sid {
        if let Some(h) = by_no.get(&no).and_then(|id| head.hosts.get_mut(id)) {
            reserve_ids(&mut h.series, next as usize);
        }
    }
    for h in head.hosts.values_mut() {
        h.accepted_newest = h.newest_time;
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
                    accepted: SeqSet::through(seq),
                    durable: SeqSet::through(seq),
                    used: 0,
                },
            );
        }
    }
    Ok((head, flushed))
}

/// Replays the WAL segments after generation `flushed` into `head`; returns the
/// segments found and the number of batches replayed.
pub(super) fn replay_wal(
    wal_dir: &Path,
    flushed: u64,
    head: &mut Head,
    config: &StoreConfig,
    counters: &StoreCounters,
) -> Result<(Vec<u64>, usize), StoreError> {
    let started = Instant::now();
    let mut replayed = 0usize;
    let segs = wal::segments(wal_dir)?;
    for &n in segs.iter().filter(|&&n| n > flushed) {
        let read = wal::read_segment(wal_dir, n, config.max_record_bytes)?;
        if read.torn {
            warn!(
                segment = n,
                "wal segment ends in a torn record; later bytes ignored"
            );
        }
        if read.corrupt > 0 {
            counters
                .wal_corrupt_records
                .fetch_add(read.corrupt as u64, Ordering::Relaxed);
            error!(
                segment = n,
                damaged = read.corrupt,
                kept = read.records.len(),
                "wal segment has damaged records (checksum mismatch); they are skipped, the records after them are replayed"
            );
        }
        for rec in read.records {
            let Ok(rec) = WalRecord::decode(rec.as_slice()) else {
                warn!(segment = n, "undecodable wal record skipped");
                continue;
            };
            let Some(batch) = rec.batch else { continue };
            let batch = Arc::new(batch);
            if let Ok(Some(resolved)) =
                prepare(head, config, counters, &rec.host_id, rec.run_id, &batch)
            {
                apply(
                    head,
                    counters,
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
    if replayed > 0 {
        info!(
            batches = replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed write-ahead log"
        );
    }
    Ok((segs, replayed))
}

/// Extends a host's series list with empty entries up to `len` ids, so that
/// ids of removed series (holes) are never handed out again.
fn reserve_ids(series: &mut Vec<SeriesMeta>, len: usize) {
    while series.len() < len {
        series.push(SeriesMeta {
            key: Arc::from(""),
            kind: SeriesKind::Scalar,
            last_time: i64::MIN,
            open: None,
            dirty: false,
        });
    }
}
