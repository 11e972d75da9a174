//! Parsers of the per-process /proc files: stat, limits, cgroup,
//! smaps_rollup and cmdline, and of cgroup memory limit files.

use crate::sys::procfile::{fields, key_value, lines, parse_i64, parse_u64};

/// Fields of /proc/PID/stat the sampler uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PidStat {
    /// comm, without parentheses.
    pub(crate) name: String,
    /// Parent pid.
    pub(crate) ppid: u32,
    /// utime, clock ticks.
    pub(crate) utime: u64,
    /// stime, clock ticks.
    pub(crate) stime: u64,
    /// Threads.
    pub(crate) threads: u32,
    /// Start time, clock ticks after boot.
    pub(crate) start_time: u64,
    /// Virtual size, bytes.
    pub(crate) vsize: u64,
    /// Resident pages.
    pub(crate) rss_pages: u64,
}

/// Parses /proc/PID/stat. The name may hold spaces and parentheses, so the
/// fields are counted after the last ')'.
pub(crate) fn parse_pid_stat(content: &[u8], out: &mut PidStat) -> Option<()> {
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
pub(crate) fn parse_fd_limits(content: &[u8]) -> Option<(u64, u64)> {
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
pub(crate) fn parse_cgroup(content: &[u8]) -> (Option<String>, Option<String>) {
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
pub(crate) fn parse_memory_limit(content: &[u8]) -> Option<u64> {
    let v = fields(content).next()?;
    if v == b"max" {
        return None;
    }
    parse_u64(v).filter(|&n| n < 1 << 60)
}

/// `Pss:` of /proc/PID/smaps_rollup, bytes.
pub(crate) fn parse_pss(content: &[u8]) -> Option<u64> {
    lines(content)
        .filter_map(key_value)
        .find(|(k, _)| *k == b"Pss")
        .map(|(_, kib)| kib * 1024)
}

/// Shortens a raw /proc/PID/cmdline (NUL-separated) to at most `max` bytes.
pub(crate) fn short_cmdline(raw: &[u8], max: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_pid_stat() {
        let mut s = PidStat::default();
        parse_pid_stat(include_bytes!("../fixtures/proc_pid_stat"), &mut s).unwrap();
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
            parse_fd_limits(include_bytes!("../fixtures/proc_limits")),
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
        let (v2, v1) = parse_cgroup(include_bytes!("../fixtures/proc_cgroup_hybrid"));
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
}
