//! Segment files and their framing.
//!
//! A segment is an append-only file `<id>.seg` (20 decimal digits, so names
//! sort like ids) holding records back to back, each framed as
//!
//! ```text
//! len u32 LE | crc32 u32 LE | protobuf-encoded Batch (len bytes)
//! ```
//!
//! with the CRC-32 (IEEE, `crc32fast`) of the payload. Reading never trusts a
//! frame: a record counts only if its length fits the file, its checksum
//! matches and its payload starts with a non-zero `seq` (field 1, which prost
//! writes first). After a frame that fails, the reader moves one byte on and
//! tries again, so a torn write or flipped bits lose the damaged record and
//! nothing after it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Bytes before each record's payload: length and checksum.
pub(super) const FRAME_HEADER_BYTES: u64 = 8;
/// Largest payload accepted when reading (the largest message the agent sends).
const MAX_PAYLOAD_BYTES: u32 = nodewatch_proto::MAX_MESSAGE_BYTES as u32;
/// The protobuf key of `Batch.seq` (field 1, varint).
const SEQ_KEY: u8 = 0x08;
/// Bytes read ahead when scanning, so that a sequential scan (and the resync
/// after damage) costs one `pread` per window, not one per record or byte.
const WINDOW_BYTES: usize = 256 * 1024;
/// File name suffix of segments.
const SUFFIX: &str = ".seg";

/// The path of segment `id` in `dir`.
pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

/// The id of a segment file name, `None` for any other file.
pub(super) fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One framed record: header and payload, ready for one `write`.
pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEADER_BYTES as usize);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The `seq` a record payload starts with, if it starts with one.
pub(super) fn peek_seq(payload: &[u8]) -> Option<u64> {
    let (&key, rest) = payload.split_first()?;
    if key != SEQ_KEY {
        return None;
    }
    let mut value = 0u64;
    for (i, &b) in rest.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value > 0).then_some(value);
        }
    }
    None
}

/// An intact record found by [`SegmentReader::next_record`].
#[derive(Debug)]
pub(super) struct FoundRecord<'a> {
    /// Offset of the frame in the segment.
    pub start: u64,
    /// Offset just past the record.
    pub end: u64,
    /// The batch's seq.
    pub seq: u64,
    /// Damaged bytes skipped between the requested position and `start`.
    pub skipped: u64,
    /// The encoded batch.
    pub payload: &'a [u8],
}

/// Reads records out of one segment file through a read-ahead window.
#[derive(Debug)]
pub(super) struct SegmentReader {
    file: File,
    len: u64,
    window: Vec<u8>,
    window_at: u64,
}

impl SegmentReader {
    /// Opens `path` for reading; its length is taken now.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            window: Vec::new(),
            window_at: 0,
        })
    }

    /// Length of the file when it was opened or last refreshed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Takes the file's current length (the writer may have appended since).
    pub fn refresh_len(&mut self) -> io::Result<()> {
        self.len = self.file.metadata()?.len();
        Ok(())
    }

    /// `len` bytes at `at`, from the window (refilled as needed); `None` past
    /// the end of the file.
    fn bytes(&mut self, at: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let end = at + len as u64;
        if end > self.len {
            return Ok(None);
        }
        let inside = at >= self.window_at && end <= self.window_at + self.window.len() as u64;
        if !inside {
            let want = (self.len - at).min(len.max(WINDOW_BYTES) as u64) as usize;
            self.window.resize(want, 0);
            self.file.read_exact_at(&mut self.window, at)?;
            self.window_at = at;
        }
        let from = (at - self.window_at) as usize;
        Ok(Some(&self.window[from..from + len]))
    }

    /// Whether an intact record starts at `at`; its payload length and seq if so.
    fn record_at(&mut self, at: u64) -> io::Result<Option<(u32, u64)>> {
        let Some(header) = self.bytes(at, FRAME_HEADER_BYTES as usize)? else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        // A batch holds at least its seq (2 bytes); cheap checks first, so
        // resyncing through damage rarely computes a checksum.
        if !(2..=MAX_PAYLOAD_BYTES).contains(&len) {
            return Ok(None);
        }
        let Some(payload) = self.bytes(at + FRAME_HEADER_BYTES, len as usize)? else {
            return Ok(None);
        };
        let Some(seq) = peek_seq(payload) else {
            return Ok(None);
        };
        if crc32fast::hash(payload) != crc {
            return Ok(None);
        }
        Ok(Some((len, seq)))
    }

    /// The first intact record at or after `pos`, skipping damaged bytes;
    /// `None` when none is left (the bytes from `pos` to the end, if any, are
    /// damage: a torn tail).
    pub fn next_record(&mut self, pos: u64) -> io::Result<Option<FoundRecord<'_>>> {
        let mut at = pos;
        while at + FRAME_HEADER_BYTES <= self.len {
            if let Some((len, seq)) = self.record_at(at)? {
                let start = at + FRAME_HEADER_BYTES;
                let payload = self
                    .bytes(start, len as usize)?
                    .expect("record_at checked the payload fits");
                return Ok(Some(FoundRecord {
                    start: at,
                    end: start + u64::from(len),
                    seq,
                    skipped: at - pos,
                    payload,
                }));
            }
            at += 1;
        }
        Ok(None)
    }
}
