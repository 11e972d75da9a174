//! Netlink `sock_diag` (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY) dumps of TCP
//! and UDP sockets, IPv4 and IPv6, written against the kernel UAPI
//! (`linux/inet_diag.h`, `linux/netlink.h`) with plain libc sockets.
//!
//! Why not a crate: the request is one fixed 56-byte struct and each reply one
//! fixed 72-byte struct; the netlink crates bring an async runtime or generic
//! attribute machinery and allocate per message, while this dump is the hot
//! part of the socket pass (tens of thousands of records). No extensions are
//! requested (`idiag_ext = 0`), so replies carry no attributes to walk.
//!
//! For a listening TCP socket the kernel reports the current accept queue in
//! `idiag_rqueue` and the backlog given to `listen()` in `idiag_wqueue`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use super::SamplerError;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR: usize = 16;
const REQ_LEN: usize = NLMSG_HDR + 56;
const DIAG_MSG_LEN: usize = 72;

/// TCP state numbers (`include/net/tcp_states.h`).
pub mod tcp_state {
    /// Established.
    pub const ESTABLISHED: u8 = 1;
    /// Connection is closing, local side still open (peer sent FIN).
    pub const CLOSE_WAIT: u8 = 8;
    /// Waiting after close.
    pub const TIME_WAIT: u8 = 6;
    /// Listening.
    pub const LISTEN: u8 = 10;
    /// Closed (for UDP: unconnected).
    pub const CLOSE: u8 = 7;
}

/// Names of TCP states as the kernel spells them, indexed by state number.
pub const STATE_NAMES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// Name of a state number.
pub fn state_name(state: u8) -> &'static str {
    STATE_NAMES
        .get(usize::from(state))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// One socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockRecord {
    /// TCP state number (UDP uses ESTABLISHED for connected, CLOSE for unconnected).
    pub state: u8,
    /// Local address.
    pub src: IpAddr,
    /// Local port.
    pub sport: u16,
    /// Remote address.
    pub dst: IpAddr,
    /// Remote port.
    pub dport: u16,
    /// Receive queue; for a listener, the current accept queue.
    pub rqueue: u32,
    /// Send queue; for a listener, its backlog.
    pub wqueue: u32,
    /// Owner uid.
    pub uid: u32,
    /// Socket inode, 0 for TIME_WAIT and request sockets (no file).
    pub inode: u32,
}

fn addr(family: u8, raw: &[u8]) -> IpAddr {
    if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let mut b = [0u8; 16];
        b.copy_from_slice(&raw[..16]);
        let v6 = Ipv6Addr::from(b);
        // Show v4-mapped addresses of dual-stack sockets as IPv4.
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses one `struct inet_diag_msg` (the payload after the netlink header).
pub fn parse_diag_msg(p: &[u8]) -> Option<SockRecord> {
    if p.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = p[0];
    if family != libc::AF_INET as u8 && family != libc::AF_INET6 as u8 {
        return None;
    }
    // inet_diag_sockid starts at 4: sport(be16) dport(be16) src[16] dst[16] if cookie[8].
    let id = &p[4..52];
    Some(SockRecord {
        state: p[1],
        sport: u16::from_be_bytes([id[0], id[1]]),
        dport: u16::from_be_bytes([id[2], id[3]]),
        src: addr(family, &id[4..20]),
        dst: addr(family, &id[20..36]),
        // expires at 52, then rqueue, wqueue, uid, inode.
        rqueue: u32_ne(&p[56..60]),
        wqueue: u32_ne(&p[60..64]),
        uid: u32_ne(&p[64..68]),
        inode: u32_ne(&p[68..72]),
    })
}

/// Builds a dump request for one family and protocol; `states` is a bit mask of
/// TCP state numbers (`1 << state`).
pub fn build_request(family: u8, protocol: u8, states: u32, seq: u32) -> [u8; REQ_LEN] {
    let mut r = [0u8; REQ_LEN];
    r[0..4].copy_from_slice(&(REQ_LEN as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    r[6..8].copy_from_slice(&flags.to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid (12..16) = 0: the kernel.
    r[16] = family;
    r[17] = protocol;
    r[18] = 0; // idiag_ext: no attributes
    r[20..24].copy_from_slice(&states.to_ne_bytes());
    r
}

/// A kept-open NETLINK_SOCK_DIAG socket with a reused receive buffer.
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

/// Receive buffer size; the kernel fills up to ~32 KiB per dump message batch.
const RECV_BUF: usize = 64 * 1024;

impl SockDiag {
    /// Opens the netlink socket.
    pub fn open() -> Result<Self, SamplerError> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(SamplerError::Os {
                call: "socket(AF_NETLINK, NETLINK_SOCK_DIAG)",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            buf: vec![0u8; RECV_BUF],
            seq: 0,
        })
    }

    /// Dumps every socket of `family` (AF_INET / AF_INET6) and `protocol`
    /// (IPPROTO_TCP / IPPROTO_UDP) whose state is in the `states` bit mask,
    /// calling `each` per socket.
    pub fn dump(
        &mut self,
        family: u8,
        protocol: u8,
        states: u32,
        mut each: impl FnMut(&SockRecord),
    ) -> Result<(), SamplerError> {
        self.seq = self.seq.wrapping_add(1);
        let req = build_request(family, protocol, states, self.seq);
        // SAFETY: zeroed sockaddr_nl is valid; we fill the family.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid buffer and address for the call's duration.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(SamplerError::Os {
                call: "sendto(sock_diag)",
                source: std::io::Error::last_os_error(),
            });
        }
        // Bounded: a dump ends with NLMSG_DONE; a broken peer cannot keep us
        // here forever because every recv either progresses or errors.
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SamplerError::Os {
                    call: "recv(sock_diag)",
                    source: err,
                });
            }
            if n == 0 {
                return Err(SamplerError::Netlink("socket closed during dump"));
            }
            match walk_messages(&self.buf[..n as usize], self.seq, &mut each)? {
                Walk::Done => return Ok(()),
                Walk::More => {}
            }
        }
    }
}

/// Whether a dump continues after one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Walk {
    /// More datagrams follow.
    More,
    /// NLMSG_DONE seen.
    Done,
}

/// Walks the netlink messages of one datagram.
pub fn walk_messages(
    mut data: &[u8],
    seq: u32,
    each: &mut impl FnMut(&SockRecord),
) -> Result<Walk, SamplerError> {
    while data.len() >= NLMSG_HDR {
        let len = u32_ne(&data[0..4]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let msg_seq = u32_ne(&data[8..12]);
        if len < NLMSG_HDR || len > data.len() {
            return Err(SamplerError::Netlink("truncated message"));
        }
        let payload = &data[NLMSG_HDR..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(Walk::Done),
                NLMSG_ERROR => {
                    let code = payload
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return match code {
                        Some(0) => Ok(Walk::Done),
                        // Protocol not available (e.g. module not loaded): an empty dump.
                        Some(c) if -c == libc::ENOENT => Ok(Walk::Done),
                        _ => Err(SamplerError::Netlink("dump failed")),
                    };
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(r) = parse_diag_msg(payload) {
                        each(&r);
                    }
                }
                _ => {}
            }
        }
        let aligned = (len + 3) & !3;
        data = data.get(aligned..).unwrap_or(&[]);
    }
    Ok(Walk::More)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn request_layout() {
        let r = build_request(libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, u32::MAX, 7);
        assert_eq!(u32_ne(&r[0..4]), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 20);
        assert_eq!(u32_ne(&r[8..12]), 7);
        assert_eq!(r[16], libc::AF_INET6 as u8);
        assert_eq!(r[17], 6);
        assert_eq!(u32_ne(&r[20..24]), u32::MAX);
    }

    #[test]
    fn parses_a_diag_message() {
        let mut p = [0u8; 72];
        p[0] = libc::AF_INET as u8;
        p[1] = tcp_state::LISTEN;
        p[4..6].copy_from_slice(&8080u16.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[56..60].copy_from_slice(&3u32.to_ne_bytes());
        p[60..64].copy_from_slice(&16u32.to_ne_bytes());
        p[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        let r = parse_diag_msg(&p).unwrap();
        assert_eq!(r.state, tcp_state::LISTEN);
        assert_eq!(r.sport, 8080);
        assert_eq!(r.src, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((r.rqueue, r.wqueue, r.inode), (3, 16, 4242));
        assert!(parse_diag_msg(&p[..40]).is_none());
    }

    #[test]
    fn rejects_truncated_datagram() {
        let mut d = [0u8; 20];
        d[0..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(walk_messages(&d, 0, &mut |_| {}).is_err());
    }

    #[test]
    fn finds_our_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut diag = SockDiag::open().unwrap();
        let mut found = None;
        diag.dump(
            libc::AF_INET as u8,
            libc::IPPROTO_TCP as u8,
            u32::MAX,
            |r| {
                if r.sport == port && r.state == tcp_state::LISTEN {
                    found = Some(*r);
                }
            },
        )
        .unwrap();
        let r = found.expect("listener in the dump");
        assert_eq!(r.wqueue, 128, "std listens with backlog 128");
        assert!(r.inode != 0);
    }
}
