//! `fd_exhaustion` (a process against its own soft RLIMIT_NOFILE) and
//! `file_handles` (the host's file-nr against file-max).

use nodewatch_proto::pb;

use super::{host_series, process_label, process_series, process_subject};
use crate::config::{FdExhaustionConfig, FileHandlesConfig, RuleCommon};
use crate::detect::rule::{
    Evaluation, HostView, Observation, Rule, Severity, Worse, grade, percent, value,
};

/// `fd_exhaustion`: open descriptors >= 80 % (high) / 95 % (critical) of the soft limit.
pub struct FdExhaustion {
    cfg: FdExhaustionConfig,
    common: RuleCommon,
    hysteresis: f64,
}

impl FdExhaustion {
    /// The rule with its table.
    pub fn new(cfg: FdExhaustionConfig, hysteresis: f64) -> Self {
        let common = cfg.common();
        Self {
            cfg,
            common,
            hysteresis,
        }
    }
}

impl Rule for FdExhaustion {
    fn name(&self) -> &'static str {
        "fd_exhaustion"
    }

    fn common(&self) -> &RuleCommon {
        &self.common
    }

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let procs = &host.latest.processes;
        let mut out = Evaluation {
            observations: Vec::new(),
            complete: host.latest.processes_complete && !procs.is_empty(),
        };
        let thresholds = [
            (Severity::High, self.cfg.high),
            (Severity::Critical, self.cfg.critical),
        ];
        for p in procs {
            if p.fd_limit_soft == 0 || p.fd_limit_soft == u64::MAX {
                continue;
            }
            let ratio = f64::from(p.open_fds) / p.fd_limit_soft as f64;
            let (level, hold, threshold) = grade(ratio, &thresholds, Worse::Above, self.hysteresis);
            if hold.is_none() {
                continue;
            }
            out.observations.push(Observation {
                subject: process_subject(p),
                level,
                hold,
                unknown: false,
                summary: format!(
                    "{} holds {} of its {} file descriptors ({}); open() and accept() fail with EMFILE at the limit",
                    process_label(p),
                    p.open_fds,
                    p.fd_limit_soft,
                    percent(ratio)
                ),
                evidence: pb::AlertEvidence {
                    value: ratio,
                    threshold,
                    values: vec![
                        value("open_fds", f64::from(p.open_fds), "count"),
                        value("fd_limit_soft", p.fd_limit_soft as f64, "count"),
                        value("fd_limit_hard", p.fd_limit_hard as f64, "count"),
                        value("ratio", ratio, "ratio"),
                    ],
                    series_name: "open_fds".into(),
                    series: process_series(host.recent, p, |q| f64::from(q.open_fds)),
                    ..Default::default()
                },
                time_to_impact: None,
            });
        }
        out
    }
}

/// `file_handles`: allocated file handles >= 70 % (high) / 90 % (critical) of file-max.
pub struct FileHandles {
    cfg: FileHandlesConfig,
    common: RuleCommon,
    hysteresis: f64,
}

impl FileHandles {
    /// The rule with its table.
    pub fn new(cfg: FileHandlesConfig, hysteresis: f64) -> Self {
        let common = cfg.common();
        Self {
            cfg,
            common,
            hysteresis,
        }
    }
}

impl Rule for FileHandles {
    fn name(&self) -> &'static str {
        "file_handles"
    }

    fn common(&self) -> &RuleCommon {
        &self.common
    }

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let Some(c) = &host.latest.connections else {
            return Evaluation::default();
        };
        let mut out = Evaluation::complete();
        if c.file_handles_max == 0 {
            return out;
        }
        let ratio = c.file_handles as f64 / c.file_handles_max as f64;
        let thresholds = [
            (Severity::High, self.cfg.high),
            (Severity::Critical, self.cfg.critical),
        ];
        let (level, hold, threshold) = grade(ratio, &thresholds, Worse::Above, self.hysteresis);
        if hold.is_some() {
            out.observations.push(Observation {
                subject: pb::AlertSubject::default(),
                level,
                hold,
                unknown: false,
                summary: format!(
                    "{}: {} of {} file handles allocated ({}); every process fails with ENFILE at the limit",
                    host.hostname,
                    c.file_handles,
                    c.file_handles_max,
                    percent(ratio)
                ),
                evidence: pb::AlertEvidence {
                    value: ratio,
                    threshold,
                    values: vec![
                        value("file_handles", c.file_handles as f64, "count"),
                        value("file_max", c.file_handles_max as f64, "count"),
                    ],
                    series_name: "file_handles".into(),
                    series: host_series(host.recent, |b| {
                        b.connections.as_ref().map(|c| c.file_handles as f64)
                    }),
                    ..Default::default()
                },
                time_to_impact: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::testing::{FakeHistory, evaluate, t};

    fn batch(fds: u32, limit: u64) -> pb::Batch {
        pb::Batch {
            time_unix_nano: t(0.0),
            processes: vec![
                pb::ProcessStats {
                    pid: 42,
                    start_time_ticks: 9,
                    name: "hoarder".into(),
                    open_fds: fds,
                    fd_limit_soft: limit,
                    fd_limit_hard: 4096,
                    ..Default::default()
                },
                pb::ProcessStats {
                    pid: 1,
                    name: "unlimited".into(),
                    open_fds: 10,
                    fd_limit_soft: u64::MAX,
                    ..Default::default()
                },
            ],
            processes_complete: true,
            ..Default::default()
        }
    }

    #[test]
    fn high_then_critical_with_the_process_named() {
        let rule = FdExhaustion::new(FdExhaustionConfig::default(), 0.05);
        let h = FakeHistory::default();
        let e = evaluate(&rule, vec![batch(50, 100)], &h);
        assert!(e.complete && e.observations.is_empty());
        let e = evaluate(&rule, vec![batch(85, 100)], &h);
        let o = &e.observations[0];
        assert_eq!((o.level, o.subject.pid), (Some(Severity::High), 42));
        assert!(
            o.summary.contains("hoarder (pid 42) holds 85 of its 100"),
            "{}",
            o.summary
        );
        let e = evaluate(&rule, vec![batch(96, 100)], &h);
        assert_eq!(e.observations[0].level, Some(Severity::Critical));
        // Just under 80 %: only the relaxed threshold holds.
        let e = evaluate(&rule, vec![batch(78, 100)], &h);
        assert_eq!(
            (e.observations[0].level, e.observations[0].hold),
            (None, Some(Severity::High))
        );
    }

    #[test]
    fn file_handles_against_file_max() {
        let rule = FileHandles::new(FileHandlesConfig::default(), 0.05);
        let b = |n| pb::Batch {
            connections: Some(pb::ConnectionStats {
                file_handles: n,
                file_handles_max: 1000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let h = FakeHistory::default();
        assert!(evaluate(&rule, vec![b(100)], &h).observations.is_empty());
        assert_eq!(
            evaluate(&rule, vec![b(750)], &h).observations[0].level,
            Some(Severity::High)
        );
        assert_eq!(
            evaluate(&rule, vec![b(950)], &h).observations[0].level,
            Some(Severity::Critical)
        );
        assert!(!evaluate(&rule, vec![pb::Batch::default()], &h).complete);
    }
}
