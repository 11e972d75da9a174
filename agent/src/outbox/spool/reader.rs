//! The read side of the spool: the oldest batch not yet sent, from the recent
//! batches in memory when they cover it, else from its segment file, read in
//! order from where the previous read stopped (a backlog replays as one
//! sequential scan).

use nodewatch_proto::pb;
use prost::Message as _;

use super::segment::{SegmentReader, segment_path};
use super::{ReadCursor, SpoolState};

impl SpoolState {
    /// The oldest batch with seq > `after` that is neither acknowledged nor refused.
    pub(super) fn next_after(&mut self, after: u64) -> Option<pb::Batch> {
        let after = after.max(self.acked);
        if after + 1 >= self.cache_from {
            return self.next_cached(after);
        }
        match self.next_on_disk(after) {
            Some(batch) => Some(batch),
            // Nothing left on disk above `after`: what follows is in memory.
            None => self.next_cached(after),
        }
    }

    fn next_cached(&self, after: u64) -> Option<pb::Batch> {
        self.cache
            .iter()
            .filter(|r| r.seq > after && !self.rejected.contains(&r.seq))
            .find_map(|r| pb::Batch::decode(r.payload.as_slice()).ok())
    }

    fn next_on_disk(&mut self, mut after: u64) -> Option<pb::Batch> {
        loop {
            let (segment, last) = self.segments.iter().find_map(|s| {
                s.seqs
                    .last()
                    .filter(|&last| last > after)
                    .map(|last| (s.id, last))
            })?;
            match self.scan_segment(segment, after) {
                Ok(Some(batch)) => return Some(batch),
                // Only skipped or refused records above `after` here: go on
                // with the next segment, unless memory covers the rest.
                Ok(None) => {
                    if last >= self.cache_from {
                        return None;
                    }
                    after = last;
                }
                Err(e) => {
                    // An unreadable segment would stop the replay for good:
                    // count its batches as dropped and go on without it.
                    let path = segment_path(&self.config.dir, segment);
                    self.log_io_error(format!(
                        "cannot read {}: {e}; dropping its batches",
                        path.display()
                    ));
                    if let Some(pos) = self.segments.iter().position(|s| s.id == segment) {
                        let lost = self.segments[pos].seqs.count_above(after);
                        self.dropped += lost;
                        if pos + 1 == self.segments.len() {
                            // The active segment: keep appending, stop reading it.
                            self.segments[pos].seqs = Default::default();
                        } else {
                            self.segments.remove(pos);
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                    self.reader = None;
                }
            }
        }
    }

    /// The first record of `segment` above `after` that is neither refused
    /// nor undecodable, continuing from the cursor when it is at or before it.
    fn scan_segment(&mut self, segment: u64, after: u64) -> std::io::Result<Option<pb::Batch>> {
        let reusable = self
            .reader
            .as_ref()
            .is_some_and(|r| r.segment == segment && r.seq <= after);
        let mut cursor = match self.reader.take() {
            Some(mut cursor) if reusable => {
                cursor.reader.refresh_len()?;
                cursor
            }
            _ => ReadCursor {
                segment,
                pos: 0,
                seq: 0,
                reader: SegmentReader::open(&segment_path(&self.config.dir, segment))?,
            },
        };
        let mut found = None;
        while let Some(record) = cursor.reader.next_record(cursor.pos)? {
            let (end, seq) = (record.end, record.seq);
            let batch = (seq > after && !self.rejected.contains(&seq))
                .then(|| pb::Batch::decode(record.payload).ok())
                .flatten();
            cursor.pos = end;
            cursor.seq = seq;
            if batch.is_some() {
                found = batch;
                break;
            }
        }
        self.reader = Some(cursor);
        Ok(found)
    }
}
