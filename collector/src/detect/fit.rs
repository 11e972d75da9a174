//! Robust trend fitting: the Theil–Sen estimator (the median of the slopes
//! of every pair of points) with Sen's 95 % confidence band, and the splitting
//! of a series at restarts or cleanups so that each part is fitted alone.
//! A few outliers (a GC pause, one odd sample) do not move the median, where
//! they would tilt a least-squares line (node-mixin's `predict_linear`).

/// Most points fitted: longer series are thinned evenly (the pairs grow as n²).
pub const MAX_POINTS: usize = 240;

/// A fitted line through (seconds, value) points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Median pairwise slope, value per second.
    pub slope: f64,
    /// Lower bound of the 95 % band of the slope.
    pub slope_low: f64,
    /// Upper bound of the 95 % band of the slope.
    pub slope_high: f64,
    /// Value of the line at the last point's time.
    pub value_at_end: f64,
    /// Points fitted.
    pub points: usize,
    /// Time spanned, seconds.
    pub span: f64,
}

/// Fits `points` (time in seconds, value), oldest first. `None` below 3 points
/// or when every point has the same time.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Fit> {
    let pts = thin(points);
    let n = pts.len();
    if n < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dt = pts[j].0 - pts[i].0;
            if dt > 0.0 {
                slopes.push((pts[j].1 - pts[i].1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let slope = median_sorted(&slopes);
    // Sen (1968): the band's ranks from the variance of Kendall's S (no ties).
    let nf = n as f64;
    let big_n = slopes.len() as f64;
    let c = 1.96 * (nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0).sqrt();
    let lo_rank = ((big_n - c) / 2.0).floor().max(0.0) as usize;
    let hi_rank = ((big_n + c) / 2.0).ceil().min(big_n - 1.0) as usize;
    let (slope_low, slope_high) = (slopes[lo_rank.min(slopes.len() - 1)], slopes[hi_rank]);
    let mut residuals: Vec<f64> = pts.iter().map(|&(t, v)| v - slope * t).collect();
    residuals.sort_by(f64::total_cmp);
    let intercept = median_sorted(&residuals);
    let (t0, t1) = (pts[0].0, pts[n - 1].0);
    Some(Fit {
        slope,
        slope_low,
        slope_high,
        value_at_end: intercept + slope * t1,
        points: n,
        span: t1 - t0,
    })
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    (0..MAX_POINTS)
        .map(|k| points[k * (points.len() - 1) / (MAX_POINTS - 1)])
        .collect()
}

/// The part of `points` after the last jump of more than `jump` in the
/// direction `rise` (true: the value jumped up; false: it fell), and how many
/// such jumps there were. A cleanup frees space at once; a restart drops RSS.
pub fn after_last_jump(points: &[(f64, f64)], jump: f64, rise: bool) -> (&[(f64, f64)], usize) {
    let mut start = 0;
    let mut jumps = 0;
    for i in 1..points.len() {
        let d = points[i].1 - points[i - 1].1;
        if (rise && d > jump) || (!rise && -d > jump) {
            start = i;
            jumps += 1;
        }
    }
    (&points[start..], jumps)
}

/// Times (seconds) at which `points` jumped by more than `jump` in the direction `rise`.
pub fn jump_times(points: &[(f64, f64)], jump: f64, rise: bool) -> Vec<f64> {
    points
        .windows(2)
        .filter(|w| {
            let d = w[1].1 - w[0].1;
            (rise && d > jump) || (!rise && -d > jump)
        })
        .map(|w| w[1].0)
        .collect()
}

/// Unix nanoseconds to seconds relative to `origin` (keeps precision in f64).
pub fn seconds(points: &[(i64, f64)], origin: i64) -> Vec<(f64, f64)> {
    points
        .iter()
        .map(|&(t, v)| ((t - origin) as f64 / 1e9, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_line_and_its_band() {
        let pts: Vec<(f64, f64)> = (0..50)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 7.0))
            .collect();
        let f = theil_sen(&pts).unwrap();
        assert!((f.slope - 3.0).abs() < 1e-9);
        assert!((f.slope_low - 3.0).abs() < 1e-9 && (f.slope_high - 3.0).abs() < 1e-9);
        assert!((f.value_at_end - 154.0).abs() < 1e-9);
        assert_eq!(f.span, 49.0);
    }

    #[test]
    fn outliers_do_not_tilt_it() {
        let mut pts: Vec<(f64, f64)> = (0..60).map(|i| (f64::from(i), f64::from(i))).collect();
        pts[10].1 = 1000.0;
        pts[40].1 = -1000.0;
        let f = theil_sen(&pts).unwrap();
        assert!((f.slope - 1.0).abs() < 0.05, "{f:?}");
    }

    #[test]
    fn noise_widens_the_band() {
        let mut rng = fastrand_like(7);
        let pts: Vec<(f64, f64)> = (0..100)
            .map(|i| (f64::from(i), 2.0 * f64::from(i) + (rng() - 0.5) * 40.0))
            .collect();
        let f = theil_sen(&pts).unwrap();
        assert!(f.slope_low < f.slope && f.slope < f.slope_high, "{f:?}");
        assert!(f.slope_low > 1.0 && f.slope_high < 3.0, "{f:?}");
    }

    #[test]
    fn too_few_points() {
        assert!(theil_sen(&[(0.0, 1.0), (1.0, 2.0)]).is_none());
        assert!(theil_sen(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]).is_none());
    }

    #[test]
    fn long_series_are_thinned() {
        let pts: Vec<(f64, f64)> = (0..5000)
            .map(|i| (f64::from(i), f64::from(i) / 2.0))
            .collect();
        let f = theil_sen(&pts).unwrap();
        assert_eq!(f.points, MAX_POINTS);
        assert!((f.slope - 0.5).abs() < 1e-9);
    }

    #[test]
    fn splits_after_jumps() {
        let pts = [(0.0, 10.0), (1.0, 20.0), (2.0, 5.0), (3.0, 6.0), (4.0, 7.0)];
        let (tail, n) = after_last_jump(&pts, 8.0, false);
        assert_eq!((tail.len(), n), (3, 1));
        assert_eq!(jump_times(&pts, 8.0, false), vec![2.0]);
        assert_eq!(after_last_jump(&pts, 8.0, true).1, 1);
    }

    /// A tiny deterministic generator in [0, 1).
    fn fastrand_like(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}
