//! Opening a spool directory: checks, the lock, the ledger, and a scan of
//! every segment that keeps each intact record (resyncing past damage) and
//! cuts a torn tail off the newest segment so appends continue cleanly.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{error, info, warn};

use super::ledger::{SpoolLedger, ledger_path};
use super::segment::{SegmentReader, segment_id, segment_path};
use super::summary::SegmentSummary;
use super::{SpoolConfig, SpoolError, SpoolStart, SpoolState};

/// What a scan of one segment found.
#[derive(Debug, Default)]
struct ScannedSegment {
    summary: Option<SegmentSummary>,
    /// Damaged bytes skipped (between records and at the tail).
    damaged_bytes: u64,
    /// Offset just past the last intact record.
    valid_end: u64,
    /// Seqs missing between intact records around damage.
    lost: u64,
}

/// The directory of `host_id`'s spool under the spool directory. The prefix
/// keeps host ids like ".." inside it.
fn host_dir(base: &Path, host_id: &str) -> PathBuf {
    base.join(format!("host-{host_id}"))
}

/// Opens the spool of `host_id` in `config.dir`.
pub(super) fn open(
    mut config: SpoolConfig,
    host_id: &str,
) -> Result<(SpoolState, SpoolStart), SpoolError> {
    let base = config.dir.clone();
    if base.exists() && !base.is_dir() {
        return Err(SpoolError::NotADirectory(base));
    }
    let dir = host_dir(&base, host_id);
    config.dir = dir.clone();
    let unusable = |what, source| SpoolError::Unusable {
        path: dir.clone(),
        what,
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(SpoolError::NotADirectory(dir));
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotADirectory {
            SpoolError::NotADirectory(base.clone())
        } else {
            unusable("cannot create it", e)
        }
    })?;
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
        .map_err(|e| unusable("cannot create its lock file", e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir)),
        Err(std::fs::TryLockError::Error(e)) => return Err(unusable("cannot lock it", e)),
    }
    // Writable for real: a read-only mount or missing permission shows here,
    // at start-up, not at the first batch.
    let probe = dir.join("write-test");
    std::fs::write(&probe, b"ok").map_err(|e| unusable("cannot write to it", e))?;
    let _ = std::fs::remove_file(&probe);

    let mut ids = segment_ids(&dir).map_err(|e| unusable("cannot list it", e))?;
    let (mut ledger, resumed) = match SpoolLedger::load(&dir) {
        Ok(Some(ledger)) if ledger.host_id == host_id => (ledger, true),
        Ok(Some(ledger)) => {
            warn!(
                "spool: {} holds batches of host {:?}, this agent is host {:?}: deleting its {} segments and starting a new run",
                dir.display(),
                ledger.host_id,
                host_id,
                ids.len()
            );
            for id in ids.drain(..) {
                let _ = std::fs::remove_file(segment_path(&dir, id));
            }
            (new_ledger(host_id), false)
        }
        Ok(None) if ids.is_empty() => (new_ledger(host_id), false),
        Ok(None) => {
            error!(
                "spool: {} is missing while {} segments are present: starting a NEW run id; the spooled batches are sent again under it",
                ledger_path(&dir).display(),
                ids.len()
            );
            (new_ledger(host_id), false)
        }
        Err(e) => {
            error!(
                "spool: ledger damaged ({e}): starting a NEW run id; the {} spooled segments are kept and their batches sent again under it",
                ids.len()
            );
            (new_ledger(host_id), false)
        }
    };
    if !resumed {
        // What a previous run counted is unknown or belongs to another host.
        ledger.acked_seq = 0;
    }

    let mut segments = VecDeque::new();
    let mut highest = 0u64;
    let mut lost = 0u64;
    let newest = ids.last().copied();
    for &id in &ids {
        let path = segment_path(&dir, id);
        let scanned = scan(&path, highest).map_err(|e| unusable("cannot read a segment", e))?;
        if scanned.damaged_bytes > 0 {
            warn!(
                "spool: {} is damaged: skipped {} bytes, kept every intact record",
                path.display(),
                scanned.damaged_bytes
            );
        }
        lost += scanned.lost;
        let Some(mut summary) = scanned.summary else {
            continue;
        };
        if Some(id) == newest && summary.bytes > scanned.valid_end {
            // A torn tail (crash mid-write): cut it so appends start clean.
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| unusable("cannot repair a segment", e))?;
            file.set_len(scanned.valid_end)
                .map_err(|e| unusable("cannot repair a segment", e))?;
            summary.bytes = scanned.valid_end;
        }
        highest = highest.max(summary.seqs.last().unwrap_or(0));
        segments.push_back(summary);
    }
    ledger.dropped_batches += lost;

    // Empty or fully acknowledged old segments go now; the newest stays as
    // the active segment.
    while segments.len() > 1
        && segments
            .front()
            .is_some_and(|s: &SegmentSummary| s.seqs.last().is_none_or(|l| l <= ledger.acked_seq))
    {
        if let Some(old) = segments.pop_front() {
            let _ = std::fs::remove_file(segment_path(&dir, old.id));
        }
    }
    let active = match segments.back() {
        Some(s) if s.bytes < config.segment_bytes => OpenOptions::new()
            .append(true)
            .open(segment_path(&dir, s.id))
            .map_err(|e| unusable("cannot open a segment", e))?,
        _ => {
            let id = ids.last().map_or(1, |id| id + 1);
            segments.push_back(SegmentSummary::new(id));
            create_segment(&dir, id).map_err(|e| unusable("cannot create a segment", e))?
        }
    };
    let next_segment_id = segments.back().map_or(1, |s| s.id + 1);

    // The run id is on disk before any batch is sent under it.
    ledger
        .store(&dir)
        .map_err(|e| unusable("cannot write its ledger", e))?;
    let acked = ledger.acked_seq;
    let next_seq = highest.max(acked) + 1;
    let now = Instant::now();
    let state = SpoolState {
        ledger_written: now,
        acked,
        dropped: ledger.dropped_batches,
        ledger,
        segments,
        next_segment_id,
        active: Some(active),
        unsynced: false,
        synced: now,
        last_pushed: next_seq - 1,
        cache: VecDeque::new(),
        cache_bytes: 0,
        cache_from: next_seq,
        rejected: BTreeSet::new(),
        reader: None,
        last_error: None,
        _lock: lock,
        config,
    };
    let unacked = state.stats().batches as u64;
    let start = SpoolStart {
        run_id: state.ledger.run_id,
        next_seq,
        unacked,
        resumed,
        dir: state.config.dir.clone(),
    };
    info!(
        "spool: {} run_id={:016x} ({}), {} unacknowledged batches ({} bytes) to send, next seq {}",
        dir.display(),
        start.run_id,
        if resumed { "resumed" } else { "new" },
        unacked,
        state.stats().bytes,
        next_seq
    );
    Ok((state, start))
}

fn new_ledger(host_id: &str) -> SpoolLedger {
    SpoolLedger {
        host_id: host_id.to_string(),
        run_id: fastrand::u64(1..),
        acked_seq: 0,
        dropped_batches: 0,
    }
}

/// Segment ids in `dir`, ascending.
fn segment_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(segment_id) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn create_segment(dir: &Path, id: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(segment_path(dir, id))?;
    super::ledger::sync_dir(dir)?;
    Ok(file)
}

/// Scans one segment: its intact records with seqs above `floor` (records
/// at or below it, out of order, are damage that happened to checksum).
fn scan(path: &Path, floor: u64) -> std::io::Result<ScannedSegment> {
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(segment_id)
        .unwrap_or(0);
    let mut reader = SegmentReader::open(path)?;
    let mut summary = SegmentSummary::new(id);
    summary.bytes = reader.len();
    let mut out = ScannedSegment::default();
    let mut pos = 0u64;
    let mut last = floor;
    while let Some(record) = reader.next_record(pos)? {
        out.damaged_bytes += record.skipped;
        pos = record.end;
        if record.seq <= last {
            out.damaged_bytes += record.end - record.start;
            continue;
        }
        if record.skipped > 0 && last > 0 {
            out.lost += record.seq - last - 1;
        }
        last = record.seq;
        summary.seqs.push(record.seq);
        out.valid_end = record.end;
    }
    out.damaged_bytes += reader.len() - pos;
    out.summary = Some(summary);
    Ok(out)
}
