//! Which process holds which socket, kept up to date incrementally.
//!
//! Reading every descriptor link of every process (what `ss -p` does) costs a
//! few microseconds per descriptor: tens of milliseconds on a host with 10k
//! sockets. Instead each process's socket inodes are cached with its
//! descriptor count, and a process is re-read only when:
//! - it is new (or its pid was reused: the kept-open fd directory of the old
//!   process then fails to stat);
//! - its number of open descriptors changed (`fstat` of its kept-open
//!   /proc/PID/fd gives the count in one call);
//! - a socket it was known to hold disappeared from the sock_diag dump;
//! - the periodic full refresh is due.
//!
//! If, after that, the dump still holds socket inodes nobody owns that were not
//! already unowned in the previous full scan (a socket swapped for another fd
//! at an unchanged count), every process is re-read. Inodes that stay unowned
//! after a full scan (kernel sockets, descriptors in flight) are remembered so
//! they do not force a full scan every pass.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use crate::samplers::SamplerError;
use crate::sys::fdscan::socket_inodes_of;
use crate::sys::inthash::PidMap;
use crate::sys::procdir::{fd_dir_size, is_denied, kernel_counts_fds, list_pids, open_fd_dir};

/// Bound on remembered unowned inodes.
const MAX_UNOWNED: usize = 65_536;

#[derive(Debug)]
struct ProcSockets {
    fd_dir: Option<File>,
    fd_count: u64,
    inodes: Vec<u32>,
    generation: u64,
}

/// Counters of one pass, for the bench and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnerPassStats {
    /// Processes whose descriptors were re-read.
    pub(crate) rescanned: u64,
    /// Whether every process was re-read.
    pub(crate) full_scan: bool,
    /// Processes whose descriptors could not be read (permission).
    pub(crate) permission_denied: u64,
    /// Processes tracked.
    pub(crate) processes: u64,
}

/// The incremental socket-owner cache.
#[derive(Debug)]
pub(crate) struct SocketOwners {
    proc_fd: File,
    procs: PidMap<ProcSockets>,
    /// The pids of the latest update, in /proc order.
    pids: Vec<u32>,
    /// Whether `pids` holds every process (not cut at `max_processes`).
    pids_complete: bool,
    /// Inodes nobody owned after the latest full scan, sorted.
    unowned: Vec<u32>,
    /// Per entry of the current dump's `alive`: some process holds it.
    owned: Vec<bool>,
    generation: u64,
    max_processes: usize,
    full_refresh: Duration,
    last_full: Option<Instant>,
    open_budget: usize,
    open_files: usize,
    scratch: Vec<u64>,
    /// The kernel reports the descriptor count as the fd directory's size (6.2+).
    counts_fds: bool,
}

impl SocketOwners {
    /// `open_budget`: how many fd directories may stay open.
    pub(crate) fn new(
        max_processes: usize,
        full_refresh: Duration,
        open_budget: usize,
    ) -> Result<Self, SamplerError> {
        Ok(Self {
            proc_fd: File::open("/proc").map_err(|source| SamplerError::Read {
                path: "/proc".into(),
                source,
            })?,
            procs: PidMap::default(),
            pids: Vec::new(),
            pids_complete: false,
            unowned: Vec::new(),
            owned: Vec::new(),
            generation: 0,
            max_processes,
            full_refresh,
            last_full: None,
            open_budget,
            open_files: 0,
            scratch: Vec::new(),
            counts_fds: kernel_counts_fds(),
        })
    }

    /// Re-reads one process; keeps only the inodes of `alive` (TCP sockets of
    /// the dump), so that Unix or UDP sockets never look like vanished sockets.
    fn rescan(&mut self, pid: u32, alive: &[u32], stats: &mut OwnerPassStats) {
        self.scratch.clear();
        match socket_inodes_of(self.proc_fd.as_raw_fd(), pid, &mut self.scratch) {
            Ok(_) => {
                stats.rescanned += 1;
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.inodes.clear();
                    p.inodes.extend(
                        self.scratch
                            .iter()
                            .filter_map(|&i| u32::try_from(i).ok())
                            .filter(|i| alive.binary_search(i).is_ok()),
                    );
                    p.inodes.sort_unstable();
                }
            }
            Err(e) => {
                if is_denied(&e) {
                    stats.permission_denied += 1;
                }
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.inodes.clear();
                }
            }
        }
    }

    /// Every pid listed by the latest update (ascending, as /proc lists
    /// them), or `None` when the list was cut at the process bound.
    pub(crate) fn pids(&self) -> Option<&[u32]> {
        self.pids_complete.then_some(self.pids.as_slice())
    }

    /// Sets `owned[k]` for every entry of `alive` some tracked process holds.
    fn mark_owned(&mut self, alive: &[u32]) {
        self.owned.clear();
        self.owned.resize(alive.len(), false);
        for p in self.procs.values() {
            for inode in &p.inodes {
                if let Ok(k) = alive.binary_search(inode) {
                    self.owned[k] = true;
                }
            }
        }
    }

    /// Whether some socket of `alive` is owned by nobody and was not unowned
    /// after the previous full scan.
    fn any_new_unowned(&self, alive: &[u32]) -> bool {
        alive
            .iter()
            .zip(&self.owned)
            .any(|(i, owned)| !owned && self.unowned.binary_search(i).is_err())
    }

    /// Open descriptors per tracked process as of the latest update (empty on
    /// kernels that do not report the count).
    pub(crate) fn fd_counts(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.procs
            .iter()
            .filter(|_| self.counts_fds)
            .map(|(pid, p)| (*pid, p.fd_count))
    }

    /// Refreshes the cache against `alive`, the inodes of the current dump
    /// (sorted), and calls `each(pid, inode)` for every socket each process holds.
    pub(crate) fn update(
        &mut self,
        alive: &[u32],
        now: Instant,
        mut each: impl FnMut(u32, u32),
    ) -> Result<OwnerPassStats, SamplerError> {
        let mut stats = OwnerPassStats::default();
        self.generation += 1;
        let generation = self.generation;
        let full_due = self
            .last_full
            .is_none_or(|at| now.duration_since(at) >= self.full_refresh);
        let is_alive = |inode: &u32| alive.binary_search(inode).is_ok();

        let mut pids = std::mem::take(&mut self.pids);
        pids.clear();
        self.pids_complete = list_pids(&mut pids, self.max_processes)?;

        for &pid in &pids {
            let known = self.procs.get(&pid);
            let size = known.and_then(|p| fd_dir_size(p.fd_dir.as_ref(), pid));
            let needs = match (known, size) {
                (Some(p), Some(size)) => {
                    full_due
                        || !self.counts_fds
                        || size != p.fd_count
                        || !p.inodes.iter().all(is_alive)
                }
                (Some(_), None) => {
                    // The process died, possibly replaced by a new one with the same pid.
                    if let Some(old) = self.procs.remove(&pid) {
                        self.open_files -= usize::from(old.fd_dir.is_some());
                    }
                    true
                }
                (None, _) => true,
            };
            if !self.procs.contains_key(&pid) {
                let fd_dir = if self.open_files < self.open_budget {
                    let d = open_fd_dir(&self.proc_fd, pid);
                    self.open_files += usize::from(d.is_some());
                    d
                } else {
                    None
                };
                let fd_count = match &fd_dir {
                    Some(d) => fd_dir_size(Some(d), pid).unwrap_or(0),
                    None => 0,
                };
                self.procs.insert(
                    pid,
                    ProcSockets {
                        fd_dir,
                        fd_count,
                        inodes: Vec::new(),
                        generation,
                    },
                );
            } else if let (Some(p), Some(size)) = (self.procs.get_mut(&pid), size) {
                p.fd_count = size;
            }
            if let Some(p) = self.procs.get_mut(&pid) {
                p.generation = generation;
            }
            if needs {
                self.rescan(pid, alive, &mut stats);
            }
        }
        // Forget processes that are gone (bounded state).
        let mut closed = 0;
        self.procs.retain(|_, p| {
            let keep = p.generation == generation;
            if !keep && p.fd_dir.is_some() {
                closed += 1;
            }
            keep
        });
        self.open_files -= closed;
        stats.processes = self.procs.len() as u64;

        // Unowned sockets that were not unowned before: fall back to a full scan.
        // `alive` is sorted: a flag per entry instead of a hash set.
        self.mark_owned(alive);
        let surprise = self.any_new_unowned(alive);
        if surprise && !full_due {
            for &pid in &pids {
                if self.procs.contains_key(&pid) {
                    self.rescan(pid, alive, &mut stats);
                }
            }
            self.mark_owned(alive);
        }
        if surprise || full_due {
            stats.full_scan = true;
            self.last_full = Some(now);
            self.unowned.clear();
            // Sorted, as `alive` is.
            self.unowned.extend(
                alive
                    .iter()
                    .zip(&self.owned)
                    .filter(|(_, owned)| !**owned)
                    .map(|(&i, _)| i)
                    .take(MAX_UNOWNED),
            );
        }
        // Every inode kept is alive: processes that were not re-read held
        // only live ones, re-read ones were filtered against `alive`.
        for (&pid, p) in &self.procs {
            for &inode in &p.inodes {
                each(pid, inode);
            }
        }
        self.pids = pids;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u32 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino() as u32
    }

    #[test]
    fn a_cut_listing_is_not_shared() {
        let mut owners = SocketOwners::new(1, Duration::from_secs(3600), 10).unwrap();
        owners.update(&[], Instant::now(), |_, _| {}).unwrap();
        assert_eq!(owners.pids(), None, "more than one process exists");
    }

    #[test]
    fn tracks_new_and_swapped_sockets() {
        let me = std::process::id();
        let mut owners = SocketOwners::new(100_000, Duration::from_secs(3600), 100_000).unwrap();
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ia = inode_of(&a);
        let mut alive = vec![ia];
        let mut mine = Vec::new();
        let s = owners
            .update(&alive, Instant::now(), |pid, i| {
                if pid == me {
                    mine.push(i)
                }
            })
            .unwrap();
        assert!(s.full_scan, "first pass reads everything");
        assert_eq!(mine, vec![ia]);
        let pids = owners.pids().expect("complete listing");
        assert!(pids.contains(&me));
        assert!(pids.windows(2).all(|w| w[0] < w[1]), "ascending");

        // Nothing changed here: most processes are not re-read (tests running
        // beside this one may change their own descriptors).
        let s = owners.update(&alive, Instant::now(), |_, _| {}).unwrap();
        assert!(s.rescanned < s.processes / 2, "{s:?}");

        // Close one socket and open another at the same descriptor count.
        drop(a);
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ib = inode_of(&b);
        alive = vec![ib];
        let mut mine = Vec::new();
        owners
            .update(&alive, Instant::now(), |pid, i| {
                if pid == me {
                    mine.push(i)
                }
            })
            .unwrap();
        assert_eq!(mine, vec![ib]);
    }
}
