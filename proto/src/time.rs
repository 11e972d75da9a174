//! Time on the wire: every timestamp in `nodewatch.v1` is Unix nanoseconds in an `i64`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix nanoseconds of a system time: 0 before the epoch, `i64::MAX` past 2262.
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Unix nanoseconds now.
pub fn now_nanos() -> i64 {
    unix_nanos(SystemTime::now())
}

/// Nanoseconds of a duration, saturating at `i64::MAX` (about 292 years).
pub fn duration_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate() {
        assert_eq!(unix_nanos(UNIX_EPOCH), 0);
        assert_eq!(unix_nanos(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(
            unix_nanos(UNIX_EPOCH + Duration::from_millis(1500)),
            1_500_000_000
        );
        assert_eq!(duration_nanos(Duration::MAX), i64::MAX);
        assert!(now_nanos() > 1_600_000_000_000_000_000);
    }
}
