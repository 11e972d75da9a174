//! Units for people: bytes in binary units, percentages, compact numbers,
//! durations, ages and UTC times, feature states.

use nodewatch_proto::pb;
use nodewatch_proto::time::now_nanos;

/// Human-readable bytes in binary units, e.g. "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A ratio 0..1 as a percentage, e.g. "42.0%".
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// How long ago a Unix-nanosecond time was, e.g. "3s ago"; "never" for 0.
pub fn ago(unix_nano: i64) -> String {
    if unix_nano <= 0 {
        return "never".to_string();
    }
    let secs = (now_nanos() - unix_nano).max(0) / 1_000_000_000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Short lowercase name of a feature state for JSON output.
pub fn state_name(state: i32) -> &'static str {
    match pb::FeatureState::try_from(state).unwrap_or_default() {
        pb::FeatureState::Active => "active",
        pb::FeatureState::Disabled => "disabled",
        pb::FeatureState::Unavailable => "unavailable",
        pb::FeatureState::Unspecified => "unknown",
    }
}

/// Display name of a feature state.
pub fn feature_state(status: Option<&pb::FeatureStatus>) -> String {
    let Some(status) = status else {
        return "unknown".to_string();
    };
    match pb::FeatureState::try_from(status.state).unwrap_or_default() {
        pb::FeatureState::Active => "active".to_string(),
        pb::FeatureState::Disabled => "disabled".to_string(),
        pb::FeatureState::Unavailable => format!("unavailable ({})", status.reason),
        pb::FeatureState::Unspecified => "unknown".to_string(),
    }
}

/// Compact number: 3 significant digits with k/M/G/T suffixes.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e12 {
        (v / 1e12, "T")
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = scaled.abs();
    let text = if s == 0.0 || s >= 100.0 {
        format!("{scaled:.0}")
    } else if s >= 10.0 {
        format!("{scaled:.1}")
    } else if s >= 0.01 {
        format!("{scaled:.2}")
    } else if s >= 0.0001 {
        format!("{scaled:.4}")
    } else {
        format!("{scaled:.2e}")
    };
    format!("{text}{suffix}")
}

/// Formats a value in the metric's unit.
pub fn value_text(metric: &str, rate: bool, v: f64) -> String {
    let unit = if rate { "/s" } else { "" };
    if metric.contains("_bytes") && v >= 0.0 && v.is_finite() {
        format!("{}{unit}", bytes(v.round() as u64))
    } else if metric.ends_with("_ratio") && !rate {
        format!("{:.1}%", v * 100.0)
    } else if metric.ends_with("_ns") && !rate {
        duration_ns(v)
    } else {
        format!("{}{unit}", number(v))
    }
}

/// Human-readable nanoseconds, e.g. "850ns", "12.3µs", "5.24ms", "1.20s".
pub fn duration_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1}µs", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS` of Unix nanoseconds (days-from-civil inverse).
pub fn utc_text(unix_nano: i64) -> String {
    let secs = unix_nano.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(percent(0.4242), "42.4%");
    }

    #[test]
    fn formats() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00");
        assert_eq!(
            utc_text(1_700_000_000 * 1_000_000_000),
            "2023-11-14 22:13:20"
        );
        assert_eq!(utc_text(951_782_400 * 1_000_000_000), "2000-02-29 00:00:00");
        assert_eq!(number(1234.0), "1234");
        assert_eq!(number(12_345.0), "12.3k");
        assert_eq!(number(0.5), "0.50");
        assert_eq!(value_text("memory_used_bytes", false, 1536.0), "1.5 KiB");
        assert_eq!(value_text("cpu_busy_ratio", false, 0.25), "25.0%");
        assert_eq!(value_text("forks_total", true, 3.0), "3.00/s");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(duration_ns(850.0), "850ns");
        assert_eq!(duration_ns(12_300.0), "12.3µs");
        assert_eq!(duration_ns(5_240_000.0), "5.24ms");
        assert_eq!(duration_ns(1_200_000_000.0), "1.20s");
    }
}
