//! Network and connections: interface counters (/proc/net/dev), TCP counters
//! (/proc/net/netstat, /proc/net/snmp), file handles, conntrack, and the socket
//! pass over netlink sock_diag: sockets by state, listeners with their accept
//! queue and owner, ephemeral-port use per (source, destination, port) against
//! the usable range, CLOSE_WAIT / TIME_WAIT per owner and destination, and the
//! sockets each process holds (shared with the process sampler).
//!
//! How sockets are attributed to processes: sock_diag reports each socket's
//! inode (0 for TIME_WAIT and request sockets, which have no file, so they
//! have no owner: TIME_WAIT is reported per destination only). The owner
//! cache ([`owners::SocketOwners`]) maps inodes to the pids whose
//! /proc/PID/fd links name them. A socket held by several processes (inherited
//! across fork, passed over a Unix socket) counts in the sockets-by-state of
//! every holder, but the listener and CLOSE_WAIT lists name one owner: the
//! first holder the cache reports, in its map order (not the lowest pid). A
//! socket whose holder could not be read (permission, or it exited meanwhile)
//! is reported with pid 0 and no process name.

mod counters;
mod dump;
mod owners;
mod ports;
mod share;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nodewatch_proto::pb;

use self::counters::{first_u64, parse_net_dev, snmp_value, sockstat_counts};
use self::dump::SocketPass;
use self::owners::SocketOwners;
use self::ports::{ephemeral_capacity, parse_port_range, parse_reserved_ports};
pub(crate) use self::share::SocketsByPid;
use super::{Sampler, SamplerError};
use crate::sys::procfile::ProcFile;
use crate::sys::sockdiag::{SockDiag, nonzero_states};

/// Reads /proc/PID/comm (small, per listener / owner only).
fn process_name(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/comm"))
        .map(|b| String::from_utf8_lossy(b.trim_ascii_end()).into_owned())
        .unwrap_or_default()
}

/// The connections sampler (network counters + socket pass).
#[derive(Debug)]
pub(crate) struct ConnectionsSampler {
    diag: SockDiag,
    netstat: ProcFile,
    snmp: ProcFile,
    net_dev: ProcFile,
    file_nr: ProcFile,
    file_max: ProcFile,
    port_range: ProcFile,
    sockstat: ProcFile,
    sockstat6: Option<ProcFile>,
    reserved_ports: Option<ProcFile>,
    conntrack: Option<(ProcFile, ProcFile)>,
    pass: SocketPass,
    socket_owners: SocketOwners,
    by_pid: SocketsByPid,
    top: usize,
    permission_denied: u64,
}

fn open_conntrack() -> Option<(ProcFile, ProcFile)> {
    Some((
        ProcFile::open("/proc/sys/net/netfilter/nf_conntrack_count").ok()?,
        ProcFile::open("/proc/sys/net/netfilter/nf_conntrack_max").ok()?,
    ))
}

impl ConnectionsSampler {
    /// Opens the netlink socket and the counter files. `top` bounds the
    /// ephemeral and per-owner lists; `by_pid` receives sockets per process;
    /// `full_refresh`: how often every process's descriptors are re-read even
    /// when nothing suggests a change; `open_budget`: fd directories kept open.
    pub(crate) fn new(
        top: usize,
        max_processes: usize,
        full_refresh: Duration,
        open_budget: usize,
        by_pid: SocketsByPid,
    ) -> Result<Self, SamplerError> {
        Ok(Self {
            diag: SockDiag::open()?,
            netstat: ProcFile::open("/proc/net/netstat")?,
            snmp: ProcFile::open("/proc/net/snmp")?,
            net_dev: ProcFile::open("/proc/net/dev")?,
            file_nr: ProcFile::open("/proc/sys/fs/file-nr")?,
            file_max: ProcFile::open("/proc/sys/fs/file-max")?,
            port_range: ProcFile::open("/proc/sys/net/ipv4/ip_local_port_range")?,
            sockstat: ProcFile::open("/proc/net/sockstat")?,
            sockstat6: ProcFile::open("/proc/net/sockstat6").ok(),
            reserved_ports: ProcFile::open("/proc/sys/net/ipv4/ip_local_reserved_ports").ok(),
            conntrack: open_conntrack(),
            pass: SocketPass::default(),
            socket_owners: SocketOwners::new(max_processes, full_refresh, open_budget)?,
            by_pid,
            top,
            permission_denied: 0,
        })
    }

    fn socket_pass(&mut self, range: (u16, u16)) -> Result<(), SamplerError> {
        let inuse = sockstat_counts(&mut self.sockstat, &mut self.sockstat6);
        self.pass.dump(&mut self.diag, inuse, range)?;
        self.attribute_owners()
    }

    /// Finds the owner of every socket of the dump that has a file, fills the
    /// share for the process pass, and records one owner per socket for the
    /// listener and CLOSE_WAIT lists.
    fn attribute_owners(&mut self) -> Result<(), SamplerError> {
        let p = &mut self.pass;
        // Owners: the incremental cache re-reads only processes that changed.
        p.owned.sort_unstable_by_key(|&(inode, _)| inode);
        p.owners.resize(p.owned.len(), 0);
        p.alive.clear();
        p.alive.extend(p.owned.iter().map(|&(inode, _)| inode));
        let mut share = self.by_pid.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        share.at = Some(now);
        let by_pid = &mut share.by_pid;
        by_pid.clear();
        let owned = &p.owned;
        let owners = &mut p.owners;
        let stats = self.socket_owners.update(&p.alive, now, |pid, inode| {
            if let Ok(i) = owned.binary_search_by_key(&inode, |&(ino, _)| ino) {
                if owners[i] == 0 {
                    owners[i] = pid;
                }
                let entry = by_pid.entry(pid).or_default();
                entry.states[usize::from(owned[i].1.min(12))] += 1;
            }
        })?;
        for (pid, fds) in self.socket_owners.fd_counts() {
            by_pid.entry(pid).or_default().fds = Some(fds);
        }
        match (self.socket_owners.pids(), &mut share.pids) {
            (Some(pids), Some(shared)) => {
                shared.clear();
                shared.extend_from_slice(pids);
            }
            (Some(pids), none) => *none = Some(pids.to_vec()),
            (None, shared) => *shared = None,
        }
        drop(share);
        self.permission_denied += stats.permission_denied;
        Ok(())
    }

    /// The owner recorded for socket `inode` by this pass; 0 when none was
    /// found.
    fn owner_of(&self, inode: u32) -> u32 {
        match self
            .pass
            .owned
            .binary_search_by_key(&inode, |&(ino, _)| ino)
        {
            Ok(i) => self.pass.owners[i],
            Err(_) => 0,
        }
    }
}

fn state_counts(counts: &[u64; 13]) -> Vec<pb::SocketStateCount> {
    nonzero_states(counts)
        .map(|(state, count)| pb::SocketStateCount {
            state: state.to_string(),
            count,
        })
        .collect()
}

fn addr_string(a: &IpAddr) -> String {
    a.to_string()
}

impl Sampler for ConnectionsSampler {
    fn name(&self) -> &'static str {
        "connections"
    }

    fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError> {
        let mut c = pb::ConnectionStats::default();
        let netstat = self.netstat.read()?;
        c.listen_overflows = snmp_value(netstat, b"TcpExt", b"ListenOverflows").unwrap_or(0);
        c.listen_drops = snmp_value(netstat, b"TcpExt", b"ListenDrops").unwrap_or(0);
        c.retransmits = snmp_value(self.snmp.read()?, b"Tcp", b"RetransSegs").unwrap_or(0);
        parse_net_dev(self.net_dev.read()?, &mut c.interfaces).ok_or_else(|| {
            SamplerError::Parse {
                path: self.net_dev.path().to_path_buf(),
                reason: "unexpected interface line",
            }
        })?;
        c.file_handles = first_u64(self.file_nr.read()?).unwrap_or(0);
        c.file_handles_max = first_u64(self.file_max.read()?).unwrap_or(0);
        if self.conntrack.is_none() {
            // The module may have been loaded since the last pass.
            self.conntrack = open_conntrack();
        }
        if let Some((count, max)) = &mut self.conntrack {
            c.conntrack_entries = count.read().ok().and_then(first_u64);
            c.conntrack_max = max.read().ok().and_then(first_u64);
        }

        let range =
            parse_port_range(self.port_range.read()?).ok_or_else(|| SamplerError::Parse {
                path: self.port_range.path().to_path_buf(),
                reason: "expected two ports",
            })?;
        if let Some(f) = &mut self.reserved_ports {
            parse_reserved_ports(f.read()?, &mut self.pass.reserved);
        }
        let capacity = ephemeral_capacity(range, &self.pass.reserved);
        if let Err(e) = self.socket_pass(range) {
            // No sock_diag (e.g. inet_diag unavailable in a container): the
            // counters above are still worth sending; the error is counted.
            batch.connections = Some(c);
            return Err(e);
        }

        c.tcp_states = state_counts(&self.pass.tcp_counts);
        c.udp_states = state_counts(&self.pass.udp_counts);
        let mut names: HashMap<u32, String> = HashMap::new();
        let mut name_of = |pid: u32| -> String {
            if pid == 0 {
                return String::new();
            }
            names
                .entry(pid)
                .or_insert_with(|| process_name(pid))
                .clone()
        };
        for l in &self.pass.listeners {
            let pid = self.owner_of(l.inode);
            c.listeners.push(pb::ListenerStats {
                address: addr_string(&l.src),
                port: u32::from(l.sport),
                accept_queue: l.rqueue,
                backlog: l.wqueue,
                pid,
                process: name_of(pid),
            });
        }

        let mut eph: Vec<(&(IpAddr, IpAddr, u16), &u64)> = self.pass.ephemeral.iter().collect();
        eph.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        c.ephemeral_ports = eph
            .into_iter()
            .take(self.top)
            .map(|((src, dst, dport), n)| pb::EphemeralPortUse {
                src_address: addr_string(src),
                dst_address: addr_string(dst),
                dst_port: u32::from(*dport),
                sockets: *n,
                capacity,
            })
            .collect();

        let mut cw: HashMap<(u32, IpAddr, u16), u64> = HashMap::new();
        for &(inode, dst, port) in &self.pass.close_wait {
            let pid = if inode == 0 { 0 } else { self.owner_of(inode) };
            *cw.entry((pid, dst, port)).or_default() += 1;
        }
        let mut cw: Vec<_> = cw.into_iter().collect();
        cw.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for ((pid, dst, port), n) in cw.into_iter().take(self.top) {
            c.sockets_by_owner.push(pb::SocketsByOwner {
                state: "CLOSE_WAIT".to_string(),
                pid,
                process: name_of(pid),
                dst_address: addr_string(&dst),
                dst_port: u32::from(port),
                count: n,
            });
        }
        let mut tw: Vec<_> = self.pass.time_wait.iter().collect();
        tw.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for ((dst, port), n) in tw.into_iter().take(self.top) {
            c.sockets_by_owner.push(pb::SocketsByOwner {
                state: "TIME_WAIT".to_string(),
                pid: 0,
                process: String::new(),
                dst_address: addr_string(dst),
                dst_port: u32::from(*port),
                count: *n,
            });
        }
        batch.connections = Some(c);
        Ok(())
    }
}
