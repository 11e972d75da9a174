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

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::time::{Duration, Instant};

use nodewatch_proto::pb;

use super::cpu::ticks_per_second;
use super::disk::parse_mountinfo_line;
use super::fdscan::{Dir, parse_pid};
use super::net::SocketsByPid;
use super::procfile::{fields, key_value, lines, parse_i64, parse_u64, read_whole};
use super::sockdiag::state_name;
use super::{PidMap, Sampler, SamplerError};

/// Fields of /proc/PID/stat the sampler uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidStat {
    /// comm, without parentheses.
    pub name: String,
    /// Parent pid.
    pub ppid: u32,
    /// utime, clock ticks.
    pub utime: u64,
    /// stime, clock ticks.
    pub stime: u64,
    /// Threads.
    pub threads: u32,
    /// Start time, clock ticks after boot.
    pub start_time: u64,
    /// Virtual size, bytes.
    pub vsize: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat. The name may hold spaces and parentheses, so the
/// fields are counted after the last ')'.
pub fn parse_pid_stat(content: &[u8], out: &mut PidStat) -> Option<()> {
    let open = content.iter().position(|&b| b == b'(')?;
    let close = content.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let name = &content[open + 1..close];
    if out.name.as_bytes() != name {
        out.name = String::from_utf8_lossy(name).into_owned();
    }
    // After ")": state(0) ppid(1) ... utime(11) stime(12) ... num_threads(17)
    // itrealvalue(18) starttime(19) vsize(20) rss(21).
    let mut it = fields(&content[close + 1..]);
    let mut field = |skip: usize| it.nth(skip);
    out.ppid = u32::try_from(parse_u64(field(1)?)?).ok()?;
    out.utime = parse_u64(field(9)?)?;
    out.stime = parse_u64(field(0)?)?;
    out.threads = u32::try_from(parse_i64(field(4)?)?).ok()?;
    out.start_time = parse_u64(field(1)?)?;
    out.vsize = parse_u64(field(0)?)?;
    out.rss_pages = u64::try_from(parse_i64(field(0)?)?).unwrap_or(0);
    Some(())
}

/// Soft and hard RLIMIT_NOFILE from /proc/PID/limits (`u64::MAX` for unlimited).
pub fn parse_fd_limits(content: &[u8]) -> Option<(u64, u64)> {
    let line = lines(content).find(|l| l.starts_with(b"Max open files"))?;
    let mut it = fields(&line[b"Max open files".len()..]);
    let value = |v: &[u8]| {
        if v == b"unlimited" {
            Some(u64::MAX)
        } else {
            parse_u64(v)
        }
    };
    Some((value(it.next()?)?, value(it.next()?)?))
}

/// Cgroup paths of one process from /proc/PID/cgroup: the v2 path and the path
/// in the v1 memory hierarchy, when present.
pub fn parse_cgroup(content: &[u8]) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut memory_v1 = None;
    for line in lines(content) {
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = String::from_utf8_lossy(path).into_owned();
        if id == b"0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(|&b| b == b',').any(|c| c == b"memory") {
            memory_v1 = Some(path);
        }
    }
    (v2, memory_v1)
}

/// Parses a memory limit file: a number of bytes, or "max" (v2). v1's
/// "unlimited" is a huge page-aligned number; anything >= 2^60 counts as unlimited.
pub fn parse_memory_limit(content: &[u8]) -> Option<u64> {
    let v = fields(content).next()?;
    if v == b"max" {
        return None;
    }
    parse_u64(v).filter(|&n| n < 1 << 60)
}

/// `Pss:` of /proc/PID/smaps_rollup, bytes.
pub fn parse_pss(content: &[u8]) -> Option<u64> {
    lines(content)
        .filter_map(key_value)
        .find(|(k, _)| *k == b"Pss")
        .map(|(_, kib)| kib * 1024)
}

/// Shortens a raw /proc/PID/cmdline (NUL-separated) to at most `max` bytes.
pub fn short_cmdline(raw: &[u8], max: usize) -> String {
    let mut s: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    while s.last() == Some(&b' ') {
        s.pop();
    }
    let mut text = String::from_utf8_lossy(&s).into_owned();
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, Default)]
struct CgroupRoots {
    v2: Option<String>,
    memory_v1: Option<String>,
}

fn find_cgroup_roots() -> CgroupRoots {
    let mut roots = CgroupRoots::default();
    let Ok(content) = std::fs::read("/proc/self/mountinfo") else {
        return roots;
    };
    for line in lines(&content) {
        let Some(m) = parse_mountinfo_line(line) else {
            continue;
        };
        if m.fs_type == "cgroup2" && roots.v2.is_none() {
            roots.v2 = Some(m.mount_point);
        } else if m.fs_type == "cgroup" && roots.memory_v1.is_none() {
            // The super options (last field) name the controllers.
            let opts = fields(line).last().unwrap_or(b"");
            if opts.split(|&b| b == b',').any(|o| o == b"memory") {
                roots.memory_v1 = Some(m.mount_point);
            }
        }
    }
    roots
}

/// One tracked process.
#[derive(Debug)]
struct Tracked {
    start_time: u64,
    stat_file: Option<File>,
    fd_dir: Option<File>,
    stat: PidStat,
    cmdline: String,
    cgroup: String,
    /// Path used for the memory limit lookup, with its hierarchy root.
    memory_cgroup: Option<(bool, String)>,
    uid: u32,
    fd_limits: (u64, u64),
    prev_ticks: Option<(u64, Instant)>,
    pss: u64,
    slow_refreshed: Option<Instant>,
    generation: u64,
}

/// The process sampler.
#[derive(Debug)]
pub struct ProcessSampler {
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
    roots: CgroupRoots,
    limits_cache: HashMap<(bool, String), Option<u64>>,
    sockets: SocketsByPid,
    generation: u64,
    open_budget: usize,
    open_files: usize,
    permission_denied: u64,
    buf: Vec<u8>,
    /// The kernel reports the descriptor count as the fd directory's size (6.2+).
    counts_fds: bool,
}

/// Socket-pass results younger than this are from the same sampling cycle.
const SHARE_FRESH: Duration = Duration::from_millis(500);

/// Opens `<pid>/<name>` relative to the /proc directory descriptor.
fn open_pid_file(
    proc_fd: &File,
    pid: u32,
    name: &str,
    flags: libc::c_int,
) -> std::io::Result<File> {
    let mut path = [0u8; 48];
    let text = format_args!("{pid}/{name}\0").to_string();
    let bytes = text.as_bytes();
    if bytes.len() > path.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    path[..bytes.len()].copy_from_slice(bytes);
    let c = CStr::from_bytes_with_nul(&path[..bytes.len()])
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: NUL-terminated path, valid flags.
    let fd = unsafe { libc::openat(proc_fd.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn is_denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
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
    pub fn new(
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
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Ok(Self {
            proc_fd,
            tracked: PidMap::default(),
            pids: Vec::new(),
            hz: ticks_per_second(),
            page_size: if page > 0 { page as u64 } else { 4096 },
            cmdline_max,
            max_processes,
            pss_interval,
            last_pss: None,
            roots: find_cgroup_roots(),
            limits_cache: HashMap::new(),
            sockets,
            generation: 0,
            open_budget,
            open_files: 0,
            permission_denied: 0,
            buf: Vec::with_capacity(4096),
            counts_fds: std::fs::metadata("/proc/self/fd").is_ok_and(|m| m.len() > 0),
        })
    }

    /// Reads of other users' /proc entries refused so far (counted, not logged).
    pub fn permission_denied(&self) -> u64 {
        self.permission_denied
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
        let has_v1_memory = self.roots.memory_v1.is_some();
        let Some(t) = self.tracked.get_mut(&pid) else {
            return;
        };
        t.cmdline = if cmdline.is_empty() {
            format!("[{}]", t.stat.name)
        } else {
            cmdline
        };
        if let Some((v2, v1)) = cgroups {
            let memory = match (has_v1_memory, v1, v2.clone()) {
                (true, Some(p), _) => Some((true, p)),
                (_, _, Some(p)) => Some((false, p)),
                _ => None,
            };
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

    /// The effective memory limit of a cgroup: the smallest limit on the way to the root.
    fn memory_limit(&mut self, key: &(bool, String)) -> Option<u64> {
        if let Some(v) = self.limits_cache.get(key) {
            return *v;
        }
        let root = if key.0 {
            self.roots.memory_v1.as_deref()
        } else {
            self.roots.v2.as_deref()
        };
        let file = if key.0 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        let mut best: Option<u64> = None;
        if let Some(root) = root {
            let mut path = key.1.trim_end_matches('/').to_string();
            // Bounded by the path depth.
            loop {
                if let Ok(content) = std::fs::read(format!("{root}{path}/{file}"))
                    && let Some(v) = parse_memory_limit(&content)
                {
                    best = Some(best.map_or(v, |b| b.min(v)));
                }
                match path.rfind('/') {
                    Some(i) if !path.is_empty() => path.truncate(i),
                    _ => break,
                }
            }
        }
        if self.limits_cache.len() < 4096 {
            self.limits_cache.insert(key.clone(), best);
        }
        best
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
        // else the size of the fd directory.
        let (shared_fds, socket_states) = {
            let share = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = share
                .at
                .is_some_and(|at| now.saturating_duration_since(at) < SHARE_FRESH);
            match share.by_pid.get(&pid) {
                Some(p) => (p.fds.filter(|_| fresh), Some(p.states)),
                None => (None, None),
            }
        };
        let open_fds = match shared_fds {
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None => {
                let t = self.tracked.get(&pid)?;
                let size = match &t.fd_dir {
                    Some(d) => d.metadata().map(|m| m.len()).unwrap_or(0),
                    None => std::fs::metadata(format!("/proc/{pid}/fd"))
                        .map(|m| m.len())
                        .unwrap_or(0),
                };
                if size > 0 || self.counts_fds {
                    u32::try_from(size).unwrap_or(u32::MAX)
                } else {
                    count_dir_entries(pid)
                }
            }
        };
        let memory_key = self.tracked.get(&pid)?.memory_cgroup.clone();
        let memory_max = memory_key.and_then(|k| self.memory_limit(&k));
        let sockets: Vec<pb::ProcessSocketCount> = socket_states
            .map(|counts| {
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(s, c)| pb::ProcessSocketCount {
                        state: state_name(s as u8).to_string(),
                        count: *c,
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
        self.limits_cache.clear();
        let pss_due = self.last_pss.is_none_or(|at| {
            now.duration_since(at) + Duration::from_millis(200) >= self.pss_interval
        });
        if pss_due {
            self.last_pss = Some(now);
        }
        // The pids to visit: the socket pass of this cycle listed /proc
        // already; otherwise list it here.
        let mut pids = std::mem::take(&mut self.pids);
        pids.clear();
        {
            let share = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = share
                .at
                .is_some_and(|at| now.saturating_duration_since(at) < SHARE_FRESH);
            if fresh && let Some(listed) = &share.pids {
                pids.extend_from_slice(listed);
            }
        }
        if pids.is_empty() {
            let mut dir =
                Dir::open_at(libc::AT_FDCWD, c"/proc").map_err(|source| SamplerError::Read {
                    path: "/proc".into(),
                    source,
                })?;
            while let Some(name) = dir.next_name() {
                if let Some(pid) = parse_pid(name) {
                    pids.push(pid);
                }
            }
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
    fn parses_real_pid_stat() {
        let mut s = PidStat::default();
        parse_pid_stat(include_bytes!("fixtures/proc_pid_stat"), &mut s).unwrap();
        assert_eq!(s.name, "cat");
        assert_eq!(s.ppid, 17094);
        assert_eq!(s.utime, 0);
        assert_eq!(s.stime, 0);
        assert_eq!(s.threads, 1);
        assert_eq!(s.start_time, 100_036);
        assert_eq!(s.vsize, 3_133_440);
        assert_eq!(s.rss_pages, 359);
    }

    #[test]
    fn name_with_spaces_and_parens() {
        let mut s = PidStat::default();
        let line = b"42 (a) b (c)) S 1 42 42 0 -1 0 0 0 0 0 7 9 0 0 20 0 3 0 555 1000 20 0";
        parse_pid_stat(line, &mut s).unwrap();
        assert_eq!(s.name, "a) b (c)");
        assert_eq!((s.ppid, s.utime, s.stime, s.threads), (1, 7, 9, 3));
        assert_eq!((s.start_time, s.vsize, s.rss_pages), (555, 1000, 20));
        assert!(parse_pid_stat(b"42 (x) S 1", &mut s).is_none());
    }

    #[test]
    fn parses_limits() {
        assert_eq!(
            parse_fd_limits(include_bytes!("fixtures/proc_limits")),
            Some((20000, 20000))
        );
        assert_eq!(
            parse_fd_limits(
                b"Max open files            unlimited            unlimited            files\n"
            ),
            Some((u64::MAX, u64::MAX))
        );
        assert_eq!(parse_fd_limits(b"Max processes 1 1 processes\n"), None);
    }

    #[test]
    fn parses_cgroups() {
        let (v2, v1) = parse_cgroup(include_bytes!("fixtures/proc_cgroup_hybrid"));
        assert_eq!(v2.as_deref(), Some("/"));
        assert_eq!(v1.as_deref(), Some("/system.slice/app.service"));
        let (v2, v1) = parse_cgroup(b"0::/system.slice/nginx.service\n");
        assert_eq!(v2.as_deref(), Some("/system.slice/nginx.service"));
        assert_eq!(v1, None);
    }

    #[test]
    fn parses_memory_limits() {
        assert_eq!(parse_memory_limit(b"max\n"), None);
        assert_eq!(parse_memory_limit(b"268435456\n"), Some(256 << 20));
        assert_eq!(parse_memory_limit(b"9223372036854771712\n"), None);
    }

    #[test]
    fn parses_pss_and_cmdline() {
        assert_eq!(
            parse_pss(b"55c0-7ff [rollup]\nRss:  100 kB\nPss:   40 kB\nPss_Anon: 10 kB\n"),
            Some(40 * 1024)
        );
        assert_eq!(short_cmdline(b"sleep\x0060\x00", 256), "sleep 60");
        assert_eq!(short_cmdline("aé€".as_bytes(), 4), "aé");
    }

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
