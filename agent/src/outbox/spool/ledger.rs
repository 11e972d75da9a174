//! The spool's persisted state: whose spool it is, its run id, how far the
//! collector has acknowledged and how many batches were dropped.
//!
//! One small binary file, `ledger`, replaced atomically (written to
//! `ledger.tmp`, fsynced, renamed over `ledger`, directory fsynced), so a crash
//! leaves either the old or the new ledger, never a mix:
//!
//! ```text
//! magic "NWLEDGER" | version u32 | run_id u64 | acked_seq u64 | dropped_batches u64
//! | host_id_len u16 | host_id | crc32 u32 (of everything before it)      all LE
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"NWLEDGER";
const VERSION: u32 = 1;
/// File name of the ledger in the spool directory.
const LEDGER_FILE: &str = "ledger";
/// File name of the ledger being written.
const LEDGER_TMP_FILE: &str = "ledger.tmp";
/// Longest host id kept (the collector's limit).
const MAX_HOST_ID_BYTES: usize = 64;

/// Why the ledger could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The ledger file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file's contents are not a ledger (truncated, flipped bits, another format).
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The spool's persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolLedger {
    /// The host the spooled batches belong to.
    pub host_id: String,
    /// The agent's run id: the sequence space of the spooled batches' seqs.
    pub run_id: u64,
    /// Highest seq the collector acknowledged as durable (may lag behind the
    /// collector: it is written at most once per second and before segments
    /// are deleted; the collector's `Welcome` corrects it).
    pub acked_seq: u64,
    /// Batches dropped since the spool was created.
    pub dropped_batches: u64,
}

/// The path of the ledger in `dir`.
pub fn ledger_path(dir: &Path) -> PathBuf {
    dir.join(LEDGER_FILE)
}

impl SpoolLedger {
    /// The ledger's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let host = self.host_id.as_bytes();
        let host = &host[..host.len().min(MAX_HOST_ID_BYTES)];
        let mut out = Vec::with_capacity(48 + host.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.run_id.to_le_bytes());
        out.extend_from_slice(&self.acked_seq.to_le_bytes());
        out.extend_from_slice(&self.dropped_batches.to_le_bytes());
        out.extend_from_slice(&(host.len() as u16).to_le_bytes());
        out.extend_from_slice(host);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a ledger's bytes; `path` names the file in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, LedgerError> {
        let damaged = |reason| LedgerError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        const FIXED: usize = 8 + 4 + 8 + 8 + 8 + 2;
        if bytes.len() < FIXED + 4 {
            return Err(damaged("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(damaged("checksum mismatch"));
        }
        if &body[..8] != MAGIC {
            return Err(damaged("not a spool ledger"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if version != VERSION {
            return Err(damaged("unknown version"));
        }
        let host_len = usize::from(u16::from_le_bytes([body[36], body[37]]));
        if body.len() != FIXED + host_len {
            return Err(damaged("wrong length"));
        }
        let host_id = std::str::from_utf8(&body[FIXED..])
            .map_err(|_| damaged("host id is not UTF-8"))?
            .to_string();
        let run_id = u64_at(12);
        if run_id == 0 {
            return Err(damaged("run id 0"));
        }
        Ok(Self {
            host_id,
            run_id,
            acked_seq: u64_at(20),
            dropped_batches: u64_at(28),
        })
    }

    /// Reads the ledger of `dir`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, LedgerError> {
        let path = ledger_path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes, &path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LedgerError::Read { path, source }),
        }
    }

    /// Replaces the ledger of `dir` atomically and durably.
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(LEDGER_TMP_FILE);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&self.encode())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, ledger_path(dir))?;
        sync_dir(dir)
    }
}

/// Makes the directory's entries (created, renamed, deleted files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
