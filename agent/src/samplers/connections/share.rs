//! What the socket pass hands the process pass of the same cycle.
//!
//! The process pass trusts the pid listing and the descriptor counts only
//! when they are from its own cycle (younger than 500 ms); otherwise it lists
//! /proc and `fstat`s the fd directories itself. The sockets by state are
//! used whatever their age: with a socket pass slower than the process pass,
//! a process shows the states of the latest socket pass, and a process the
//! socket pass has not seen yet shows none.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys::inthash::PidMap;

/// Socket-pass results younger than this are from the same sampling cycle.
const SHARE_FRESH: Duration = Duration::from_millis(500);

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

impl SocketPassShare {
    /// Whether these results are from the sampling cycle of `now`.
    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        self.at
            .is_some_and(|at| now.saturating_duration_since(at) < SHARE_FRESH)
    }
}

/// Filled by the socket pass and read by the process pass.
pub(crate) type SocketsByPid = Arc<Mutex<SocketPassShare>>;
