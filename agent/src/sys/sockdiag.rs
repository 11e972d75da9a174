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
//!
//! TCP of both families in one walk: IPv4 and IPv6 TCP sockets live in the
//! same hash tables (listening, bound, established), whose sizes follow RAM,
//! not the number of sockets (established: one bucket per 128 KiB of RAM,
//! rounded up to a power of two; 262,144 on a 24 GiB host).
//! A `SOCK_DIAG_BY_FAMILY` request names one family, so dumping both walks
//! every table twice. The older `TCPDIAG_GETSOCK` request (`struct
//! inet_diag_req`, still served by `net/ipv4/inet_diag.c`) is answered with the
//! family set to `AF_UNSPEC`: one walk returns the sockets of both families,
//! as the same `struct inet_diag_msg` replies. [`SockDiag::dump_tcp`] uses it
//! and falls back to one request per family when the kernel refuses it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use super::error::SysError;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// Legacy request type of TCP dumps (`linux/inet_diag.h`); replies carry it too.
const TCPDIAG_GETSOCK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR: usize = 16;
const REQ_LEN: usize = NLMSG_HDR + 56;
/// Netlink header + `struct inet_diag_req` (family, src_len, dst_len, ext,
/// 48-byte socket id, states, dbs).
const COMPAT_REQ_LEN: usize = NLMSG_HDR + 60;
const DIAG_MSG_LEN: usize = 72;

/// TCP state numbers (`include/net/tcp_states.h`), listed together even where
/// only tests use them.
#[allow(dead_code)]
pub(crate) mod tcp_state {
    /// Established.
    pub(crate) const ESTABLISHED: u8 = 1;
    /// Connection is closing, local side still open (peer sent FIN).
    pub(crate) const CLOSE_WAIT: u8 = 8;
    /// Waiting after close.
    pub(crate) const TIME_WAIT: u8 = 6;
    /// Listening.
    pub(crate) const LISTEN: u8 = 10;
    /// Closed (for UDP: unconnected).
    pub(crate) const CLOSE: u8 = 7;
    /// Dump filter only (kernel 6.8+): bound, neither listening nor
    /// connected; such sockets are reported as CLOSE.
    pub(crate) const BOUND_INACTIVE: u8 = 13;
}

/// Names of TCP states as the kernel spells them, indexed by state number.
pub(crate) const STATE_NAMES: [&str; 13] = [
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
pub(crate) fn state_name(state: u8) -> &'static str {
    STATE_NAMES
        .get(usize::from(state))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The states with a non-zero count in per-state counts (indexed by state
/// number), as (state name, count), in state-number order.
pub(crate) fn nonzero_states<T: Copy + Default + PartialEq>(
    counts: &[T; 13],
) -> impl Iterator<Item = (&'static str, T)> + '_ {
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != T::default())
        .map(|(s, c)| (state_name(s as u8), *c))
}

/// One socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SockRecord {
    /// TCP state number (UDP uses ESTABLISHED for connected, CLOSE for unconnected).
    pub(crate) state: u8,
    /// Local address.
    pub(crate) src: IpAddr,
    /// Local port.
    pub(crate) sport: u16,
    /// Remote address.
    pub(crate) dst: IpAddr,
    /// Remote port.
    pub(crate) dport: u16,
    /// Receive queue; for a listener, the current accept queue.
    pub(crate) rqueue: u32,
    /// Send queue; for a listener, its backlog.
    pub(crate) wqueue: u32,
    /// Owner uid.
    pub(crate) uid: u32,
    /// Socket inode, 0 for TIME_WAIT and request sockets (no file).
    pub(crate) inode: u32,
    /// The socket's family is IPv6 (its addresses may still be v4-mapped and
    /// shown as IPv4).
    pub(crate) v6: bool,
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
pub(crate) fn parse_diag_msg(p: &[u8]) -> Option<SockRecord> {
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
        v6: family == libc::AF_INET6 as u8,
    })
}

/// Builds a dump request for one family and protocol; `states` is a bit mask of
/// TCP state numbers (`1 << state`).
pub(crate) fn build_request(family: u8, protocol: u8, states: u32, seq: u32) -> [u8; REQ_LEN] {
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

/// Builds a legacy `TCPDIAG_GETSOCK` dump request: TCP sockets of both
/// families whose state is in the `states` bit mask, in one table walk.
pub(crate) fn build_tcp_compat_request(states: u32, seq: u32) -> [u8; COMPAT_REQ_LEN] {
    let mut r = [0u8; COMPAT_REQ_LEN];
    r[0..4].copy_from_slice(&(COMPAT_REQ_LEN as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    r[6..8].copy_from_slice(&flags.to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    // idiag_family: ignored by dumps (the kernel uses AF_UNSPEC).
    r[16] = libc::AF_INET as u8;
    // src_len, dst_len, idiag_ext (no attributes) and the socket id stay 0.
    r[NLMSG_HDR + 52..NLMSG_HDR + 56].copy_from_slice(&states.to_ne_bytes());
    r
}

/// How TCP sockets are dumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpDumpMode {
    /// Not tried yet.
    Untried,
    /// One `TCPDIAG_GETSOCK` walk for both families.
    BothFamilies,
    /// One `SOCK_DIAG_BY_FAMILY` walk per family (the kernel refused the
    /// legacy request).
    PerFamily,
}

/// A kept-open NETLINK_SOCK_DIAG socket with a reused receive buffer.
#[derive(Debug)]
pub(crate) struct SockDiag {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
    tcp_mode: TcpDumpMode,
}

/// Receive buffer size; the kernel fills up to ~32 KiB per dump message batch.
const RECV_BUF: usize = 64 * 1024;

impl SockDiag {
    /// Opens the netlink socket.
    pub(crate) fn open() -> Result<Self, SysError> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(SysError::Os {
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
            tcp_mode: TcpDumpMode::Untried,
        })
    }

    /// How TCP dumps are made (after the first [`SockDiag::dump_tcp`]).
    #[cfg(test)]
    pub(crate) fn tcp_mode(&self) -> TcpDumpMode {
        self.tcp_mode
    }

    /// Forces per-family TCP dumps (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn force_per_family(&mut self) {
        self.tcp_mode = TcpDumpMode::PerFamily;
    }

    /// Dumps the TCP sockets of both families whose state is in `states`, in
    /// one table walk when the kernel serves the legacy request, else one walk
    /// per family (IPv4 first). Logs once which way is used.
    pub(crate) fn dump_tcp(
        &mut self,
        states: u32,
        mut each: impl FnMut(&SockRecord),
    ) -> Result<(), SysError> {
        if self.tcp_mode != TcpDumpMode::PerFamily {
            self.seq = self.seq.wrapping_add(1);
            let req = build_tcp_compat_request(states, self.seq);
            let mut seen = 0u64;
            let result = self.request(&req, TCPDIAG_GETSOCK, &mut |r| {
                seen += 1;
                each(r)
            });
            match result {
                Ok(()) => {
                    if self.tcp_mode == TcpDumpMode::Untried {
                        tracing::info!(
                            "socket pass: TCP sockets of both families in one sock_diag walk (TCPDIAG_GETSOCK)"
                        );
                        self.tcp_mode = TcpDumpMode::BothFamilies;
                    }
                    return Ok(());
                }
                // Refused before any socket was reported: nothing counted
                // twice if we ask again per family.
                Err(e) if seen == 0 && self.tcp_mode == TcpDumpMode::Untried => {
                    tracing::info!(
                        "socket pass: one sock_diag walk per family (the kernel refused TCPDIAG_GETSOCK: {e})"
                    );
                    self.tcp_mode = TcpDumpMode::PerFamily;
                }
                Err(e) => return Err(e),
            }
        }
        let tcp = libc::IPPROTO_TCP as u8;
        self.dump(libc::AF_INET as u8, tcp, states, &mut each)?;
        self.dump(libc::AF_INET6 as u8, tcp, states, &mut each)
    }

    /// Dumps every socket of `family` (AF_INET / AF_INET6) and `protocol`
    /// (IPPROTO_TCP / IPPROTO_UDP) whose state is in the `states` bit mask,
    /// calling `each` per socket.
    pub(crate) fn dump(
        &mut self,
        family: u8,
        protocol: u8,
        states: u32,
        mut each: impl FnMut(&SockRecord),
    ) -> Result<(), SysError> {
        self.seq = self.seq.wrapping_add(1);
        let req = build_request(family, protocol, states, self.seq);
        self.request(&req, SOCK_DIAG_BY_FAMILY, &mut each)
    }

    /// Sends one dump request and walks its replies (messages of type `kind`).
    fn request(
        &mut self,
        req: &[u8],
        kind: u16,
        each: &mut impl FnMut(&SockRecord),
    ) -> Result<(), SysError> {
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
            return Err(SysError::Os {
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
                return Err(SysError::Os {
                    call: "recv(sock_diag)",
                    source: err,
                });
            }
            if n == 0 {
                return Err(SysError::Netlink("socket closed during dump"));
            }
            match walk_messages(&self.buf[..n as usize], self.seq, kind, each)? {
                Walk::Done => return Ok(()),
                Walk::More => {}
            }
        }
    }
}

/// Whether a dump continues after one datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// More datagrams follow.
    More,
    /// NLMSG_DONE seen.
    Done,
}

/// Walks the netlink messages of one datagram; socket records are the
/// messages of type `kind` (the request's type).
pub(crate) fn walk_messages(
    mut data: &[u8],
    seq: u32,
    kind_wanted: u16,
    each: &mut impl FnMut(&SockRecord),
) -> Result<Walk, SysError> {
    while data.len() >= NLMSG_HDR {
        let len = u32_ne(&data[0..4]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let msg_seq = u32_ne(&data[8..12]);
        if len < NLMSG_HDR || len > data.len() {
            return Err(SysError::Netlink("truncated message"));
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
                        _ => Err(SysError::Netlink("dump failed")),
                    };
                }
                k if k == kind_wanted => {
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
    fn state_names_match_kernel_numbers() {
        assert_eq!(state_name(tcp_state::ESTABLISHED), "ESTABLISHED");
        assert_eq!(state_name(tcp_state::TIME_WAIT), "TIME_WAIT");
        assert_eq!(state_name(tcp_state::CLOSE_WAIT), "CLOSE_WAIT");
        assert_eq!(state_name(tcp_state::LISTEN), "LISTEN");
        assert_eq!(state_name(200), "UNKNOWN");
    }

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
    fn compat_request_layout() {
        let r = build_tcp_compat_request(1 << tcp_state::LISTEN, 9);
        assert_eq!(u32_ne(&r[0..4]), 76, "header + struct inet_diag_req");
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), TCPDIAG_GETSOCK);
        assert_eq!(u32_ne(&r[8..12]), 9);
        assert_eq!(r[19], 0, "no extensions");
        assert_eq!(u32_ne(&r[68..72]), 1 << 10, "states after the 48-byte id");
        assert_eq!(u32_ne(&r[72..76]), 0);
    }

    /// Every TCP socket of this test's own ports, by (state, local port,
    /// remote port, v6, inode).
    fn ours(diag: &mut SockDiag, ports: &[u16]) -> Vec<(u8, u16, u16, bool, u32)> {
        let mut v = Vec::new();
        diag.dump_tcp(u32::MAX, |r| {
            if ports.contains(&r.sport) || ports.contains(&r.dport) {
                v.push((r.state, r.sport, r.dport, r.v6, r.inode));
            }
        })
        .unwrap();
        v.sort_unstable();
        v
    }

    #[test]
    fn one_walk_for_both_families_matches_per_family_walks() {
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let p4 = l4.local_addr().unwrap().port();
        let Ok(l6) = TcpListener::bind("[::1]:0") else {
            println!("skipping: no IPv6 loopback");
            return;
        };
        let p6 = l6.local_addr().unwrap().port();
        let c4 = std::net::TcpStream::connect(("127.0.0.1", p4)).unwrap();
        let c6 = std::net::TcpStream::connect(l6.local_addr().unwrap()).unwrap();
        let (_a4, _) = l4.accept().unwrap();
        let (_a6, _) = l6.accept().unwrap();
        let ports = [p4, p6];

        let mut both = SockDiag::open().unwrap();
        let one_walk = ours(&mut both, &ports);
        assert_eq!(
            both.tcp_mode(),
            TcpDumpMode::BothFamilies,
            "kernel serves TCPDIAG_GETSOCK"
        );
        let mut per_family = SockDiag::open().unwrap();
        per_family.force_per_family();
        let two_walks = ours(&mut per_family, &ports);
        assert_eq!(one_walk, two_walks);
        // 2 listeners + 2 client ends + 2 accepted ends, both families.
        assert_eq!(one_walk.len(), 6, "{one_walk:?}");
        assert_eq!(one_walk.iter().filter(|s| s.3).count(), 3, "{one_walk:?}");
        assert_eq!(
            one_walk.iter().filter(|s| s.0 == tcp_state::LISTEN).count(),
            2
        );
        let c4_port = c4.local_addr().unwrap().port();
        let c6_port = c6.local_addr().unwrap().port();
        for port in [c4_port, c6_port] {
            assert!(
                one_walk
                    .iter()
                    .any(|s| s.0 == tcp_state::ESTABLISHED && s.1 == port && s.4 != 0),
                "client end {port} with its inode: {one_walk:?}"
            );
        }
    }

    #[test]
    fn bound_inactive_filter_selects_bound_only_sockets() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (6, 8) {
            println!("skipping: bound-only sockets are dumped from kernel 6.8");
            return;
        }
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_in is valid.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        // SAFETY: valid address and length.
        assert_eq!(
            unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) },
            0
        );
        let mut len = len;
        // SAFETY: valid out pointers.
        unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut sa).cast(), &mut len) };
        let port = u16::from_be(sa.sin_port);
        let mut diag = SockDiag::open().unwrap();
        let mut with_bit = Vec::new();
        diag.dump_tcp(u32::MAX, |r| {
            if r.sport == port {
                with_bit.push(r.state);
            }
        })
        .unwrap();
        assert_eq!(with_bit, vec![tcp_state::CLOSE]);
        let mut without = 0;
        diag.dump_tcp(!(1 << tcp_state::BOUND_INACTIVE), |r| {
            without += u32::from(r.sport == port);
        })
        .unwrap();
        assert_eq!(without, 0, "only the bind-table walk reports it");
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
        assert!(walk_messages(&d, 0, SOCK_DIAG_BY_FAMILY, &mut |_| {}).is_err());
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
