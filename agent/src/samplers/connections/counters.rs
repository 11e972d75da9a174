//! Host-wide network counters: /proc/net/netstat and /proc/net/snmp,
//! /proc/net/dev, /proc/net/sockstat{,6}, and single-number files.

use nodewatch_proto::pb;

use crate::sys::procfile::{ProcFile, fields, lines, parse_u64};

/// Reads `Name: header...` / `Name: values...` line pairs (/proc/net/netstat and
/// /proc/net/snmp) and returns the value of `section`.`key`.
pub(crate) fn snmp_value(content: &[u8], section: &[u8], key: &[u8]) -> Option<u64> {
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
pub(crate) fn parse_net_dev(content: &[u8], out: &mut Vec<pb::NetInterfaceStats>) -> Option<()> {
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

/// The first number of a file (`file-nr`, `file-max`, conntrack counts).
pub(crate) fn first_u64(content: &[u8]) -> Option<u64> {
    parse_u64(fields(content).next()?)
}

/// Sockets in use per family from /proc/net/sockstat and sockstat6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SockstatCounts {
    /// TCP sockets in the hash tables (listeners included, TIME_WAIT not), IPv4 and IPv6.
    pub(crate) tcp: [u64; 2],
    /// TIME_WAIT sockets, both families.
    pub(crate) tw: u64,
    /// TCP sockets allocated, both families, every network namespace: hashed
    /// ones (`tcp`) plus those in no table yet (created, or bound only).
    pub(crate) tcp_alloc: u64,
    /// UDP sockets, IPv4 and IPv6.
    pub(crate) udp: [u64; 2],
}

/// Value after `key` on the line starting with `prefix` ("TCP: inuse 3 orphan 0 tw 5").
pub(crate) fn sockstat_value(content: &[u8], prefix: &[u8], key: &[u8]) -> Option<u64> {
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

pub(crate) fn sockstat_counts(
    v4: &mut ProcFile,
    v6: &mut Option<ProcFile>,
) -> Option<SockstatCounts> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_netstat_and_snmp() {
        let netstat: &[u8] = include_bytes!("../fixtures/net_netstat");
        let snmp: &[u8] = include_bytes!("../fixtures/net_snmp");
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
    fn parses_real_net_dev() {
        let mut v = Vec::new();
        parse_net_dev(include_bytes!("../fixtures/net_dev"), &mut v).unwrap();
        let lo = v.iter().find(|i| i.name == "lo").unwrap();
        assert_eq!(lo.rx_bytes, 28778);
        assert_eq!(lo.rx_packets, 242);
        assert_eq!(lo.tx_bytes, 28778);
        assert_eq!(lo.tx_packets, 242);
        assert!(v.iter().any(|i| i.name == "ifb0"));
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
}
