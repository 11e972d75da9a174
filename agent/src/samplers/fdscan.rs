//! Walks /proc/PID/fd of every process and reports the socket inodes each one
//! holds (`socket:[N]` links): the only way to learn which process owns a
//! socket that sock_diag reported. Uses `openat`/`readdir`/`readlinkat` with no
//! allocation per descriptor.

use std::ffi::CStr;

use super::SamplerError;

/// Counters of one scan.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    /// Processes whose fd directory was read.
    pub processes: u64,
    /// Processes skipped because reading their fd directory was not permitted.
    pub permission_denied: u64,
    /// Descriptors looked at.
    pub fds: u64,
}

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

pub(crate) fn parse_pid(name: &[u8]) -> Option<u32> {
    super::procfile::parse_u64(name).and_then(|v| u32::try_from(v).ok())
}

/// Parses `socket:[12345]`.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    let rest = link.strip_prefix(b"socket:[")?;
    let end = rest.iter().position(|&b| b == b']')?;
    super::procfile::parse_u64(&rest[..end])
}

/// Appends the socket inodes held by process `pid` to `out`; `proc_fd` is an
/// open descriptor of /proc. Returns the number of descriptors looked at.
pub fn socket_inodes_of(
    proc_fd: libc::c_int,
    pid: u32,
    out: &mut Vec<u64>,
) -> Result<u64, std::io::Error> {
    let mut path = [0u8; 32];
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = pid;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        path[i] = digits[n - 1 - i];
    }
    path[n..n + 4].copy_from_slice(b"/fd\0");
    let c_path = CStr::from_bytes_with_nul(&path[..n + 4])
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut fd_dir = Dir::open_at(proc_fd, c_path)?;
    let dfd = fd_dir.fd();
    let mut link = [0u8; 64];
    let mut name_buf = [0u8; 16];
    let mut fds = 0;
    while let Some(fd_name) = fd_dir.next_name() {
        fds += 1;
        let m = fd_name.len().min(15);
        name_buf[..m].copy_from_slice(&fd_name[..m]);
        name_buf[m] = 0;
        // SAFETY: name_buf is NUL-terminated; link is writable for its length.
        let len = unsafe {
            libc::readlinkat(
                dfd,
                name_buf.as_ptr().cast(),
                link.as_mut_ptr().cast(),
                link.len(),
            )
        };
        if len <= 0 {
            continue;
        }
        if let Some(inode) = socket_inode(&link[..len as usize]) {
            out.push(inode);
        }
    }
    Ok(fds)
}

/// Whether an I/O error means "not permitted".
pub fn is_denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// Calls `each(pid, inode)` for every socket descriptor of every process.
/// `max_processes` bounds the walk.
pub fn scan_socket_fds(
    max_processes: usize,
    mut each: impl FnMut(u32, u64),
) -> Result<ScanStats, SamplerError> {
    let mut stats = ScanStats::default();
    let mut proc_dir =
        Dir::open_at(libc::AT_FDCWD, c"/proc").map_err(|source| SamplerError::Read {
            path: "/proc".into(),
            source,
        })?;
    let proc_fd = proc_dir.fd();
    let mut inodes = Vec::new();
    while let Some(name) = proc_dir.next_name() {
        let Some(pid) = parse_pid(name) else { continue };
        if stats.processes as usize >= max_processes {
            break;
        }
        inodes.clear();
        match socket_inodes_of(proc_fd, pid, &mut inodes) {
            Ok(fds) => {
                stats.processes += 1;
                stats.fds += fds;
                for &inode in &inodes {
                    each(pid, inode);
                }
            }
            Err(e) if is_denied(&e) => stats.permission_denied += 1,
            // ENOENT: the process exited meanwhile.
            Err(_) => {}
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
    }

    #[test]
    fn finds_our_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&l)
        ))
        .unwrap()
        .ino();
        let me = std::process::id();
        let mut found = false;
        let stats = scan_socket_fds(usize::MAX, |pid, ino| {
            if pid == me && ino == inode {
                found = true;
            }
        })
        .unwrap();
        assert!(found);
        assert!(stats.processes > 1 && stats.fds > 0);
    }
}
