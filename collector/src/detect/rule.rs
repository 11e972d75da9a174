//! The rule interface: a rule looks at one host and says, per subject, how
//! bad things are, with the numbers that prove it. The lifecycle (pending,
//! firing, resolved) is not the rule's business: [`super::lifecycle`] owns it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nodewatch_proto::pb;

use crate::config::RuleCommon;

/// How bad an alert is (the brief's hierarchy), ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Optimisation opportunities, maintenance reminders.
    Low,
    /// Trending issues, capacity advisories.
    Medium,
    /// Performance degradation, capacity warnings.
    High,
    /// Service down, data-loss risk.
    Critical,
}

impl Severity {
    /// The wire value.
    pub fn to_pb(self) -> pb::AlertSeverity {
        match self {
            Self::Low => pb::AlertSeverity::Low,
            Self::Medium => pb::AlertSeverity::Medium,
            Self::High => pb::AlertSeverity::High,
            Self::Critical => pb::AlertSeverity::Critical,
        }
    }

    /// From the wire value (`None` for UNSPECIFIED).
    pub fn from_pb(s: pb::AlertSeverity) -> Option<Self> {
        match s {
            pb::AlertSeverity::Unspecified => None,
            pb::AlertSeverity::Low => Some(Self::Low),
            pb::AlertSeverity::Medium => Some(Self::Medium),
            pb::AlertSeverity::High => Some(Self::High),
            pb::AlertSeverity::Critical => Some(Self::Critical),
        }
    }

    /// Lowercase name, as in labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// One series of a host: its labels and its (Unix ns, value) points, oldest first.
pub type LabeledSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

/// History older than the registry's in-memory window, read from the store.
pub trait History {
    /// Every series of `metric` of `host_id` over `[end - window, end]`, as
    /// (labels, points oldest first), aggregated to at most about `points` points.
    fn series(
        &self,
        host_id: &str,
        metric: &str,
        end_unix_nano: i64,
        window: Duration,
        points: u32,
    ) -> Vec<LabeledSeries>;
}

/// What a rule sees of one host at one tick.
pub struct HostView<'a> {
    /// Host id.
    pub host_id: &'a str,
    /// Host name.
    pub hostname: &'a str,
    /// The operator's labels of the host (Hello).
    pub labels: &'a HashMap<String, String>,
    /// Every latest batch part merged (parts sampled at slower cadences included).
    pub latest: &'a pb::Batch,
    /// Recent batches, oldest first (the registry's in-memory window).
    pub recent: &'a [Arc<pb::Batch>],
    /// When the host's latest batch arrived (collector clock).
    pub last_seen: SystemTime,
    /// The agent's sampling interval.
    pub interval: Duration,
    /// Now (collector clock).
    pub now: SystemTime,
    /// When this collector started.
    pub started: SystemTime,
    /// The store's history of the host.
    pub history: &'a dyn History,
}

/// One subject's verdict at one evaluation.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// What it is about.
    pub subject: pb::AlertSubject,
    /// Severity whose firing condition holds, `None` when none does.
    pub level: Option<Severity>,
    /// Highest severity whose (hysteresis-relaxed) condition still holds: an
    /// active alert keeps up to this severity.
    pub hold: Option<Severity>,
    /// The rule cannot tell now (too little data): the alert keeps its state.
    pub unknown: bool,
    /// One line for a person.
    pub summary: String,
    /// The numbers.
    pub evidence: pb::AlertEvidence,
    /// Projected seconds until impact, where the rule predicts.
    pub time_to_impact: Option<f64>,
}

impl Observation {
    /// A subject the rule could not judge this time.
    pub fn unknown(subject: pb::AlertSubject) -> Self {
        Self {
            subject,
            unknown: true,
            ..Default::default()
        }
    }
}

/// Everything a rule found on one host.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Subjects judged (or explicitly unknown).
    pub observations: Vec<Observation>,
    /// True when subjects not listed are known to be fine (their alerts clear);
    /// false when the rule saw too little to say so.
    pub complete: bool,
}

impl Evaluation {
    /// An evaluation that saw everything it needs: subjects not observed are fine.
    pub fn complete() -> Self {
        Self {
            observations: Vec::new(),
            complete: true,
        }
    }
}

/// A detector: one named rule.
pub trait Rule: Send + Sync {
    /// The rule's fixed name (config table, alert `rule`, Alertmanager `alertname`).
    fn name(&self) -> &'static str;
    /// Enabled, `for`, `keep_firing_for`, host matcher.
    fn common(&self) -> &RuleCommon;
    /// Judges one host.
    fn evaluate(&self, host: &HostView<'_>) -> Evaluation;
}

/// Direction of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Higher values are worse (usage ratios).
    Above,
    /// Lower values are worse (free ratios).
    Below,
}

/// Grades `value` against `(severity, threshold)` pairs: the severity whose
/// threshold is crossed (`level`), the severity whose threshold relaxed by
/// `hysteresis` is still crossed (`hold`), and the threshold of the higher of the two.
pub fn grade(
    value: f64,
    thresholds: &[(Severity, f64)],
    worse: Worse,
    hysteresis: f64,
) -> (Option<Severity>, Option<Severity>, f64) {
    let crossed = |t: f64, relax: f64| match worse {
        Worse::Above => value >= t * (1.0 - relax),
        Worse::Below => value <= t * (1.0 + relax),
    };
    let mut level = None;
    let mut hold = None;
    let mut threshold = thresholds.first().map_or(0.0, |t| t.1);
    for &(sev, t) in thresholds {
        if crossed(t, 0.0) && level < Some(sev) {
            level = Some(sev);
        }
        if crossed(t, hysteresis) && hold < Some(sev) {
            hold = Some(sev);
            threshold = t;
        }
    }
    (level, hold, threshold)
}

/// An evidence figure.
pub fn value(name: &str, value: f64, unit: &str) -> pb::EvidenceValue {
    pb::EvidenceValue {
        name: name.to_string(),
        value,
        unit: unit.to_string(),
    }
}

/// Human bytes for summaries: "210 MiB".
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.abs() >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Human duration for summaries: "3h10m", "45m", "2d4h", "40s".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

/// Percent for summaries: "96 %".
pub fn percent(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grading_has_hysteresis() {
        let t = [(Severity::High, 0.8), (Severity::Critical, 0.95)];
        assert_eq!(grade(0.5, &t, Worse::Above, 0.05), (None, None, 0.8));
        assert_eq!(
            grade(0.78, &t, Worse::Above, 0.05),
            (None, Some(Severity::High), 0.8)
        );
        assert_eq!(
            grade(0.96, &t, Worse::Above, 0.05),
            (Some(Severity::Critical), Some(Severity::Critical), 0.95)
        );
        let free = [(Severity::High, 0.05), (Severity::Critical, 0.03)];
        assert_eq!(
            grade(0.04, &free, Worse::Below, 0.05),
            (Some(Severity::High), Some(Severity::High), 0.05)
        );
        assert_eq!(
            grade(0.0305, &free, Worse::Below, 0.05),
            (Some(Severity::High), Some(Severity::Critical), 0.03)
        );
    }

    #[test]
    fn summaries_read_well() {
        assert_eq!(bytes(210.0 * 1024.0 * 1024.0), "210 MiB");
        assert_eq!(bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(duration(3.0 * 3600.0 + 600.0), "3h10m");
        assert_eq!(duration(45.0), "45s");
        assert_eq!(duration(90_000.0), "1d1h");
        assert_eq!(percent(0.956), "96 %");
    }
}
