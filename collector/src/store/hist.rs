//! Arithmetic on sparse log-linear (H2) histograms: bucket bounds, merging and
//! percentiles.
//!
//! Layout (grouping power `g`): indices below `2^(g+1)` hold exactly their value;
//! above, index `i` belongs to group `k = i >> g` (k >= 2) and covers
//! `[2^(g+k-1) + 2^(k-1) * h, 2^(g+k-1) + 2^(k-1) * (h+1) - 1]` with `h = i mod 2^g`.

use std::collections::BTreeMap;

/// Inclusive value range of bucket `index` for grouping power `g`.
pub fn bucket_bounds(g: u8, index: u32) -> (u64, u64) {
    let g = u32::from(g.min(30));
    let i = u64::from(index);
    let k = i >> g;
    let h = i - (k << g);
    if k < 2 {
        return (i, i);
    }
    let shift = (g + k as u32 - 1).min(63);
    let width_shift = (k as u32 - 1).min(63);
    let lower = (1u64 << shift).saturating_add(h.saturating_mul(1u64 << width_shift));
    let upper = lower.saturating_add((1u64 << width_shift) - 1);
    (lower, upper)
}

/// Index of the bucket holding `value` for grouping power `g` (inverse of [`bucket_bounds`]).
pub fn bucket_index(g: u8, value: u64) -> u32 {
    let g = u32::from(g.min(30));
    if value < (1u64 << (g + 1)) {
        return value as u32;
    }
    let power = 63 - value.leading_zeros();
    let offset = (value - (1u64 << power)) >> (power - g);
    (((power - g + 1) as u64) << g) as u32 + offset as u32
}

/// A merged sparse histogram: bucket index -> count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedHistogram {
    /// Counts by bucket index.
    pub buckets: BTreeMap<u32, u64>,
}

impl MergedHistogram {
    /// Adds sparse (index, count) pairs.
    pub fn add(&mut self, sparse: &[(u32, u64)]) {
        for &(i, c) in sparse {
            let e = self.buckets.entry(i).or_default();
            *e = e.saturating_add(c);
        }
    }

    /// Total count.
    pub fn count(&self) -> u64 {
        self.buckets
            .values()
            .fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The `p`-th percentile (0..=100) as the upper bound of the bucket holding
    /// it (so the relative error is at most 2^-g); None when empty.
    pub fn percentile(&self, g: u8, p: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let p = p.clamp(0.0, 100.0);
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (&i, &c) in &self.buckets {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(bucket_bounds(g, i).1);
            }
        }
        self.buckets.keys().last().map(|&i| bucket_bounds(g, i).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_bounds_agree() {
        for g in [0u8, 2, 4, 7] {
            for v in (0..5000u64).chain([1 << 20, (1 << 33) + 12345, u64::MAX >> 2]) {
                let i = bucket_index(g, v);
                let (lo, hi) = bucket_bounds(g, i);
                assert!(lo <= v && v <= hi, "g={g} v={v} i={i} [{lo},{hi}]");
                if v > 1 << (g + 1) {
                    // Relative width bounded by 2^-g.
                    assert!((hi - lo) as f64 / lo as f64 <= 1.0 / f64::from(1u32 << g) + 1e-12);
                }
            }
        }
    }

    #[test]
    fn percentiles_of_merged_histograms() {
        let g = 4;
        let mut m = MergedHistogram::default();
        // 90 fast calls around 1 us, 10 slow ones around 1 ms, in two samples.
        m.add(&[(bucket_index(g, 1_000), 50)]);
        m.add(&[
            (bucket_index(g, 1_000), 40),
            (bucket_index(g, 1_000_000), 10),
        ]);
        assert_eq!(m.count(), 100);
        let p50 = m.percentile(g, 50.0).unwrap();
        let p99 = m.percentile(g, 99.0).unwrap();
        assert!((1_000..=1_000 + 1_000 / 16).contains(&p50), "{p50}");
        assert!(
            (1_000_000..=1_000_000 + 1_000_000 / 16).contains(&p99),
            "{p99}"
        );
        assert_eq!(MergedHistogram::default().percentile(g, 50.0), None);
    }
}
