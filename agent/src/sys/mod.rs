//! OS plumbing the samplers and the eBPF tracer share: kept-open /proc files
//! and their byte parsers, the /proc directory and per-process files, socket
//! descriptors, netlink `sock_diag`, mountinfo, resource limits, `sysconf`
//! values and the hasher of pid-keyed maps.
//!
//! Nothing here depends on the rest of the crate.

pub(crate) mod error;
pub(crate) mod fdscan;
pub(crate) mod inthash;
pub(crate) mod mountinfo;
pub(crate) mod procdir;
pub(crate) mod procfile;
pub(crate) mod rlimit;
pub(crate) mod sockdiag;
pub(crate) mod sysconf;

pub use error::SysError;
