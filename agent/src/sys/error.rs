//! The error of reading the host (files, system calls, netlink); samplers
//! return it as `SamplerError`.

use std::path::PathBuf;

/// Why reading the host failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content did not have the expected shape.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Os {
        /// The call, e.g. "statvfs" or "sendmsg".
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A netlink reply was malformed or reported an error.
    #[error("netlink: {0}")]
    Netlink(&'static str),
}
