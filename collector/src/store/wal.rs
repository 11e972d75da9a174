//! Write-ahead log: numbered segment files of checksummed records.
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`. A torn or
//! corrupt tail (from a crash mid-write) ends replay of that segment; everything
//! before it was fsynced before any append was acknowledged.
//!
//! Segment `n` holds the appends of flush generation `n`: once generation `n`'s
//! chunks are committed to the chunk database, segments `<= n` are deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nodewatch_proto::pb;

use super::StoreError;

/// What the framing adds to a batch in a record: host id (at most 256 bytes),
/// run id, receive time and protobuf tags, with room to spare.
pub const RECORD_OVERHEAD_BYTES: usize = 4096;

/// One logged append.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalRecord {
    /// Host id of the batch.
    #[prost(string, tag = "1")]
    pub host_id: String,
    /// Agent run id.
    #[prost(uint64, tag = "2")]
    pub run_id: u64,
    /// The batch as received.
    #[prost(message, optional, tag = "3")]
    pub batch: Option<pb::Batch>,
    /// Collector clock when the batch was received, Unix nanoseconds.
    #[prost(int64, tag = "4")]
    pub received_unix_nano: i64,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// The open log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    segment: u64,
    bytes: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.wal"))
}

/// Segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io("read_dir wal"))? {
        let e = e.map_err(io("read_dir wal"))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What replaying one segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SegmentRead {
    /// Every intact record, in order.
    pub records: Vec<Vec<u8>>,
    /// The segment ends in an incomplete record (a crash mid-write).
    pub torn: bool,
    /// Records (or stretches of bytes) skipped because they failed their
    /// checksum in the middle of the segment; the records after them are kept.
    pub corrupt: usize,
}

/// Whether a valid record starts at `pos`: its length is within `max` and the
/// file, and its payload matches the checksum.
fn record_at(data: &[u8], pos: usize, max: usize) -> Option<usize> {
    let header = data.get(pos..pos + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > max {
        return None;
    }
    let payload = data.get(pos + 8..pos + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(len)
}

/// Reads every intact record of segment `n` (records longer than
/// `max_record_bytes` are damage, not data). A damaged record in the middle is
/// skipped, and reading resumes at the next intact record; damage with no
/// intact record after it is a torn tail.
pub fn read_segment(
    dir: &Path,
    n: u64,
    max_record_bytes: usize,
) -> Result<SegmentRead, StoreError> {
    let mut data = Vec::new();
    File::open(segment_path(dir, n))
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io("read wal segment"))?;
    let mut out = SegmentRead::default();
    let mut pos = 0;
    while pos < data.len() {
        if let Some(len) = record_at(&data, pos, max_record_bytes) {
            out.records.push(data[pos + 8..pos + 8 + len].to_vec());
            pos += 8 + len;
            continue;
        }
        // Damage: find the next intact record, if any.
        match (pos + 1..data.len()).find(|&p| record_at(&data, p, max_record_bytes).is_some()) {
            Some(next) => {
                out.corrupt += 1;
                pos = next;
            }
            None => {
                out.torn = true;
                break;
            }
        }
    }
    Ok(out)
}

/// Appends a framed record to `buf`.
pub fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

impl Wal {
    /// Opens a new, empty segment `n` in `dir`.
    pub fn create(dir: &Path, n: u64) -> Result<Wal, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(segment_path(dir, n))
            .map_err(io("create wal segment"))?;
        // Make the new file's directory entry durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync wal dir"))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            file,
            segment: n,
            bytes: 0,
        })
    }

    /// Writes framed records and makes them durable (one fdatasync for the group).
    pub fn write_durable(&mut self, framed: &[u8]) -> Result<(), StoreError> {
        self.write(framed, true)
    }

    /// Writes framed records; with `sync`, fdatasyncs them (once for the group).
    pub fn write(&mut self, framed: &[u8], sync: bool) -> Result<(), StoreError> {
        if framed.is_empty() {
            return Ok(());
        }
        self.file.write_all(framed).map_err(io("write wal"))?;
        if sync {
            self.file.sync_data().map_err(io("fdatasync wal"))?;
        }
        self.bytes += framed.len() as u64;
        Ok(())
    }

    /// Cuts off whatever a failed write left after the last successful one,
    /// so the segment ends with complete, durable records.
    pub fn discard_unsynced(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(self.bytes)
            .map_err(io("trim wal segment"))?;
        self.file
            .seek(SeekFrom::Start(self.bytes))
            .map_err(io("seek wal segment"))?;
        Ok(())
    }

    /// Current segment number.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Bytes in the current segment.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Closes the current segment and opens segment `current + 1`.
    pub fn rotate(&mut self) -> Result<(), StoreError> {
        let next = Wal::create(&self.dir, self.segment + 1)?;
        *self = next;
        Ok(())
    }

    /// Deletes segments numbered `<= upto`.
    pub fn remove_through(&self, upto: u64) -> Result<(), StoreError> {
        for n in segments(&self.dir)? {
            if n <= upto && n != self.segment {
                fs::remove_file(segment_path(&self.dir, n)).map_err(io("remove wal segment"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_ignored_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 3).unwrap();
        let mut buf = Vec::new();
        frame(&mut buf, b"one");
        frame(&mut buf, b"two");
        w.write_durable(&buf).unwrap();
        // A torn third record: header promises more than is there.
        let mut torn = Vec::new();
        frame(&mut torn, b"three-three");
        torn.truncate(torn.len() - 4);
        w.write_durable(&torn).unwrap();
        let r = read_segment(dir.path(), 3, 1024).unwrap();
        assert_eq!(r.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(r.torn);
        assert_eq!(r.corrupt, 0);

        // A flipped bit fails the first record's checksum: it is skipped, the
        // second is kept.
        let path = segment_path(dir.path(), 3);
        let clean = fs::read(&path).unwrap();
        let mut data = clean.clone();
        data[9] ^= 1;
        fs::write(&path, &data).unwrap();
        let r = read_segment(dir.path(), 3, 1024).unwrap();
        assert_eq!(r.records, vec![b"two".to_vec()]);
        assert_eq!((r.corrupt, r.torn), (1, true));

        // A damaged length: reading resumes at the next intact record.
        let mut data = clean.clone();
        data[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&path, &data).unwrap();
        let r = read_segment(dir.path(), 3, 1024).unwrap();
        assert_eq!(r.records, vec![b"two".to_vec()]);
        assert_eq!(r.corrupt, 1);

        // A record longer than the limit is damage, not data.
        fs::write(&path, &clean).unwrap();
        let r = read_segment(dir.path(), 3, 2).unwrap();
        assert!(r.records.is_empty());
        assert!(r.torn);

        // Garbage only: nothing, no panic.
        fs::write(&path, [0xffu8; 100]).unwrap();
        let r = read_segment(dir.path(), 3, 1024).unwrap();
        assert!(r.records.is_empty());
        fs::write(&path, &clean).unwrap();

        w.rotate().unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![3, 4]);
        w.remove_through(3).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![4]);
    }
}
