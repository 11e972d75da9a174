//! The /proc directory: listing its pids, opening per-process files relative
//! to a kept-open /proc descriptor, and counting a process's descriptors.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd as _, FromRawFd as _};

use super::error::SysError;
use super::procfile::parse_u64;

/// An open directory stream, closed on drop.
pub(crate) struct Dir(*mut libc::DIR);

impl Dir {
    pub(crate) fn open_at(dirfd: libc::c_int, path: &CStr) -> Result<Dir, std::io::Error> {
        // SAFETY: path is NUL-terminated; flags are valid.
        let fd = unsafe {
            libc::openat(
                dirfd,
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is an open directory we own; fdopendir takes ownership.
        let dir = unsafe { libc::fdopendir(fd) };
        if dir.is_null() {
            let err = std::io::Error::last_os_error();
            // SAFETY: fdopendir failed, so fd is still ours to close.
            unsafe { libc::close(fd) };
            return Err(err);
        }
        Ok(Dir(dir))
    }

    pub(crate) fn fd(&self) -> libc::c_int {
        // SAFETY: self.0 is a valid open DIR.
        unsafe { libc::dirfd(self.0) }
    }

    /// Next entry name (without "." and ".."), as bytes without the NUL.
    pub(crate) fn next_name(&mut self) -> Option<&[u8]> {
        loop {
            // SAFETY: self.0 is a valid open DIR; the entry stays valid until the next readdir.
            let ent = unsafe { libc::readdir(self.0) };
            if ent.is_null() {
                return None;
            }
            // SAFETY: d_name is NUL-terminated inside the entry.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                return Some(name);
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: self.0 is a valid open DIR, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// The pid a /proc entry name stands for (`None` for "self", "net", ...).
pub(crate) fn parse_pid(name: &[u8]) -> Option<u32> {
    parse_u64(name).and_then(|v| u32::try_from(v).ok())
}

/// Appends the pids of /proc to `out` in the order /proc lists them
/// (ascending), until `out` holds `max`. Returns whether every pid was listed.
pub(crate) fn list_pids(out: &mut Vec<u32>, max: usize) -> Result<bool, SysError> {
    let mut proc_dir = Dir::open_at(libc::AT_FDCWD, c"/proc").map_err(|source| SysError::Read {
        path: "/proc".into(),
        source,
    })?;
    while let Some(name) = proc_dir.next_name() {
        if let Some(pid) = parse_pid(name) {
            if out.len() >= max {
                return Ok(false);
            }
            out.push(pid);
        }
    }
    Ok(true)
}

/// Opens `<pid>/<name>` relative to the /proc directory descriptor.
pub(crate) fn open_pid_file(
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

/// Opens /proc/PID/fd (kept open to `fstat` it: see [`fd_dir_size`]).
pub(crate) fn open_fd_dir(proc_fd: &File, pid: u32) -> Option<File> {
    open_pid_file(proc_fd, pid, "fd", libc::O_RDONLY | libc::O_DIRECTORY).ok()
}

/// Whether an I/O error means "not permitted".
pub(crate) fn is_denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// Whether the kernel reports a process's number of open descriptors as the
/// size of its /proc/PID/fd directory (6.2+; older kernels report 0).
pub(crate) fn kernel_counts_fds() -> bool {
    // This process has at least stdin..stderr and /proc open.
    std::fs::metadata("/proc/self/fd").is_ok_and(|m| m.len() > 0)
}

/// Size of process `pid`'s fd directory: through the kept-open `fd_dir` when
/// there is one, else by path. `None` when the process is gone (or, through
/// a kept-open directory, was replaced by a new process with the same pid).
pub(crate) fn fd_dir_size(fd_dir: Option<&File>, pid: u32) -> Option<u64> {
    match fd_dir {
        Some(d) => d.metadata().ok().map(|m| m.len()),
        None => std::fs::metadata(format!("/proc/{pid}/fd"))
            .ok()
            .map(|m| m.len()),
    }
}
