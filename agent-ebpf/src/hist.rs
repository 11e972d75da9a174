//! Host-side histogram math on the H2 layout (see the crate docs): bucket
//! bounds, sparse histograms, merging and percentiles. Shared by the agent
//! (building sparse deltas) and the collector (merging over time ranges).

use std::vec::Vec;

use crate::{BUCKETS, GROUPING_POWER, MAX_VALUE_POWER, bucket_index};

/// Largest relative error of a percentile reported as a bucket's upper bound: `2^-GROUPING_POWER`.
pub const RELATIVE_ERROR: f64 = 1.0 / (1u64 << GROUPING_POWER) as f64;

/// Smallest value held by bucket `index` (inclusive).
pub fn bucket_lower(index: usize) -> u64 {
    let cutoff = 1usize << (GROUPING_POWER + 1);
    if index < cutoff {
        return index as u64;
    }
    let per_power = 1usize << GROUPING_POWER;
    let rel = index - cutoff;
    let power = (rel / per_power) as u32 + GROUPING_POWER + 1;
    let offset = (rel % per_power) as u64;
    (1u64 << power) + (offset << (power - GROUPING_POWER))
}

/// Largest value held by bucket `index` (inclusive). The last bucket also holds
/// every larger (clamped) value.
pub fn bucket_upper(index: usize) -> u64 {
    if index + 1 >= BUCKETS {
        return (1u64 << MAX_VALUE_POWER) - 1;
    }
    bucket_lower(index + 1) - 1
}

/// A sparse histogram in the shared layout: ascending bucket indices with their counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sparse {
    /// Non-empty bucket indices, ascending, each `< BUCKETS`.
    pub indices: Vec<u32>,
    /// Counts, same order as `indices`, each non-zero.
    pub counts: Vec<u64>,
}

/// Why a sparse histogram was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistError {
    /// Layout differs from the one this build understands.
    #[error("unsupported histogram layout (grouping power {0}, max value power {1})")]
    Layout(u32, u32),
    /// `indices` and `counts` have different lengths.
    #[error("histogram has {0} indices but {1} counts")]
    Length(usize, usize),
    /// A bucket index is out of range.
    #[error("histogram bucket index {0} out of range")]
    Index(u32),
}

impl Sparse {
    /// Builds a sparse histogram from dense counts (zeros dropped).
    pub fn from_dense(dense: &[u64]) -> Self {
        let mut s = Sparse::default();
        for (i, &c) in dense.iter().enumerate().take(BUCKETS) {
            if c != 0 {
                s.indices.push(i as u32);
                s.counts.push(c);
            }
        }
        s
    }

    /// Checks the layout and shape of a histogram received from elsewhere.
    pub fn validate(
        grouping_power: u32,
        max_value_power: u32,
        indices: &[u32],
        counts: &[u64],
    ) -> Result<(), HistError> {
        if grouping_power != GROUPING_POWER || max_value_power != MAX_VALUE_POWER {
            return Err(HistError::Layout(grouping_power, max_value_power));
        }
        if indices.len() != counts.len() {
            return Err(HistError::Length(indices.len(), counts.len()));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= BUCKETS) {
            return Err(HistError::Index(bad));
        }
        Ok(())
    }

    /// Total number of events.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }
}

/// A dense histogram used to merge many sparse ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dense {
    /// Count per bucket, `BUCKETS` entries.
    pub counts: Vec<u64>,
}

impl Default for Dense {
    fn default() -> Self {
        Self {
            counts: std::vec![0; BUCKETS],
        }
    }
}

impl Dense {
    /// Records one value (nanoseconds).
    pub fn record(&mut self, value: u64) {
        let i = bucket_index(value);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Adds a sparse histogram; out-of-range indices are ignored (validate first).
    pub fn add_sparse(&mut self, indices: &[u32], counts: &[u64]) {
        for (&i, &c) in indices.iter().zip(counts) {
            if let Some(slot) = self.counts.get_mut(i as usize) {
                *slot = slot.saturating_add(c);
            }
        }
    }

    /// Adds another dense histogram.
    pub fn merge(&mut self, other: &Dense) {
        for (a, &b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(b);
        }
    }

    /// Total number of events.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The sparse form.
    pub fn to_sparse(&self) -> Sparse {
        Sparse::from_dense(&self.counts)
    }

    /// Value at quantile `q` (0..=1): the upper bound of the bucket holding the
    /// event of rank `ceil(q * total)`, so the true value is at most this and at
    /// least `value * (1 - RELATIVE_ERROR)`-ish (within one bucket). `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(bucket_upper(i));
            }
        }
        Some(bucket_upper(BUCKETS - 1))
    }

    /// Upper bound of the highest non-empty bucket. `None` when empty.
    pub fn max(&self) -> Option<u64> {
        self.counts.iter().rposition(|&c| c != 0).map(bucket_upper)
    }

    /// Bounds of the lowest non-empty bucket. `None` when empty.
    pub fn min(&self) -> Option<u64> {
        self.counts.iter().position(|&c| c != 0).map(bucket_lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_size() {
        assert_eq!(BUCKETS, 16 + 32 * 8);
        assert_eq!(bucket_upper(BUCKETS - 1), (1 << MAX_VALUE_POWER) - 1);
    }

    #[test]
    fn index_matches_bounds_everywhere() {
        for i in 0..BUCKETS {
            let lo = bucket_lower(i);
            let hi = bucket_upper(i);
            assert!(lo <= hi, "bucket {i}");
            assert_eq!(bucket_index(lo), i, "lower of {i}");
            assert_eq!(bucket_index(hi), i, "upper of {i}");
            if i + 1 < BUCKETS {
                assert_eq!(bucket_lower(i + 1), hi + 1);
            }
            // Relative width within the stated error.
            if lo >= 16 {
                assert!(((hi - lo + 1) as f64) / (lo as f64) <= RELATIVE_ERROR + 1e-12);
            }
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_index(1 << MAX_VALUE_POWER), BUCKETS - 1);
    }

    #[test]
    fn index_of_values_spot_checks() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(15), 15);
        assert_eq!(bucket_index(16), 16);
        assert_eq!(bucket_index(17), 16);
        assert_eq!(bucket_index(18), 17);
        assert_eq!(bucket_index(31), 23);
        assert_eq!(bucket_index(32), 24);
        // 5 ms lies in [2^22, 2^23): 4_194_304 + k * 524_288.
        let i = bucket_index(5_000_000);
        assert!(bucket_lower(i) <= 5_000_000 && 5_000_000 <= bucket_upper(i));
    }

    #[test]
    fn percentiles_within_error() {
        let mut d = Dense::default();
        for v in 1..=10_000u64 {
            d.record(v * 1000);
        }
        for (q, exact) in [(0.5, 5_000_000u64), (0.9, 9_000_000), (0.99, 9_900_000)] {
            let p = d.percentile(q).unwrap() as f64;
            let e = exact as f64;
            assert!(
                p >= e && p <= e * (1.0 + RELATIVE_ERROR),
                "q={q}: {p} vs {e}"
            );
        }
        assert_eq!(d.total(), 10_000);
        assert!(d.max().unwrap() >= 10_000_000);
        assert_eq!(Dense::default().percentile(0.5), None);
    }

    #[test]
    fn merge_and_sparse_roundtrip() {
        let mut a = Dense::default();
        let mut b = Dense::default();
        a.record(100);
        a.record(5_000_000);
        b.record(100);
        let s = b.to_sparse();
        assert_eq!(s.total(), 1);
        let mut m = a.clone();
        m.add_sparse(&s.indices, &s.counts);
        let mut m2 = a.clone();
        m2.merge(&b);
        assert_eq!(m, m2);
        assert_eq!(m.total(), 3);
        assert_eq!(m.percentile(0.5), Some(bucket_upper(bucket_index(100))));
    }

    #[test]
    fn validate_rejects_bad_input() {
        assert!(Sparse::validate(3, 36, &[1, 2], &[1, 1]).is_ok());
        assert_eq!(
            Sparse::validate(4, 36, &[], &[]),
            Err(HistError::Layout(4, 36))
        );
        assert_eq!(
            Sparse::validate(3, 36, &[1], &[]),
            Err(HistError::Length(1, 0))
        );
        assert_eq!(
            Sparse::validate(3, 36, &[9999], &[1]),
            Err(HistError::Index(9999))
        );
    }
}
