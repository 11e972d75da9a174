//! `sysconf` values the samplers convert with.

/// Clock ticks per second (USER_HZ) of /proc/stat and /proc/PID/stat times.
pub(crate) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Bytes per page (RSS in /proc/PID/stat is counted in pages); 4096 if unknown.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 { page as u64 } else { 4096 }
}
