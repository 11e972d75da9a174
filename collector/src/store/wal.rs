//! Write-ahead log: numbered segment files of checksummed records.
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`. A torn or
//! corrupt tail (from a crash mid-write) ends replay of that segment; everything
//! before it was fsynced before any append was acknowledged.
//!
//! Segment `n` holds the appends of flush generation `n`: once generation `n`'s
//! chunks are committed to the chunk database, segments `<= n` are deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nodewatch_proto::pb;

use super::StoreError;

/// Largest record accepted on replay (guards allocation against a corrupt length).
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

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

/// Reads every intact record of segment `n`; returns them and whether the tail was torn.
pub fn read_segment(dir: &Path, n: u64) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
    let mut data = Vec::new();
    File::open(segment_path(dir, n))
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io("read wal segment"))?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        if data.len() - pos < 8 {
            return Ok((out, true));
        }
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD_BYTES || data.len() - pos - 8 < len {
            return Ok((out, true));
        }
        let payload = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            return Ok((out, true));
        }
        out.push(payload.to_vec());
        pos += 8 + len;
    }
    Ok((out, false))
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
        let (recs, torn_tail) = read_segment(dir.path(), 3).unwrap();
        assert_eq!(recs, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(torn_tail);

        // A flipped bit fails the checksum.
        let path = segment_path(dir.path(), 3);
        let mut data = fs::read(&path).unwrap();
        data[9] ^= 1;
        fs::write(&path, data).unwrap();
        let (recs, _) = read_segment(dir.path(), 3).unwrap();
        assert!(recs.is_empty());

        w.rotate().unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![3, 4]);
        w.remove_through(3).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![4]);
    }
}
