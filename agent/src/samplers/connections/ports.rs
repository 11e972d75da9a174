//! Ephemeral ports: the usable range (`ip_local_port_range` minus
//! `ip_local_reserved_ports`) and sets of ports.

use crate::sys::procfile::{fields, parse_u64};

/// A set of 65,536 ports.
#[derive(Clone)]
pub(crate) struct PortSet([u64; 1024]);

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
    pub(crate) fn insert(&mut self, p: u16) {
        self.0[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    /// Whether `p` is in the set.
    pub(crate) fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }
    /// Empties the set.
    pub(crate) fn clear(&mut self) {
        self.0 = [0; 1024];
    }
    /// Number of ports.
    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Whether the set is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub(crate) fn parse_port_range(content: &[u8]) -> Option<(u16, u16)> {
    let mut it = fields(content);
    let lo = u16::try_from(parse_u64(it.next()?)?).ok()?;
    let hi = u16::try_from(parse_u64(it.next()?)?).ok()?;
    (lo <= hi).then_some((lo, hi))
}

/// Parses `ip_local_reserved_ports` ("8080,9000-9010", or empty) into `out`.
pub(crate) fn parse_reserved_ports(content: &[u8], out: &mut PortSet) -> Option<()> {
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
pub(crate) fn ephemeral_capacity(range: (u16, u16), reserved: &PortSet) -> u64 {
    (range.0..=range.1)
        .filter(|p| !reserved.contains(*p))
        .count() as u64
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
}
