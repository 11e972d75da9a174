//! Syscall names (x86_64 and aarch64) and the family each syscall belongs to.

use nodewatch_agent_ebpf::{FAMILY_MISC, FAMILY_NAMES};

mod table;

/// Names by number for the architecture this agent runs on.
pub(crate) fn table() -> &'static [&'static str] {
    if cfg!(target_arch = "aarch64") {
        &table::AARCH64
    } else {
        &table::X86_64
    }
}

/// Names by number for the given architecture (`"x86_64"` or `"aarch64"`).
#[cfg(test)]
fn table_for(arch: &str) -> Option<&'static [&'static str]> {
    match arch {
        "x86_64" => Some(&table::X86_64),
        "aarch64" => Some(&table::AARCH64),
        _ => None,
    }
}

/// Name of syscall `nr` on this architecture; `sys_<nr>` when unassigned.
pub(crate) fn name(nr: u32) -> String {
    match table().get(nr as usize) {
        Some(n) if !n.is_empty() => (*n).to_string(),
        _ => format!("sys_{nr}"),
    }
}

/// Number of the syscall called `name` on this architecture.
#[cfg(test)]
fn number(name: &str) -> Option<u32> {
    table()
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

const IO: &[&str] = &[
    "read",
    "write",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "sendfile",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "io_submit",
    "io_getevents",
    "io_pgetevents",
    "io_uring_enter",
    "io_cancel",
];
const FILE: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "lseek",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents",
    "getdents64",
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "fcntl",
    "ioctl",
    "truncate",
    "ftruncate",
    "fallocate",
    "fadvise64",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "fchownat",
    "lchown",
    "utimensat",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "getxattr",
    "setxattr",
    "fgetxattr",
    "fsetxattr",
    "lgetxattr",
    "listxattr",
    "flistxattr",
    "inotify_add_watch",
    "fanotify_mark",
    "mknod",
    "mknodat",
    "chdir",
    "fchdir",
    "getcwd",
    "mount",
    "umount2",
];
const NET: &[&str] = &[
    "socket",
    "socketpair",
    "connect",
    "accept",
    "accept4",
    "bind",
    "listen",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
];
const POLL: &[&str] = &[
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "epoll_create",
    "epoll_create1",
    "eventfd",
    "eventfd2",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "signalfd",
    "signalfd4",
];
const LOCK: &[&str] = &[
    "futex",
    "futex_waitv",
    "futex_wait",
    "futex_wake",
    "futex_requeue",
    "flock",
    "set_robust_list",
    "get_robust_list",
];
const SLEEP: &[&str] = &[
    "nanosleep",
    "clock_nanosleep",
    "pause",
    "alarm",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "sched_yield",
    "wait4",
    "waitid",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "setitimer",
    "getitimer",
];
const MEMORY: &[&str] = &[
    "mmap",
    "munmap",
    "mprotect",
    "brk",
    "madvise",
    "mremap",
    "msync",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "mincore",
    "membarrier",
    "process_madvise",
    "process_mrelease",
    "memfd_create",
    "userfaultfd",
];

/// Family number of a syscall name (index into `FAMILY_NAMES`), or
/// `FAMILY_UNTIMED` for the syscalls that never return.
pub(crate) fn family_of(name: &str) -> u8 {
    if matches!(name, "exit" | "exit_group") {
        return nodewatch_agent_ebpf::FAMILY_UNTIMED;
    }
    for (family, names) in [IO, FILE, NET, POLL, LOCK, SLEEP, MEMORY]
        .iter()
        .enumerate()
    {
        if names.contains(&name) {
            return family as u8;
        }
    }
    FAMILY_MISC
}

/// Family name as sent in `SyscallLatency.syscall` ("family:io", ...).
pub(crate) fn family_label(family: usize) -> String {
    format!(
        "family:{}",
        FAMILY_NAMES.get(family).copied().unwrap_or("misc")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tables_know_common_syscalls() {
        let x = table_for("x86_64").unwrap();
        let a = table_for("aarch64").unwrap();
        assert_eq!(x[0], "read");
        assert_eq!(x[39], "getpid");
        assert_eq!(x[110], "getppid");
        assert_eq!(x[35], "nanosleep");
        assert_eq!(a[63], "read");
        assert_eq!(a[173], "getppid");
        assert_eq!(a[101], "nanosleep");
        assert_eq!(a[222], "mmap");
        assert!(x.len() <= nodewatch_agent_ebpf::MAX_SYSCALLS as usize);
        assert!(a.len() <= nodewatch_agent_ebpf::MAX_SYSCALLS as usize);
    }

    #[test]
    fn families() {
        assert_eq!(FAMILY_NAMES[family_of("read") as usize], "io");
        assert_eq!(FAMILY_NAMES[family_of("nanosleep") as usize], "sleep");
        assert_eq!(FAMILY_NAMES[family_of("connect") as usize], "net");
        assert_eq!(FAMILY_NAMES[family_of("getppid") as usize], "misc");
        assert_eq!(
            family_of("exit_group"),
            nodewatch_agent_ebpf::FAMILY_UNTIMED
        );
        assert_eq!(family_of("exit"), nodewatch_agent_ebpf::FAMILY_UNTIMED);
        assert_eq!(family_label(0), "family:io");
    }

    #[test]
    fn name_and_number_roundtrip() {
        let n = number("getppid").unwrap();
        assert_eq!(name(n), "getppid");
        assert_eq!(name(511), "sys_511");
    }
}
