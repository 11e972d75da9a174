//! Reads /proc/PID/fd of a process and reports the socket inodes it holds
//! (`socket:[N]` links): the only way to learn which process owns a socket
//! that sock_diag reported. Uses `openat`/`readdir`/`readlinkat` with no
//! allocation per descriptor.

use std::ffi::CStr;

use super::procdir::Dir;
use super::procfile::parse_u64;

/// Parses `socket:[12345]`.
pub(crate) fn socket_inode(link: &[u8]) -> Option<u64> {
    let rest = link.strip_prefix(b"socket:[")?;
    let end = rest.iter().position(|&b| b == b']')?;
    parse_u64(&rest[..end])
}

/// Appends the socket inodes held by process `pid` to `out`; `proc_fd` is an
/// open descriptor of /proc. Returns the number of descriptors looked at.
pub(crate) fn socket_inodes_of(
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
        let proc_dir = Dir::open_at(libc::AT_FDCWD, c"/proc").unwrap();
        let mut inodes = Vec::new();
        let fds = socket_inodes_of(proc_dir.fd(), std::process::id(), &mut inodes).unwrap();
        assert!(inodes.contains(&inode), "{inodes:?}");
        assert!(fds > 0);
    }
}
