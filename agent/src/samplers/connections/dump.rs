//! The sock_diag dumps of the socket pass: TCP sockets by state (listeners
//! first), listeners with their queues, ephemeral-port use per (source,
//! destination, destination port), CLOSE_WAIT sockets and TIME_WAIT counts
//! per destination, UDP sockets by state, and the inodes of the TCP sockets
//! that have a file (to find their owners afterwards).

use std::collections::HashMap;
use std::net::IpAddr;

use super::counters::SockstatCounts;
use super::ports::PortSet;
use crate::sys::SysError;
use crate::sys::sockdiag::{SockDiag, SockRecord, tcp_state};

/// Bound on distinct keys of the aggregation maps (ephemeral tuples, owner
/// tuples); sockets beyond it are still counted by state.
const MAX_TUPLES: usize = 16_384;

/// States of the non-listening TCP dump. Kernels 6.8+ also report sockets
/// that are bound but neither listening nor connected (pseudo-state
/// BOUND_INACTIVE, shown as CLOSE) when its bit is set, at the price of a walk
/// of the whole bind hash table. Such sockets are in no other table, so when
/// every allocated TCP socket is accounted for by the hashed ones
/// (`alloc <= inuse` in /proc/net/sockstat{,6}) there is none, and the walk is
/// left out; otherwise (or without the counts) it is kept.
fn non_listen_states(inuse: Option<SockstatCounts>) -> u32 {
    let all = !(1u32 << tcp_state::LISTEN);
    match inuse {
        Some(c) if c.tcp_alloc <= c.tcp[0] + c.tcp[1] => all & !(1 << tcp_state::BOUND_INACTIVE),
        _ => all,
    }
}

/// The sock_diag dumps of one socket pass and what they add up to.
#[derive(Debug, Default)]
pub(super) struct SocketPass {
    /// TCP sockets by state number.
    pub(super) tcp_counts: [u64; 13],
    /// UDP sockets by state number.
    pub(super) udp_counts: [u64; 13],
    /// Listening sockets, IPv4 first, each family in the kernel's order.
    pub(super) listeners: Vec<SockRecord>,
    /// Their ports: a connection whose local port is one of them was accepted.
    pub(super) listening: PortSet,
    /// Reserved ports (`ip_local_reserved_ports`), set by the caller before each pass.
    pub(super) reserved: PortSet,
    /// (inode, state) of every TCP socket with a file, sorted by inode after the dump.
    pub(super) owned: Vec<(u32, u8)>,
    /// Owner pid per entry of `owned`.
    pub(super) owners: Vec<u32>,
    /// Inodes of `owned`, sorted.
    pub(super) alive: Vec<u32>,
    /// Outgoing sockets per (source, destination, destination port) whose
    /// local port is in the ephemeral range and not reserved.
    pub(super) ephemeral: HashMap<(IpAddr, IpAddr, u16), u64>,
    /// CLOSE_WAIT sockets: (inode, remote address, remote port or 0 for accepted sockets).
    pub(super) close_wait: Vec<(u32, IpAddr, u16)>,
    /// TIME_WAIT per (remote address, remote port or 0).
    pub(super) time_wait: HashMap<(IpAddr, u16), u64>,
    /// Sockets left out of `ephemeral` and `time_wait` at their bound (counted, not reported).
    pub(super) dropped_tuples: u64,
}

impl SocketPass {
    /// Runs the dumps of one pass over the kept-open netlink socket. `inuse`
    /// (sockets per family from /proc/net/sockstat{,6}) lets it skip dumps
    /// that would find nothing; `range` is `ip_local_port_range`.
    ///
    /// A dump walks the whole established hash table (sized by RAM, not by
    /// sockets), so skipping the walks /proc/net/sockstat{,6} prove empty
    /// saves most of the pass on a quiet host.
    pub(super) fn dump(
        &mut self,
        diag: &mut SockDiag,
        inuse: Option<SockstatCounts>,
        range: (u16, u16),
    ) -> Result<(), SysError> {
        let p = self;
        p.tcp_counts = [0; 13];
        p.udp_counts = [0; 13];
        p.listeners.clear();
        p.listening.clear();
        p.owned.clear();
        p.owners.clear();
        p.ephemeral.clear();
        p.close_wait.clear();
        p.time_wait.clear();
        p.dropped_tuples = 0;

        let udp = libc::IPPROTO_UDP as u8;
        let families = [libc::AF_INET as u8, libc::AF_INET6 as u8];
        // Listeners first, so that accepted sockets (local port = a listening
        // port) are known when the other states stream by. Each TCP dump
        // covers both families in one walk of the kernel's tables when the
        // kernel allows it (see `sockdiag`).
        let mut listeners = [0u64; 2];
        diag.dump_tcp(1 << tcp_state::LISTEN, |r| {
            listeners[usize::from(r.v6)] += 1;
            p.tcp_counts[usize::from(r.state.min(12))] += 1;
            p.listening.insert(r.sport);
            p.listeners.push(*r);
            if r.inode != 0 {
                p.owned.push((r.inode, r.state));
            }
        })?;
        // IPv4 listeners before IPv6 ones, each family in the kernel's order.
        p.listeners.sort_by_key(|r| r.v6);
        let skip_tcp = inuse
            .is_some_and(|c| c.tcp[0] <= listeners[0] && c.tcp[1] <= listeners[1] && c.tw == 0);
        if !skip_tcp {
            diag.dump_tcp(non_listen_states(inuse), |r| {
                p.tcp_counts[usize::from(r.state.min(12))] += 1;
                if r.inode != 0 {
                    p.owned.push((r.inode, r.state));
                }
                let accepted = p.listening.contains(r.sport);
                let remote_port = if accepted { 0 } else { r.dport };
                if !accepted
                    && r.sport >= range.0
                    && r.sport <= range.1
                    && !p.reserved.contains(r.sport)
                {
                    let key = (r.src, r.dst, r.dport);
                    if let Some(c) = p.ephemeral.get_mut(&key) {
                        *c += 1;
                    } else if p.ephemeral.len() < MAX_TUPLES {
                        p.ephemeral.insert(key, 1);
                    } else {
                        p.dropped_tuples += 1;
                    }
                }
                match r.state {
                    tcp_state::CLOSE_WAIT if p.close_wait.len() < MAX_TUPLES * 4 => {
                        p.close_wait.push((r.inode, r.dst, remote_port));
                    }
                    tcp_state::TIME_WAIT => {
                        let key = (r.dst, remote_port);
                        if let Some(c) = p.time_wait.get_mut(&key) {
                            *c += 1;
                        } else if p.time_wait.len() < MAX_TUPLES {
                            p.time_wait.insert(key, 1);
                        } else {
                            p.dropped_tuples += 1;
                        }
                    }
                    _ => {}
                }
            })?;
        }
        for (k, fam) in families.into_iter().enumerate() {
            let skip_udp = inuse.is_some_and(|c| c.udp[k] == 0);
            if !skip_udp {
                diag.dump(fam, udp, u32::MAX, |r| {
                    p.udp_counts[usize::from(r.state.min(12))] += 1;
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_table_walk_only_when_unhashed_sockets_exist() {
        let counts = |tcp4, tcp6, alloc| {
            Some(SockstatCounts {
                tcp: [tcp4, tcp6],
                tw: 3,
                tcp_alloc: alloc,
                udp: [0, 0],
            })
        };
        let bound = 1u32 << tcp_state::BOUND_INACTIVE;
        let listen = 1u32 << tcp_state::LISTEN;
        assert_eq!(non_listen_states(counts(10, 2, 12)) & bound, 0);
        assert_ne!(non_listen_states(counts(10, 2, 13)) & bound, 0);
        assert_ne!(non_listen_states(None) & bound, 0);
        for c in [counts(10, 2, 12), counts(1, 0, 5), None] {
            let s = non_listen_states(c);
            assert_eq!(s & listen, 0);
            for st in [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12] {
                assert_ne!(s & (1 << st), 0, "state {st}");
            }
        }
    }
}
