//! Terminal charts from block characters: a one-line sparkline and a
//! multi-row chart with its top and bottom values labelled.

const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One-line chart of `values` resampled to at most `width` columns.
pub fn sparkline(values: &[f64], width: usize) -> String {
    let cols = resample(values, width);
    let (lo, hi) = bounds(&cols);
    cols.iter()
        .map(|&v| {
            if hi <= lo {
                BLOCKS[0]
            } else {
                let k = ((v - lo) / (hi - lo) * 7.0).round() as usize;
                BLOCKS[k.min(7)]
            }
        })
        .collect()
}

/// Multi-row chart (`height` rows) of `values` resampled to at most `width` columns,
/// with the top and bottom values labelled.
pub fn chart(values: &[f64], width: usize, height: usize, label: impl Fn(f64) -> String) -> String {
    let cols = resample(values, width);
    if cols.is_empty() || height == 0 {
        return String::new();
    }
    let (lo, hi) = bounds(&cols);
    let span = if hi > lo { hi - lo } else { 1.0 };
    // Height of each column in eighths of a row.
    let eighths: Vec<usize> = cols
        .iter()
        .map(|&v| (((v - lo) / span) * (height * 8) as f64).round().max(1.0) as usize)
        .collect();
    let (top, bottom) = (label(hi), label(lo));
    let pad = top.chars().count().max(bottom.chars().count());
    let mut out = String::new();
    for row in (0..height).rev() {
        let axis = if row == height - 1 {
            format!("{top:>pad$} ┤")
        } else if row == 0 {
            format!("{bottom:>pad$} ┤")
        } else {
            format!("{:>pad$} │", "")
        };
        out.push_str(&axis);
        for &e in &eighths {
            let base = row * 8;
            out.push(if e >= base + 8 {
                '█'
            } else if e > base {
                BLOCKS[e - base - 1]
            } else {
                ' '
            });
        }
        out.push('\n');
    }
    out
}

/// Smallest and largest of `v` (infinities when empty).
pub fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn resample(values: &[f64], width: usize) -> Vec<f64> {
    if values.len() <= width || width == 0 {
        return values.to_vec();
    }
    (0..width)
        .map(|c| {
            let a = c * values.len() / width;
            let b = ((c + 1) * values.len() / width).max(a + 1);
            values[a..b].iter().sum::<f64>() / (b - a) as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_scale_to_the_range() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 7.0], 10), "▁▂▃█");
        assert_eq!(sparkline(&[5.0, 5.0], 10), "▁▁");
        assert_eq!(sparkline(&[0.0, 0.0, 8.0, 8.0], 2), "▁█");
        let c = chart(&[0.0, 10.0], 10, 2, |v| format!("{v}"));
        assert_eq!(c, "10 ┤ █\n 0 ┤▁█\n");
    }
}
