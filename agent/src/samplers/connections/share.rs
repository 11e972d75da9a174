//! What the socket pass hands the process pass of the same cycle.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::sys::inthash::PidMap;

/// What the socket pass learnt about one process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidSockets {
    /// TCP sockets held, by state number.
    pub(crate) states: [u32; 13],
    /// Open descriptors (fd directory size), when the kernel reports it.
    pub(crate) fds: Option<u64>,
}

/// Results of the latest socket pass, shared with the process pass.
#[derive(Debug, Default)]
pub(crate) struct SocketPassShare {
    /// When the socket pass produced them.
    pub(crate) at: Option<Instant>,
    /// Per process.
    pub(crate) by_pid: PidMap<PidSockets>,
    /// Every pid of /proc as the socket pass listed it (ascending), when the
    /// listing was complete; the process pass of the same cycle reuses it
    /// instead of listing /proc again.
    pub(crate) pids: Option<Vec<u32>>,
}

/// Filled by the socket pass and read by the process pass.
pub(crate) type SocketsByPid = Arc<Mutex<SocketPassShare>>;
