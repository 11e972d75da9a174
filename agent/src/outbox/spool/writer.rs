//! The write side of the spool: appending records, rotating segments, the
//! size cap, syncing, and deleting segments once acknowledged.
//!
//! Every disk operation here runs on the caller of `push` (the sampling
//! thread) or of `sync`; `ack` and `reject` only change memory, so the gRPC
//! client never waits for an fsync it did not ask for.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::time::Instant;

use nodewatch_proto::pb;
use prost::Message as _;
use tracing::warn;

use super::ledger::sync_dir;
use super::segment::{frame, segment_path};
use super::summary::SegmentSummary;
use super::{CachedRecord, LEDGER_EVERY, SYNC_EVERY, SpoolState};
use crate::outbox::OutboxError;

impl SpoolState {
    /// Appends `batch`; returns how many batches were dropped to make room.
    pub(super) fn push(&mut self, batch: pb::Batch) -> u64 {
        let seq = batch.seq;
        debug_assert!(seq > self.last_pushed, "seqs only grow");
        self.last_pushed = self.last_pushed.max(seq);
        let payload = batch.encode_to_vec();
        let framed = frame(&payload);
        let size = framed.len() as u64;
        let dropped_before = self.dropped;

        if size > self.config.max_bytes {
            warn!(
                seq,
                bytes = size,
                "spool: batch larger than spool_max_bytes, dropping it"
            );
            self.dropped += 1;
            self.housekeeping();
            return 1;
        }
        self.make_room(size);
        let written = self.append(&framed, seq);
        self.cache_push(CachedRecord {
            seq,
            payload,
            on_disk: written,
        });
        self.housekeeping();
        self.dropped - dropped_before
    }

    /// Drops the oldest segments until `size` more bytes fit under the cap.
    fn make_room(&mut self, size: u64) {
        while self.total_bytes() + size > self.config.max_bytes {
            if self.segments.len() == 1 {
                // Only the active segment is left: start a new one so the
                // full one can go.
                if self.segments[0].bytes == 0 {
                    return;
                }
                self.rotate();
            }
            self.drop_oldest();
        }
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Deletes the oldest segment, counting its unacknowledged batches as dropped.
    fn drop_oldest(&mut self) {
        let Some(oldest) = self.segments.pop_front() else {
            return;
        };
        let lost = oldest.seqs.count_above(self.acked)
            - self
                .rejected
                .range(self.acked + 1..=oldest.seqs.last().unwrap_or(0))
                .count() as u64;
        if lost > 0 {
            if self.dropped == self.ledger.dropped_batches {
                warn!(
                    "spool full (spool_max_bytes = {}): dropping the oldest unacknowledged batches",
                    self.config.max_bytes
                );
            }
            self.dropped += lost;
        }
        if let Some(last) = oldest.seqs.last() {
            // Nothing at or below the dropped segment is sent any more.
            self.acked = self.acked.max(last);
            self.forget_through(last);
        }
        if self.reader.as_ref().is_some_and(|r| r.segment == oldest.id) {
            self.reader = None;
        }
        let path = segment_path(&self.config.dir, oldest.id);
        if let Err(e) = std::fs::remove_file(&path) {
            self.log_io_error(format!("cannot delete {}: {e}", path.display()));
        }
    }

    /// Appends one framed record to the active segment (rotating first when it
    /// is full); false when the write failed (the record then lives in memory only).
    fn append(&mut self, framed: &[u8], seq: u64) -> bool {
        let size = framed.len() as u64;
        let active_bytes = self.segments.back().map_or(0, |s| s.bytes);
        if self.active.is_none()
            || (active_bytes > 0 && active_bytes + size > self.config.segment_bytes)
        {
            self.rotate();
        }
        let Some(file) = self.active.as_mut() else {
            return false;
        };
        match file.write_all(framed) {
            Ok(()) => {
                let summary = self.segments.back_mut().expect("an active segment");
                summary.bytes += size;
                summary.seqs.push(seq);
                self.unsynced = true;
                true
            }
            Err(e) => {
                // Cut a partial record off so the segment stays clean; the
                // next push starts a new segment either way.
                let id = self.segments.back().map_or(0, |s| s.id);
                let _ = file.set_len(active_bytes);
                self.active = None;
                self.log_io_error(format!(
                    "cannot write {}: {e}; keeping batches in memory until writes succeed",
                    segment_path(&self.config.dir, id).display()
                ));
                false
            }
        }
    }

    /// Syncs and closes the active segment and starts the next one.
    fn rotate(&mut self) {
        self.sync_active();
        let id = self.next_segment_id;
        self.next_segment_id += 1;
        let path = segment_path(&self.config.dir, id);
        let opened = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .and_then(|f| sync_dir(&self.config.dir).map(|()| f));
        match opened {
            Ok(file) => {
                self.active = Some(file);
                self.segments.push_back(SegmentSummary::new(id));
                self.last_error = None;
            }
            Err(e) => {
                self.active = None;
                self.log_io_error(format!("cannot create {}: {e}", path.display()));
            }
        }
    }

    fn sync_active(&mut self) {
        if !self.unsynced {
            return;
        }
        if let Some(file) = &self.active
            && let Err(e) = file.sync_data()
        {
            self.log_io_error(format!("cannot sync segment: {e}"));
            return;
        }
        self.unsynced = false;
        self.synced = Instant::now();
    }

    /// Adds a record to the recent batches in memory, evicting the oldest
    /// beyond the bound.
    fn cache_push(&mut self, record: CachedRecord) {
        self.cache_bytes += record.payload.len();
        self.cache.push_back(record);
        while self.cache_bytes > self.config.memory_bytes && self.cache.len() > 1 {
            let Some(old) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= old.payload.len();
            self.cache_from = old.seq + 1;
            if !old.on_disk && old.seq > self.acked && !self.rejected.contains(&old.seq) {
                // Its write failed and memory was its only copy.
                self.dropped += 1;
            }
        }
    }

    /// Forgets cached records and refusals at or below `seq`.
    fn forget_through(&mut self, seq: u64) {
        while self.cache.front().is_some_and(|r| r.seq <= seq) {
            if let Some(r) = self.cache.pop_front() {
                self.cache_bytes -= r.payload.len();
            }
        }
        self.cache_from = self.cache_from.max(seq + 1);
        self.rejected = self.rejected.split_off(&(seq + 1));
    }

    /// Marks every batch up to `seq` as held by the collector.
    pub(super) fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        self.forget_through(seq);
    }

    /// Drops the batch `seq` (refused for good by the collector).
    pub(super) fn reject(&mut self, seq: u64) {
        if seq <= self.acked || seq > self.last_pushed || !self.rejected.insert(seq) {
            return;
        }
        self.dropped += 1;
        if let Some(pos) = self.cache.iter().position(|r| r.seq == seq)
            && let Some(r) = self.cache.remove(pos)
        {
            self.cache_bytes -= r.payload.len();
        }
    }

    /// Periodic work after a push: the once-a-second sync, the ledger, and
    /// deleting acknowledged segments.
    fn housekeeping(&mut self) {
        if self.unsynced && self.synced.elapsed() >= SYNC_EVERY {
            self.sync_active();
        }
        let front_done = self.segments.len() > 1
            && self.segments[0]
                .seqs
                .last()
                .is_none_or(|last| last <= self.acked);
        let stale =
            self.ledger.acked_seq != self.acked || self.ledger.dropped_batches != self.dropped;
        // A lagging acked seq only costs a few batches resent after a crash
        // (the collector's Welcome frees them again); a new drop count is
        // written sooner.
        let due = if self.ledger.dropped_batches == self.dropped {
            LEDGER_EVERY
        } else {
            SYNC_EVERY
        };
        if front_done || (stale && self.ledger_written.elapsed() >= due) {
            if stale && let Err(e) = self.write_ledger() {
                // Without the ledger on disk, deleting could forget the highest seq.
                self.log_io_error(e.to_string());
                return;
            }
            self.delete_acknowledged();
        }
    }

    /// Deletes fully acknowledged segments (never the active one). The ledger
    /// must already hold an acked seq at least as high as theirs, so that the
    /// highest seq survives their deletion.
    fn delete_acknowledged(&mut self) {
        while self.segments.len() > 1
            && self.segments[0]
                .seqs
                .last()
                .is_none_or(|l| l <= self.ledger.acked_seq)
        {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            if self.reader.as_ref().is_some_and(|r| r.segment == old.id) {
                self.reader = None;
            }
            let path = segment_path(&self.config.dir, old.id);
            if let Err(e) = std::fs::remove_file(&path) {
                self.log_io_error(format!("cannot delete {}: {e}", path.display()));
            }
        }
    }

    /// Writes the ledger with the current acked seq and dropped count.
    pub(super) fn write_ledger(&mut self) -> Result<(), OutboxError> {
        let mut ledger = self.ledger.clone();
        ledger.acked_seq = self.acked;
        ledger.dropped_batches = self.dropped;
        ledger
            .store(&self.config.dir)
            .map_err(|source| OutboxError::Ledger {
                path: self.config.dir.clone(),
                source,
            })?;
        self.ledger = ledger;
        self.ledger_written = Instant::now();
        Ok(())
    }

    /// Makes everything pushed durable: segment data, the ledger; then deletes
    /// what is acknowledged.
    pub(super) fn sync_all(&mut self) -> Result<(), OutboxError> {
        if self.unsynced
            && let Some(file) = &self.active
        {
            file.sync_data().map_err(|source| OutboxError::Sync {
                path: self.config.dir.clone(),
                source,
            })?;
            self.unsynced = false;
            self.synced = Instant::now();
        }
        self.write_ledger()?;
        self.delete_acknowledged();
        Ok(())
    }
}
