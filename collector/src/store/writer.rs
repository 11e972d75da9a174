//! The single writer thread: drains queued appends into commit groups (one
//! WAL write and one fsync per group), applies them to the head, answers the
//! waiting appends, and triggers cuts and retention.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nodewatch_proto::pb;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::append::{apply, prepare};
use super::compact::{cut, enforce_retention};
use super::head::{Head, lock};
use super::wal::Wal;
use super::{Appended, Shared, StoreError};

/// Most appends committed with one fsync.
pub(super) const MAX_GROUP: usize = 1024;

pub(super) enum WriterMsg {
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

pub(super) fn writer_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<WriterMsg>,
    mut wal: Wal,
    mut flushed: u64,
) {
    let mut last_cut = Instant::now();
    let mut last_retention: Option<Instant> = None;
    // A failed write could not be trimmed off the segment: continue in a new one.
    let mut need_rotate = false;
    let c = &shared.counters;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        if need_rotate {
            match wal.rotate() {
                Ok(()) => need_rotate = false,
                Err(e) => debug!(error = %e, "cannot start a new wal segment yet"),
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
            // Nothing of this group is acknowledged: agents keep and resend it.
            // The next group tries again, so ingest resumes by itself once the
            // disk has room (or works) again.
            c.wal_write_errors.fetch_add(1, Ordering::Relaxed);
            if !shared.failing.swap(true, Ordering::Relaxed) {
                warn!(
                    error = %e,
                    "wal write failed; ingest answers UNAVAILABLE (agents keep their batches) until a write succeeds"
                );
            }
            if let Err(e) = wal.discard_unsynced() {
                warn!(error = %e, "cannot trim the failed write from the wal segment; the next write starts a new one");
                need_rotate = true;
            }
            let mut head = lock(&shared.head);
            for (reply, p) in pending {
                if let Some((host_id, run_id, ..)) = p {
                    rollback(&mut head, &host_id, run_id);
                }
                let _ = reply.send(Err(StoreError::Unavailable));
            }
            continue;
        }
        if !framed.is_empty() {
            c.wal_syncs.fetch_add(1, Ordering::Relaxed);
            if shared.failing.swap(false, Ordering::Relaxed) {
                info!("wal writes succeed again; ingest resumes");
            }
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
        let (head_bytes, wal_bytes, cut_requested) = {
            let head = lock(&shared.head);
            (head.open_bytes as u64, wal.bytes(), head.cut_requested)
        };
        if !force_cut.is_empty()
            || cut_requested
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

/// Starts the writer thread, and a ticker thread that drives time-based cuts
/// and retention while no batch arrives.
pub(super) fn spawn(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<WriterMsg>,
    weak: mpsc::WeakSender<WriterMsg>,
    wal: Wal,
    flushed: u64,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let writer = std::thread::Builder::new()
        .name("nodewatch-store".into())
        .spawn(move || writer_loop(shared, rx, wal, flushed))
        .map_err(|source| StoreError::Io {
            op: "spawn store writer",
            source,
        })?;
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
    Ok(writer)
}

/// Forgets that a run's batches of a failed group were accepted: they were
/// never applied nor acknowledged, and must be taken when the agent resends them.
fn rollback(head: &mut Head, host_id: &str, run_id: u64) {
    if let Some(h) = head.hosts.get_mut(host_id) {
        if let Some(r) = h.runs.get_mut(&run_id) {
            r.accepted = r.durable.clone();
        }
        h.rollback_lanes();
    }
}
