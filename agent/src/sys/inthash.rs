//! The hasher of maps keyed by the integers the kernel hands out (pids).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for the integer keys the kernel hands out (pids): one multiply
/// instead of SipHash, in maps looked up once per process or socket per pass.
/// Keys are not chosen by an adversary able to gain from collisions (pids are
/// bounded by pid_max and the maps by the process bound).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing: the high bits (which hashbrown uses for its
        // control bytes) depend on every bit of the key.
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by pid.
pub(crate) type PidMap<V> = HashMap<u32, V, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_map_spreads_sequential_keys() {
        let mut m: PidMap<u32> = PidMap::default();
        for pid in 0..10_000u32 {
            m.insert(pid, pid * 2);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u32).all(|p| m.get(&p) == Some(&(p * 2))));
        assert_eq!(m.get(&10_000), None);
        // Top 7 bits (hashbrown's tag) of sequential pids are spread out.
        let tags: std::collections::HashSet<u64> = (0..1_000u32)
            .map(|p| {
                let mut h = IntHasher::default();
                h.write_u32(p);
                h.finish() >> 57
            })
            .collect();
        assert!(tags.len() > 100, "{}", tags.len());
    }
}
