//! `agent_silent`: no batch from a host for `missed_intervals` of its own
//! interval. After a collector restart every host gets `grace` to come back
//! before it counts as silent, so a restart pages nobody; an alert that was
//! firing before the restart stays firing (unknown, not cleared) meanwhile.

use std::time::Duration;

use nodewatch_proto::pb;
use nodewatch_proto::time::unix_nanos;

use crate::config::AgentSilentConfig;
use crate::detect::rule::{Evaluation, HostView, Observation, Rule, Severity, duration, value};

/// `agent_silent`: no batch for 3 intervals -> critical.
pub struct AgentSilent {
    cfg: AgentSilentConfig,
    common: crate::config::RuleCommon,
}

impl AgentSilent {
    /// The rule with its table.
    pub fn new(cfg: AgentSilentConfig) -> Self {
        let common = cfg.common();
        Self { cfg, common }
    }
}

impl Rule for AgentSilent {
    rule_basics!("agent_silent");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let interval = if host.interval.is_zero() {
            Duration::from_secs(1)
        } else {
            host.interval
        };
        let allowed = interval * self.cfg.missed_intervals.max(1);
        let silent_for = host.now.duration_since(host.last_seen).unwrap_or_default();
        let up_for = host.now.duration_since(host.started).unwrap_or_default();
        let subject = pb::AlertSubject::default();
        let mut out = Evaluation::complete();
        if silent_for <= allowed {
            return out;
        }
        if host.last_seen < host.started && up_for <= self.cfg.grace + allowed {
            // Not heard from since this collector started, but within the grace.
            out.observations.push(Observation::unknown(subject));
            return out;
        }
        let last = if host.last_seen > std::time::UNIX_EPOCH {
            format!("no data for {}", duration(silent_for.as_secs_f64()))
        } else {
            "never sent data".to_string()
        };
        out.observations.push(Observation {
            subject,
            level: Some(Severity::Critical),
            hold: Some(Severity::Critical),
            unknown: false,
            summary: format!(
                "{}: {last} (agent or host down; expected a batch every {})",
                host.hostname,
                duration(interval.as_secs_f64())
            ),
            evidence: pb::AlertEvidence {
                value: silent_for.as_secs_f64(),
                threshold: allowed.as_secs_f64(),
                values: vec![
                    value("silent_for", silent_for.as_secs_f64(), "seconds"),
                    value("interval", interval.as_secs_f64(), "seconds"),
                    value(
                        "last_seen_unix_nano",
                        unix_nanos(host.last_seen) as f64,
                        "unix_nanos",
                    ),
                ],
                ..Default::default()
            },
            time_to_impact: None,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::testing::FakeHistory;
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;

    fn eval(last_seen: u64, now: u64, started: u64) -> Evaluation {
        let rule = AgentSilent::new(AgentSilentConfig::default());
        let labels = HashMap::new();
        let latest = pb::Batch::default();
        let h = FakeHistory::default();
        let s = |x| UNIX_EPOCH + Duration::from_secs(1_000_000 + x);
        rule.evaluate(&HostView {
            host_id: "h",
            hostname: "web-1",
            labels: &labels,
            latest: &latest,
            recent: &[],
            last_seen: s(last_seen),
            interval: Duration::from_secs(1),
            now: s(now),
            started: s(started),
            history: &h,
        })
    }

    #[test]
    fn silent_after_three_intervals_not_before() {
        assert!(eval(100, 102, 0).observations.is_empty());
        let e = eval(100, 104, 0);
        assert_eq!(e.observations[0].level, Some(Severity::Critical));
        assert!(e.observations[0].summary.contains("no data for 4s"));
    }

    #[test]
    fn a_collector_restart_gives_agents_a_grace() {
        // Last seen before the restart at 200, 10 s after it: unknown, not silent.
        let e = eval(100, 210, 200);
        assert!(e.observations[0].unknown);
        // Past the grace: silent.
        let e = eval(100, 300, 200);
        assert_eq!(e.observations[0].level, Some(Severity::Critical));
    }
}
