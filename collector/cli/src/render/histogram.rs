//! A latency histogram drawn as bars, one line per power of two.

use std::fmt::Write as _;

use nodewatch_proto::hist::{bucket_lower, bucket_upper};
use nodewatch_proto::pb;

use super::units::duration_ns;

/// Draws a histogram: one line per power-of-two range (buckets of a range
/// summed), bar lengths proportional to the count.
pub fn draw(h: &pb::Histogram, width: usize) -> String {
    // Group buckets by power of two of their lower bound.
    let mut rows: Vec<(u64, u64, u64)> = Vec::new();
    for (&i, &c) in h.indices.iter().zip(&h.counts) {
        let lo = bucket_lower(i as usize);
        let hi = bucket_upper(i as usize);
        let group_lo = if lo == 0 {
            0
        } else {
            1u64 << (63 - lo.leading_zeros())
        };
        match rows.last_mut() {
            Some(r) if r.0 == group_lo => {
                r.1 = r.1.max(hi);
                r.2 += c;
            }
            _ => rows.push((group_lo, hi, c)),
        }
    }
    let max = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1);
    let mut out = String::new();
    for (lo, hi, c) in rows {
        let len = ((c as f64 / max as f64) * width as f64).ceil() as usize;
        let _ = writeln!(
            out,
            "  {:>9} .. {:<9} {:>10} |{}",
            duration_ns(lo as f64),
            duration_ns(hi as f64),
            c,
            "█".repeat(len.min(width))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewatch_proto::hist::Dense;

    #[test]
    fn draws_one_line_per_power_of_two() {
        let mut d = Dense::default();
        for _ in 0..100 {
            d.record(5_000_000);
        }
        for _ in 0..10 {
            d.record(1_000);
        }
        let s = d.to_sparse();
        let h = pb::Histogram {
            grouping_power: 3,
            max_value_power: 36,
            indices: s.indices,
            counts: s.counts,
        };
        let text = draw(&h, 20);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[1].ends_with(&"█".repeat(20)), "{text}");
        assert!(lines[0].ends_with(&"█".repeat(2)), "{text}");
    }
}
