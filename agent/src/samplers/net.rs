//! Network and connections: interface counters (/proc/net/dev), TCP counters
//! (/proc/net/netstat, /proc/net/snmp), file handles, conntrack, and the socket
//! pass over netlink sock_diag: sockets by state, listeners with their accept
//! queue and owner, ephemeral-port use per (source, destination, port) against
//! the usable range, CLOSE_WAIT / TIME_WAIT per owner and destination, and the
//! sockets each process holds (shared with the process sampler).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodewatch_proto::pb;

use super::owners::{OwnerPassStats, SocketOwners};
use super::procfile::{ProcFile, fields, lines, parse_u64};
use super::sockdiag::{SockDiag, SockRecord, state_name, tcp_state};
use super::{PidMap, Sampler, SamplerError};

/// What the socket pass learnt about one process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PidSockets {
    /// TCP sockets held, by state number.
    pub states: [u32; 13],
    /// Open descriptors (fd directory size), when the kernel reports it.
    pub fds: Option<u64>,
}

/// Results of the latest socket pass, shared with the process pass.
#[derive(Debug, Default)]
pub struct SocketPassShare {
    /// When the socket pass produced them.
    pub at: Option<Instant>,
    /// Per process.
    pub by_pid: PidMap<PidSockets>,
    /// Every pid of /proc as the socket pass listed it (ascending), when the
    /// listing was complete; the process pass of the same cycle reuses it
    /// instead of listing /proc again.
    pub pids: Option<Vec<u32>>,
}

/// Filled by the socket pass and read by the process pass.
pub type SocketsByPid = Arc<Mutex<SocketPassShare>>;

/// Bound on distinct keys of the aggregation maps (ephemeral tuples, owner
/// tuples); sockets beyond it are still counted by state.
pub const MAX_TUPLES: usize = 16_384;

/// A set of 65,536 ports.
#[derive(Clone)]
pub struct PortSet([u64; 1024]);

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortSet({} ports)", self.len())
    }
}

impl Default for PortSet {
    fn default() -> Self {
        Self([0; 1024])
    }
}

impl PortSet {
    /// Adds a port.
    pub fn insert(&mut self, p: u16) {
        self.0[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    /// Whether `p` is in the set.
    pub fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }
    /// Empties the set.
    pub fn clear(&mut self) {
        self.0 = [0; 1024];
    }
    /// Number of ports.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub fn parse_port_range(content: &[u8]) -> Option<(u16, u16)> {
    let mut it = fields(content);
    let lo = u16::try_from(parse_u64(it.next()?)?).ok()?;
    let hi = u16::try_from(parse_u64(it.next()?)?).ok()?;
    (lo <= hi).then_some((lo, hi))
}

/// Parses `ip_local_reserved_ports` ("8080,9000-9010", or empty) into `out`.
pub fn parse_reserved_ports(content: &[u8], out: &mut PortSet) -> Option<()> {
    out.clear();
    let trimmed = fields(content).next().unwrap_or(b"");
    for part in trimmed.split(|&b| b == b',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.iter().position(|&b| b == b'-') {
            Some(i) => (parse_u64(&part[..i])?, parse_u64(&part[i + 1..])?),
            None => {
                let v = parse_u64(part)?;
                (v, v)
            }
        };
        for p in lo..=hi.min(65535) {
            out.insert(p as u16);
        }
    }
    Some(())
}

/// Usable ephemeral ports: the range minus the reserved ports inside it.
pub fn ephemeral_capacity(range: (u16, u16), reserved: &PortSet) -> u64 {
    (range.0..=range.1)
        .filter(|p| !reserved.contains(*p))
        .count() as u64
}

/// Reads `Name: header...` / `Name: values...` line pairs (/proc/net/netstat and
/// /proc/net/snmp) and returns the value of `section`.`key`.
pub fn snmp_value(content: &[u8], section: &[u8], key: &[u8]) -> Option<u64> {
    let mut it = lines(content);
    while let Some(header) = it.next() {
        let values = it.next()?;
        let mut h = fields(header);
        let mut v = fields(values);
        let name = h.next()?;
        v.next()?;
        if name.strip_suffix(b":") != Some(section) {
            continue;
        }
        for (k, val) in h.zip(v) {
            if k == key {
                return parse_u64(val);
            }
        }
    }
    None
}

/// Parses /proc/net/dev.
pub fn parse_net_dev(content: &[u8], out: &mut Vec<pb::NetInterfaceStats>) -> Option<()> {
    for line in lines(content).skip(2) {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?.trim();
        let mut v = [0u64; 16];
        let mut it = fields(&line[colon + 1..]);
        for slot in &mut v {
            *slot = parse_u64(it.next()?)?;
        }
        out.push(pb::NetInterfaceStats {
            name: name.to_string(),
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errors: v[2],
            rx_dropped: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errors: v[10],
            tx_dropped: v[11],
        });
    }
    Some(())
}

fn first_u64(content: &[u8]) -> Option<u64> {
    parse_u64(fields(content).next()?)
}

/// Reads /proc/PID/comm (small, per listener / owner only).
pub fn process_name(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/comm"))
        .map(|b| String::from_utf8_lossy(b.trim_ascii_end()).into_owned())
        .unwrap_or_default()
}

/// Sockets in use per family from /proc/net/sockstat and sockstat6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockstatCounts {
    /// TCP sockets in the hash tables (listeners included, TIME_WAIT not), IPv4 and IPv6.
    pub tcp: [u64; 2],
    /// TIME_WAIT sockets, both families.
    pub tw: u64,
    /// TCP sockets allocated, both families, every network namespace: hashed
    /// ones (`tcp`) plus those in no table yet (created, or bound only).
    pub tcp_alloc: u64,
    /// UDP sockets, IPv4 and IPv6.
    pub udp: [u64; 2],
}

/// Value after `key` on the line starting with `prefix` ("TCP: inuse 3 orphan 0 tw 5").
pub fn sockstat_value(content: &[u8], prefix: &[u8], key: &[u8]) -> Option<u64> {
    let line = lines(content).find(|l| l.starts_with(prefix))?;
    let mut it = fields(line).skip(1);
    while let Some(k) = it.next() {
        let v = it.next()?;
        if k == key {
            return parse_u64(v);
        }
    }
    None
}

fn sockstat_counts(v4: &mut ProcFile, v6: &mut Option<ProcFile>) -> Option<SockstatCounts> {
    let a = v4.read().ok()?;
    let tcp4 = sockstat_value(a, b"TCP:", b"inuse")?;
    let tw = sockstat_value(a, b"TCP:", b"tw")?;
    let tcp_alloc = sockstat_value(a, b"TCP:", b"alloc")?;
    let udp4 = sockstat_value(a, b"UDP:", b"inuse")?;
    let (tcp6, udp6) = match v6 {
        Some(f) => {
            let b = f.read().ok()?;
            (
                sockstat_value(b, b"TCP6:", b"inuse")?,
                sockstat_value(b, b"UDP6:", b"inuse")?,
            )
        }
        // No IPv6 in this kernel: nothing to walk.
        None => (0, 0),
    };
    Some(SockstatCounts {
        tcp: [tcp4, tcp6],
        tw,
        tcp_alloc,
        udp: [udp4, udp6],
    })
}

/// States of the non-listening TCP dump. Kernels 6.8+ also report sockets
/// that are bound but neither listening nor connected (pseudo-state
/// BOUND_INACTIVE, shown as CLOSE) when its bit is set, at the price of a walk
/// of the whole bind hash table. Such sockets are in no other table, so when
/// every allocated TCP socket is accounted for by the hashed ones
/// (`alloc <= inuse` in /proc/net/sockstat{,6}) there is none, and the walk is
/// left out; otherwise (or without the counts) it is kept.
pub fn non_listen_states(inuse: Option<SockstatCounts>) -> u32 {
    let all = !(1u32 << tcp_state::LISTEN);
    match inuse {
        Some(c) if c.tcp_alloc <= c.tcp[0] + c.tcp[1] => all & !(1 << tcp_state::BOUND_INACTIVE),
        _ => all,
    }
}

/// Aggregates of one socket pass.
#[derive(Debug, Default)]
struct PassState {
    tcp_counts: [u64; 13],
    udp_counts: [u64; 13],
    listeners: Vec<SockRecord>,
    listening: PortSet,
    reserved: PortSet,
    /// (inode, state) of every TCP socket with a file, sorted by inode after the dump.
    owned: Vec<(u32, u8)>,
    /// Owner pid per entry of `owned`.
    owners: Vec<u32>,
    /// Inodes of `owned`, sorted.
    alive: Vec<u32>,
    ephemeral: HashMap<(IpAddr, IpAddr, u16), u64>,
    /// CLOSE_WAIT sockets: (inode, remote address, remote port or 0 for accepted sockets).
    close_wait: Vec<(u32, IpAddr, u16)>,
    /// TIME_WAIT per (remote address, remote port or 0).
    time_wait: HashMap<(IpAddr, u16), u64>,
    dropped_tuples: u64,
}

/// The connections sampler (network counters + socket pass).
#[derive(Debug)]
pub struct ConnectionsSampler {
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
    pass: PassState,
    socket_owners: SocketOwners,
    last_owner_stats: OwnerPassStats,
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
    pub fn new(
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
            pass: PassState::default(),
            socket_owners: SocketOwners::new(max_processes, full_refresh, open_budget)?,
            last_owner_stats: OwnerPassStats::default(),
            by_pid,
            top,
            permission_denied: 0,
        })
    }

    /// Owner-cache counters of the latest socket pass.
    pub fn last_owner_stats(&self) -> OwnerPassStats {
        self.last_owner_stats
    }

    /// Processes whose fds could not be read, since start.
    pub fn permission_denied(&self) -> u64 {
        self.permission_denied
    }

    fn socket_pass(&mut self, range: (u16, u16)) -> Result<(), SamplerError> {
        let p = &mut self.pass;
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
        // A dump walks the whole established hash table (sized by RAM, not by
        // sockets): skip the walk /proc/net/sockstat{,6} prove empty.
        let inuse = sockstat_counts(&mut self.sockstat, &mut self.sockstat6);
        let mut listeners = [0u64; 2];
        self.diag.dump_tcp(1 << tcp_state::LISTEN, |r| {
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
            self.diag.dump_tcp(non_listen_states(inuse), |r| {
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
                self.diag.dump(fam, udp, u32::MAX, |r| {
                    p.udp_counts[usize::from(r.state.min(12))] += 1;
                })?;
            }
        }

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
        self.last_owner_stats = stats;
        Ok(())
    }

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
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(s, c)| pb::SocketStateCount {
            state: state_name(s as u8).to_string(),
            count: *c,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_and_reserved() {
        assert_eq!(parse_port_range(b"32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range(b"61000 32768\n"), None);
        let mut r = PortSet::default();
        parse_reserved_ports(b"\n", &mut r).unwrap();
        assert!(r.is_empty());
        parse_reserved_ports(b"8080,40000-40009,65535\n", &mut r).unwrap();
        assert_eq!(r.len(), 12);
        assert!(r.contains(40005) && r.contains(65535) && !r.contains(40010));
        assert_eq!(
            ephemeral_capacity((32768, 60999), &r),
            60999 - 32768 + 1 - 10
        );
    }

    #[test]
    fn parses_real_netstat_and_snmp() {
        let netstat: &[u8] = include_bytes!("fixtures/net_netstat");
        let snmp: &[u8] = include_bytes!("fixtures/net_snmp");
        assert_eq!(snmp_value(netstat, b"TcpExt", b"TW"), Some(18));
        assert_eq!(snmp_value(netstat, b"TcpExt", b"ListenOverflows"), Some(0));
        assert_eq!(snmp_value(netstat, b"TcpExt", b"NoSuchKey"), None);
        assert_eq!(snmp_value(snmp, b"Tcp", b"ActiveOpens"), Some(37));
        assert_eq!(snmp_value(snmp, b"Tcp", b"RetransSegs"), Some(0));
        assert_eq!(snmp_value(snmp, b"Tcp", b"InSegs"), Some(9537));
        assert_eq!(
            snmp_value(snmp, b"Tcp", b"MaxConn"),
            None,
            "-1 is not a counter"
        );
    }

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

    #[test]
    fn parses_sockstat() {
        let v4 =
            b"sockets: used 15\nTCP: inuse 1 orphan 0 tw 5 alloc 1 mem 234\nUDP: inuse 2 mem 0\n";
        assert_eq!(sockstat_value(v4, b"TCP:", b"inuse"), Some(1));
        assert_eq!(sockstat_value(v4, b"TCP:", b"tw"), Some(5));
        assert_eq!(sockstat_value(v4, b"UDP:", b"inuse"), Some(2));
        assert_eq!(sockstat_value(v4, b"UDP:", b"nope"), None);
        assert_eq!(
            sockstat_value(b"TCP6: inuse 4\n", b"TCP6:", b"inuse"),
            Some(4)
        );
    }

    #[test]
    fn parses_real_net_dev() {
        let mut v = Vec::new();
        parse_net_dev(include_bytes!("fixtures/net_dev"), &mut v).unwrap();
        let lo = v.iter().find(|i| i.name == "lo").unwrap();
        assert_eq!(lo.rx_bytes, 28778);
        assert_eq!(lo.rx_packets, 242);
        assert_eq!(lo.tx_bytes, 28778);
        assert_eq!(lo.tx_packets, 242);
        assert!(v.iter().any(|i| i.name == "ifb0"));
    }

    #[test]
    fn state_names_match_kernel_numbers() {
        assert_eq!(state_name(tcp_state::ESTABLISHED), "ESTABLISHED");
        assert_eq!(state_name(tcp_state::TIME_WAIT), "TIME_WAIT");
        assert_eq!(state_name(tcp_state::CLOSE_WAIT), "CLOSE_WAIT");
        assert_eq!(state_name(tcp_state::LISTEN), "LISTEN");
        assert_eq!(state_name(200), "UNKNOWN");
    }
}
