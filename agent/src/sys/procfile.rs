//! Kept-open /proc and /sys files re-read with `pread` into a reused buffer,
//! and the small allocation-free parsers the samplers share.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::error::SysError;

/// Largest file content a [`ProcFile`] buffers, bytes. /proc/stat of a
/// 1,024-CPU host is ~150 KiB; nothing the samplers read comes close.
pub(crate) const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// A /proc (or /sys) file opened once and re-read from offset 0 on every sample.
/// The read buffer grows to the file's size once and is reused afterwards.
#[derive(Debug)]
pub(crate) struct ProcFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl ProcFile {
    /// Opens `path` for repeated reads.
    pub(crate) fn open(path: impl Into<PathBuf>) -> Result<Self, SysError> {
        let path = path.into();
        let file = File::open(&path).map_err(|source| SysError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Self::from_file(path, file))
    }

    /// Wraps an already opened file.
    pub(crate) fn from_file(path: PathBuf, file: File) -> Self {
        Self {
            path,
            file,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole current content.
    pub(crate) fn read(&mut self) -> Result<&[u8], SysError> {
        read_whole(&self.file, &mut self.buf).map_err(|source| SysError::Read {
            path: self.path.clone(),
            source,
        })?;
        Ok(&self.buf)
    }
}

/// Reads all of `file` from offset 0 into `buf` (cleared first) with `pread`,
/// growing `buf` up to [`MAX_FILE_BYTES`].
pub(crate) fn read_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    if buf.capacity() == 0 {
        buf.reserve(4096);
    }
    loop {
        let len = buf.len();
        if len == buf.capacity() {
            if len >= MAX_FILE_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "file larger than the sampler's read limit",
                ));
            }
            buf.reserve(len.max(4096));
        }
        let spare = buf.spare_capacity_mut();
        // SAFETY: `u8` has no invalid bit patterns and `read_at` only writes into
        // the slice; the bytes it reports as read are then initialised.
        let spare: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), spare.len()) };
        let n = loop {
            match file.read_at(spare, len as u64) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(());
        }
        let short = n < spare.len();
        // SAFETY: `read_at` initialised `n` more bytes after `len`.
        unsafe { buf.set_len(len + n) };
        // A seq_file (every /proc and /sys file read here) fills the caller's
        // buffer until its end, so a short read is the end: skip the extra
        // `pread` that would only return 0.
        if short {
            return Ok(());
        }
    }
}

/// Splits `s` at ASCII whitespace, skipping empty fields.
pub(crate) fn fields(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

/// Parses an unsigned decimal integer (no sign, no spaces).
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses a signed decimal integer.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', rest)) => parse_u64(rest)
            .and_then(|v| i64::try_from(v).ok())
            .map(|v| -v),
        _ => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Parses a decimal floating-point number such as `0.52`.
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Iterates the lines of `s` (without the newline).
pub(crate) fn lines(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// Value of a `Key:   1234 kB` line (meminfo / status style); the unit is ignored.
pub(crate) fn key_value(line: &[u8]) -> Option<(&[u8], u64)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let key = &line[..colon];
    let value = fields(&line[colon + 1..]).next()?;
    Some((key, parse_u64(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_f64(b"1.25"), Some(1.25));
    }

    #[test]
    fn key_value_ignores_units() {
        assert_eq!(
            key_value(b"MemTotal:        8039412 kB"),
            Some((&b"MemTotal"[..], 8_039_412))
        );
        assert_eq!(
            key_value(b"HugePages_Total:       0"),
            Some((&b"HugePages_Total"[..], 0))
        );
        assert_eq!(key_value(b"garbage"), None);
    }

    #[test]
    fn rereads_a_changing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let mut f = ProcFile::open(&path).unwrap();
        assert_eq!(f.read().unwrap(), b"one");
        let big = "x".repeat(10_000);
        std::fs::write(&path, &big).unwrap();
        assert_eq!(f.read().unwrap(), big.as_bytes());
        std::fs::write(&path, "two").unwrap();
        assert_eq!(f.read().unwrap(), b"two");
    }

    #[test]
    fn reads_real_proc_files() {
        let mut f = ProcFile::open("/proc/stat").unwrap();
        let first = f.read().unwrap().len();
        assert!(first > 0);
        assert!(f.read().unwrap().starts_with(b"cpu "));
    }
}
