//! The histogram layout of `nodewatch.v1.Histogram` and its math: bucket
//! bounds, sparse and dense histograms, merging and percentiles. The agent
//! builds sparse deltas with it, the collector merges and queries them, the
//! CLI draws them; the eBPF programs keep only their own bucket index (the
//! agent checks that it agrees with [`bucket_index`]).
//!
//! # Layout (H2, log-linear)
//!
//! Values are nanoseconds. With grouping power `g` values below `2^(g+1)` each
//! get their own bucket; above that every power of two `[2^k, 2^(k+1))` is
//! split into `2^g` buckets of equal width. A bucket's width is at most `2^-g`
//! of its lower bound, so a percentile reported as a bucket's upper bound is
//! within `2^-g` of the true value. nodewatch's agent uses `g` =
//! [`GROUPING_POWER`] (3: 8 buckets per power of two, width <= 12.5 %) up to
//! `2^MAX_VALUE_POWER` ns (about 68.7 s; larger values land in the last
//! bucket). The store keeps any grouping power a histogram arrives with, so the
//! generic functions take `g`.

use std::collections::BTreeMap;

/// Buckets per power of two = `2^GROUPING_POWER` in the agent's histograms.
pub const GROUPING_POWER: u32 = 3;
/// The agent's histograms cover `0 ..= 2^MAX_VALUE_POWER - 1` nanoseconds.
pub const MAX_VALUE_POWER: u32 = 36;
/// Number of buckets of one of the agent's histograms.
pub const BUCKETS: usize = (1 << (GROUPING_POWER + 1))
    + ((MAX_VALUE_POWER - GROUPING_POWER - 1) as usize) * (1 << GROUPING_POWER);

/// Largest relative error of a percentile reported as a bucket's upper bound: `2^-GROUPING_POWER`.
pub const RELATIVE_ERROR: f64 = 1.0 / (1u64 << GROUPING_POWER) as f64;

/// Inclusive value range of bucket `index` for grouping power `g`.
pub fn bucket_bounds(g: u32, index: u32) -> (u64, u64) {
    let g = g.min(30);
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
pub fn bucket_index_g(g: u32, value: u64) -> u32 {
    let g = g.min(30);
    if value < (1u64 << (g + 1)) {
        return value as u32;
    }
    let power = 63 - value.leading_zeros();
    let offset = (value - (1u64 << power)) >> (power - g);
    (((power - g + 1) as u64) << g) as u32 + offset as u32
}

/// Bucket of `value` (ns) in the agent's layout; values past the last bucket are clamped into it.
pub fn bucket_index(value: u64) -> usize {
    (bucket_index_g(GROUPING_POWER, value) as usize).min(BUCKETS - 1)
}

/// Smallest value held by bucket `index` of the agent's layout (inclusive).
pub fn bucket_lower(index: usize) -> u64 {
    bucket_bounds(GROUPING_POWER, index as u32).0
}

/// Largest value held by bucket `index` of the agent's layout (inclusive). The
/// last bucket also holds every larger (clamped) value.
pub fn bucket_upper(index: usize) -> u64 {
    bucket_bounds(GROUPING_POWER, index.min(BUCKETS - 1) as u32).1
}

/// Value at quantile `q` (0..=1) of ascending `(index, count)` buckets holding
/// `total` events: the upper bound of the bucket holding the event of rank
/// `ceil(q * total)`, so the true value is at most this and within one bucket
/// width below it. `None` when empty. The one percentile rule of every
/// histogram in nodewatch.
pub fn percentile_of(
    g: u32,
    buckets: impl IntoIterator<Item = (u32, u64)>,
    total: u64,
    q: f64,
) -> Option<u64> {
    if total == 0 {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    let mut last = None;
    for (i, c) in buckets {
        if c == 0 {
            continue;
        }
        seen = seen.saturating_add(c);
        last = Some(i);
        if seen >= rank {
            return Some(bucket_bounds(g, i).1);
        }
    }
    last.map(|i| bucket_bounds(g, i).1)
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
            counts: vec![0; BUCKETS],
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
        let buckets = self.counts.iter().enumerate().map(|(i, &c)| (i as u32, c));
        percentile_of(GROUPING_POWER, buckets, self.total(), q)
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

/// A merge of sparse histograms of any grouping power (the store's view):
/// bucket index -> count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Counts by bucket index.
    pub buckets: BTreeMap<u32, u64>,
}

impl Merged {
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

    /// The `p`-th percentile (0..=100) for grouping power `g`, by [`percentile_of`].
    pub fn percentile(&self, g: u32, p: f64) -> Option<u64> {
        let buckets = self.buckets.iter().map(|(&i, &c)| (i, c));
        percentile_of(g, buckets, self.count(), p / 100.0)
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

    #[test]
    fn generic_index_and_bounds_agree() {
        for g in [0u32, 2, 4, 7] {
            for v in (0..5000u64).chain([1 << 20, (1 << 33) + 12345, u64::MAX >> 2]) {
                let i = bucket_index_g(g, v);
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
        let mut m = Merged::default();
        // 90 fast calls around 1 us, 10 slow ones around 1 ms, in two samples.
        m.add(&[(bucket_index_g(g, 1_000), 50)]);
        m.add(&[
            (bucket_index_g(g, 1_000), 40),
            (bucket_index_g(g, 1_000_000), 10),
        ]);
        assert_eq!(m.count(), 100);
        let p50 = m.percentile(g, 50.0).unwrap();
        let p99 = m.percentile(g, 99.0).unwrap();
        assert!((1_000..=1_000 + 1_000 / 16).contains(&p50), "{p50}");
        assert!(
            (1_000_000..=1_000_000 + 1_000_000 / 16).contains(&p99),
            "{p99}"
        );
        assert_eq!(Merged::default().percentile(g, 50.0), None);
    }

    #[test]
    fn dense_and_merged_agree_on_the_agents_layout() {
        let mut d = Dense::default();
        let mut m = Merged::default();
        for v in [3u64, 900, 1_000, 1_000, 70_000, 5_000_000, 1 << 40] {
            d.record(v);
            m.add(&[(bucket_index(v) as u32, 1)]);
        }
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                d.percentile(q),
                m.percentile(GROUPING_POWER, q * 100.0),
                "q={q}"
            );
        }
    }
}
