//! Every process, keyed by (pid, start time): name, short command line, cgroup
//! and its memory limit, RSS (PSS at a slower cadence), CPU, threads, open fds
//! against the soft and hard RLIMIT_NOFILE, sockets by state.
//!
//! Cost model: per process and pass, one `pread` of the kept-open
//! /proc/PID/stat (which holds comm, times, threads, start time, vsize and RSS)
//! and one `fstat` of the kept-open /proc/PID/fd directory (its size is the
//! number of open descriptors, kernel 6.2+; older kernels fall back to counting
//! entries). cmdline, cgroup, uid and limits are read when a process is first
//! seen, when its name changes (exec), and at the PSS cadence.

mod cgroup;
mod parse;

use std::fs::File;
use std::time::{Duration, Instant};

use nodewatch_proto::pb;

use self::cgroup::{MemoryCgroup, MemoryLimits, memory_cgroup};
use self::parse::{
    PidStat, parse_cgroup, parse_fd_limits, parse_pid_stat, parse_pss, short_cmdline,
};
use super::connections::SocketsByPid;
use super::{CADENCE_SLACK, Sampler, SamplerError};
use crate::sys::inthash::PidMap;
use crate::sys::procdir::{fd_dir_size, is_denied, kernel_counts_fds, list_pids, open_pid_file};
use crate::sys::procfile::{fields, lines, parse_u64, read_whole};
use crate::sys::sockdiag::nonzero_states;
use crate::sys::sysconf::{page_size, ticks_per_second};

/// One tracked process.
#[derive(Debug)]
struct Tracked {
    start_time: u64,
    stat_file: Option<File>,
    fd_dir: Option<File>,
    stat: PidStat,
    cmdline: String,
    cgroup: String,
    /// Path used for the memory limit lookup, with its hierarchy.
    memory_cgroup: Option<MemoryCgroup>,
    uid: u32,
    fd_limits: (u64, u64),
    prev_ticks: Option<(u64, Instant)>,
    pss: u64,
    slow_refreshed: Option<Instant>,
    generation: u64,
}

/// Samples every process, keeping per-process files open across passes
/// within a descriptor budget.
#[derive(Debug)]
pub(crate) struct ProcessSampler {
    proc_fd: File,
    tracked: PidMap<Tracked>,
    /// The pids of the current pass (buffer reused across passes).
    pids: Vec<u32>,
    hz: f64,
    page_size: u64,
    cmdline_max: usize,
    max_processes: usize,
    pss_interval: Duration,
    last_pss: Option<Instant>,
    limits: MemoryLimits,
    sockets: SocketsByPid,
    generation: u64,
    open_budget: usize,
    open_files: usize,
    permission_denied: u64,
    buf: Vec<u8>,
    /// The kernel reports the descriptor count as the fd directory's size (6.2+).
    counts_fds: bool,
}

/// Number of entries of a directory (fallback for kernels before 6.2).
fn count_dir_entries(pid: u32) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u32)
        .unwrap_or(0)
}

impl ProcessSampler {
    /// Opens /proc and finds the cgroup hierarchies. `open_budget`: how many
    /// per-process files may stay open (two per process).
    pub(crate) fn new(
        cmdline_max: usize,
        max_processes: usize,
        pss_interval: Duration,
        open_budget: usize,
        sockets: SocketsByPid,
    ) -> Result<Self, SamplerError> {
        let proc_fd = File::open("/proc").map_err(|source| SamplerError::Read {
            path: "/proc".into(),
            source,
        })?;
        Ok(Self {
            proc_fd,
            tracked: PidMap::default(),
            pids: Vec::new(),
            hz: ticks_per_second(),
            page_size: page_size(),
            cmdline_max,
            max_processes,
            pss_interval,
            last_pss: None,
            limits: MemoryLimits::new(),
            sockets,
            generation: 0,
            open_budget,
            open_files: 0,
            permission_denied: 0,
            buf: Vec::with_capacity(4096),
            counts_fds: kernel_counts_fds(),
        })
    }

    fn read_small(&mut self, pid: u32, name: &str) -> Option<&[u8]> {
        match open_pid_file(&self.proc_fd, pid, name, libc::O_RDONLY) {
            Ok(f) => match read_whole(&f, &mut self.buf) {
                Ok(()) => Some(&self.buf),
                Err(e) => {
                    if is_denied(&e) {
                        self.permission_denied += 1;
                    }
                    None
                }
            },
            Err(e) => {
                if is_denied(&e) {
                    self.permission_denied += 1;
                }
                None
            }
        }
    }

    /// Re-reads the rarely changing parts: cmdline, cgroup, uid, fd limits.
    fn slow_refresh(&mut self, pid: u32, now: Instant) {
        let max = self.cmdline_max;
        let cmdline = self
            .read_small(pid, "cmdline")
            .map(|raw| short_cmdline(raw, max))
            .unwrap_or_default();
        let cgroups = self.read_small(pid, "cgroup").map(parse_cgroup);
        let uid = self.read_small(pid, "status").and_then(|s| {
            lines(s)
                .find(|l| l.starts_with(b"Uid:"))
                .and_then(|l| fields(&l[4..]).next().and_then(parse_u64))
        });
        let limits = self.read_small(pid, "limits").and_then(parse_fd_limits);
        let has_v1_memory = self.limits.has_v1_memory();
        let Some(t) = self.tracked.get_mut(&pid) else {
            return;
        };
        t.cmdline = if cmdline.is_empty() {
            format!("[{}]", t.stat.name)
        } else {
            cmdline
        };
        if let Some((v2, v1)) = cgroups {
            let memory = memory_cgroup(has_v1_memory, v2, v1);
            // The cgroup reported is the one the memory limit comes from: on
            // a hybrid host, the v1 memory cgroup, not the v2 path.
            t.cgroup = memory
                .as_ref()
                .map(|(_, p)| p.trim_start_matches('/').to_string())
                .unwrap_or_default();
            t.memory_cgroup = memory;
        }
        if let Some(uid) = uid {
            t.uid = u32::try_from(uid).unwrap_or(u32::MAX);
        }
        if let Some(l) = limits {
            t.fd_limits = l;
        }
        t.slow_refreshed = Some(now);
    }

    fn keep_open(&mut self, f: std::io::Result<File>) -> Option<File> {
        let f = f.ok()?;
        if self.open_files < self.open_budget {
            self.open_files += 1;
            Some(f)
        } else {
            None
        }
    }

    fn forget(&mut self, t: &Tracked) {
        self.open_files -= usize::from(t.stat_file.is_some()) + usize::from(t.fd_dir.is_some());
    }

    /// Samples one pid; `None` when it vanished or cannot be read.
    fn sample_pid(&mut self, pid: u32, now: Instant, pss_due: bool) -> Option<pb::ProcessStats> {
        let generation = self.generation;
        // Read stat: through the kept-open file when there is one.
        let mut stat = PidStat::default();
        let mut fresh = false;
        let existing = self.tracked.contains_key(&pid);
        let read_ok = if let Some(t) = self.tracked.get(&pid)
            && let Some(f) = &t.stat_file
        {
            read_whole(f, &mut self.buf).is_ok()
        } else {
            false
        };
        if read_ok {
            parse_pid_stat(&self.buf, &mut stat)?;
        }
        let reused = read_ok
            && self
                .tracked
                .get(&pid)
                .is_some_and(|t| t.start_time != stat.start_time);
        if !read_ok || reused {
            // New process, pid reuse, or no kept-open file (descriptor budget
            // spent, or the process died): open and read now.
            let file = match open_pid_file(&self.proc_fd, pid, "stat", libc::O_RDONLY) {
                Ok(f) => f,
                Err(e) => {
                    if is_denied(&e) {
                        self.permission_denied += 1;
                    }
                    return None;
                }
            };
            read_whole(&file, &mut self.buf).ok()?;
            parse_pid_stat(&self.buf, &mut stat)?;
            let same = self
                .tracked
                .get(&pid)
                .is_some_and(|t| t.start_time == stat.start_time && t.stat_file.is_none());
            if same {
                // The same process, tracked without a kept-open file: keep this
                // one if the budget allows now.
                if let Some(f) = self.keep_open(Ok(file))
                    && let Some(t) = self.tracked.get_mut(&pid)
                {
                    t.stat_file = Some(f);
                }
            } else {
                if existing && let Some(old) = self.tracked.remove(&pid) {
                    self.forget(&old);
                }
                if self.tracked.len() >= self.max_processes {
                    return None;
                }
                let stat_file = self.keep_open(Ok(file));
                let fd_dir = self.keep_open(open_pid_file(
                    &self.proc_fd,
                    pid,
                    "fd",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                ));
                self.tracked.insert(
                    pid,
                    Tracked {
                        start_time: stat.start_time,
                        stat_file,
                        fd_dir,
                        stat: PidStat::default(),
                        cmdline: String::new(),
                        cgroup: String::new(),
                        memory_cgroup: None,
                        uid: 0,
                        fd_limits: (0, 0),
                        prev_ticks: None,
                        pss: 0,
                        slow_refreshed: None,
                        generation,
                    },
                );
                fresh = true;
            }
        }
        let renamed = self
            .tracked
            .get(&pid)
            .is_some_and(|t| t.stat.name != stat.name);
        let stale = self.tracked.get(&pid).is_some_and(|t| {
            t.slow_refreshed
                .is_none_or(|at| now.duration_since(at) >= self.pss_interval)
        });
        if let Some(t) = self.tracked.get_mut(&pid) {
            t.stat = stat;
            t.generation = generation;
        }
        if fresh || renamed || stale {
            self.slow_refresh(pid, now);
        }
        let pss = if pss_due {
            self.read_small(pid, "smaps_rollup").and_then(parse_pss)
        } else {
            None
        };
        // Open descriptors: from the socket pass of this cycle when it ran,
        // else the size of the fd directory. Sockets by state: from the
        // latest socket pass, of whatever age.
        let (shared_fds, socket_states) = {
            let share = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = share.is_fresh(now);
            match share.by_pid.get(&pid) {
                Some(p) => (p.fds.filter(|_| fresh), Some(p.states)),
                None => (None, None),
            }
        };
        let open_fds = match shared_fds {
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None => {
                let t = self.tracked.get(&pid)?;
                let size = fd_dir_size(t.fd_dir.as_ref(), pid).unwrap_or(0);
                if size > 0 || self.counts_fds {
                    u32::try_from(size).unwrap_or(u32::MAX)
                } else {
                    count_dir_entries(pid)
                }
            }
        };
        let memory_key = self.tracked.get(&pid)?.memory_cgroup.clone();
        let memory_max = memory_key.and_then(|k| self.limits.limit(&k));
        let sockets: Vec<pb::ProcessSocketCount> = socket_states
            .map(|counts| {
                nonzero_states(&counts)
                    .map(|(state, count)| pb::ProcessSocketCount {
                        state: state.to_string(),
                        count,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (hz, page) = (self.hz, self.page_size);
        let t = self.tracked.get_mut(&pid)?;
        if let Some(p) = pss {
            t.pss = p;
        }
        let ticks = t.stat.utime + t.stat.stime;
        let cpu_ratio = match t.prev_ticks {
            Some((prev, at)) if ticks >= prev => {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    (ticks - prev) as f64 / hz / secs
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        t.prev_ticks = Some((ticks, now));
        Some(pb::ProcessStats {
            pid,
            start_time_ticks: t.start_time,
            ppid: t.stat.ppid,
            name: t.stat.name.clone(),
            cmdline: t.cmdline.clone(),
            cgroup: t.cgroup.clone(),
            rss_bytes: t.stat.rss_pages * page,
            pss_bytes: if pss_due { t.pss } else { 0 },
            vsize_bytes: t.stat.vsize,
            user_seconds: t.stat.utime as f64 / hz,
            system_seconds: t.stat.stime as f64 / hz,
            cpu_ratio,
            threads: t.stat.threads,
            open_fds,
            fd_limit_soft: t.fd_limits.0,
            fd_limit_hard: t.fd_limits.1,
            cgroup_memory_max: memory_max,
            uid: t.uid,
            sockets,
        })
    }
}

impl Sampler for ProcessSampler {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError> {
        let now = Instant::now();
        self.generation += 1;
        self.limits.clear();
        let pss_due = self
            .last_pss
            .is_none_or(|at| now.duration_since(at) + CADENCE_SLACK >= self.pss_interval);
        if pss_due {
            self.last_pss = Some(now);
        }
        // The pids to visit: the socket pass of this cycle listed /proc
        // already; otherwise list it here.
        let mut pids = std::mem::take(&mut self.pids);
        pids.clear();
        {
            let share = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            if share.is_fresh(now)
                && let Some(listed) = &share.pids
            {
                pids.extend_from_slice(listed);
            }
        }
        if pids.is_empty() {
            list_pids(&mut pids, usize::MAX)?;
        }
        let mut complete = true;
        for &pid in &pids {
            if batch.processes.len() >= self.max_processes {
                complete = false;
                break;
            }
            if let Some(p) = self.sample_pid(pid, now, pss_due) {
                batch.processes.push(p);
            }
        }
        self.pids = pids;
        // Forget processes that are gone (bounded state).
        let generation = self.generation;
        let gone: Vec<u32> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.generation != generation)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(t) = self.tracked.remove(&pid) {
                self.forget(&t);
            }
        }
        batch.processes_complete = complete;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_descriptor_budget_the_same_process_keeps_its_history() {
        let mut s = ProcessSampler::new(
            256,
            100_000,
            Duration::from_secs(3600),
            0,
            SocketsByPid::default(),
        )
        .unwrap();
        let me = std::process::id();
        let mut b = pb::Batch::default();
        s.sample(&mut b).unwrap();
        assert_eq!(s.open_files, 0, "nothing kept open");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let mut b = pb::Batch::default();
        s.sample(&mut b).unwrap();
        let p = b.processes.iter().find(|p| p.pid == me).unwrap();
        assert!(
            p.cpu_ratio > 0.0,
            "the delta survived without kept-open files"
        );
        assert!(p.fd_limit_soft > 0);
    }

    #[test]
    fn visits_the_pids_the_socket_pass_listed_in_this_cycle() {
        let me = std::process::id();
        let sockets = SocketsByPid::default();
        let mut s = ProcessSampler::new(
            256,
            100_000,
            Duration::from_secs(3600),
            10_000,
            sockets.clone(),
        )
        .unwrap();
        {
            let mut share = sockets.lock().unwrap();
            share.at = Some(Instant::now());
            share.pids = Some(vec![1, me]);
        }
        let mut b = pb::Batch::default();
        s.sample(&mut b).unwrap();
        let pids: Vec<u32> = b.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![1, me], "the shared listing, not /proc");
        assert!(b.processes_complete);

        // An old listing (another cycle) is not trusted: /proc is listed.
        sockets.lock().unwrap().at = Some(Instant::now() - Duration::from_secs(5));
        let mut b = pb::Batch::default();
        s.sample(&mut b).unwrap();
        assert!(b.processes.len() > 2, "{}", b.processes.len());
        assert!(b.processes.iter().any(|p| p.pid == me));
    }

    #[test]
    fn samples_this_process() {
        let sockets = SocketsByPid::default();
        let mut s =
            ProcessSampler::new(256, 100_000, Duration::from_secs(3600), 10_000, sockets).unwrap();
        let mut b = pb::Batch::default();
        s.sample(&mut b).unwrap();
        assert!(b.processes_complete);
        let me = b
            .processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .unwrap();
        assert!(me.rss_bytes > 0);
        assert!(me.open_fds >= 3);
        assert!(me.fd_limit_soft > 0 && me.fd_limit_hard >= me.fd_limit_soft);
        assert!(me.threads >= 1);
        assert!(!me.cmdline.is_empty());
        let first_start = me.start_time_ticks;
        // Second pass goes through the kept-open files.
        let mut b2 = pb::Batch::default();
        s.sample(&mut b2).unwrap();
        let me2 = b2
            .processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .unwrap();
        assert_eq!(me2.start_time_ticks, first_start);
        assert_eq!(me2.pss_bytes, 0, "PSS only at its cadence");
    }
}
