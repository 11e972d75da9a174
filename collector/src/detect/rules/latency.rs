//! `syscall_latency`: the p99 of a syscall family that does not block by
//! design (file operations, fsync-like calls), per cgroup, against its own
//! baseline, from the agent's per-interval eBPF histograms in the recent
//! history. The baseline is the median of the per-interval p99s over the span
//! before the judged window, so a slowdown shorter than half of it does not
//! raise its own bar; once firing, the alert holds while the p99 stays above
//! `min_latency` (the factor is for raising it, not for keeping it).

use std::collections::BTreeMap;

use nodewatch_proto::hist::{Dense, Sparse};
use nodewatch_proto::pb;
use nodewatch_proto::time::duration_nanos;

use super::within;
use crate::config::SyscallLatencyConfig;
use crate::detect::rule::{Evaluation, HostView, Observation, Rule, Severity, value};

rule_struct!(
    /// `syscall_latency`: p99 >= 10x its baseline and >= 100 ms -> high.
    SyscallLatency,
    SyscallLatencyConfig
);

#[derive(Default)]
struct Acc {
    current: Dense,
    current_calls: u64,
    baseline_p99s: Vec<u64>,
    baseline_calls: u64,
    series: Vec<pb::EvidencePoint>,
}

fn ms(ns: f64) -> String {
    format!("{:.1} ms", ns / 1e6)
}

impl Rule for SyscallLatency {
    rule_basics!("syscall_latency");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let span = within(host.recent, self.cfg.window + self.cfg.baseline);
        let newest = span.last().map_or(0, |b| b.time_unix_nano);
        let split = newest - duration_nanos(self.cfg.window);
        let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
        let mut any = false;
        for b in span {
            for l in &b.syscalls {
                any = true;
                let Some(family) = l.syscall.strip_prefix("family:") else {
                    continue;
                };
                if l.cgroup.is_empty()
                    || l.cgroup == "other"
                    || !self.cfg.families.iter().any(|f| f == family)
                {
                    continue;
                }
                let Some(h) = &l.latency_ns else { continue };
                if Sparse::validate(h.grouping_power, h.max_value_power, &h.indices, &h.counts)
                    .is_err()
                {
                    continue;
                }
                let a = acc
                    .entry((l.cgroup.clone(), family.to_string()))
                    .or_default();
                let mut one = Dense::default();
                one.add_sparse(&h.indices, &h.counts);
                let p99 = one.percentile(0.99);
                if let Some(p) = p99 {
                    a.series.push(pb::EvidencePoint {
                        time_unix_nano: b.time_unix_nano,
                        value: p as f64,
                    });
                }
                if b.time_unix_nano > split {
                    a.current.add_sparse(&h.indices, &h.counts);
                    a.current_calls += l.count;
                } else if let Some(p) = p99 {
                    a.baseline_p99s.push(p);
                    a.baseline_calls += l.count;
                }
            }
        }
        let mut out = Evaluation {
            observations: Vec::new(),
            complete: any,
        };
        let floor = self.cfg.min_latency.as_nanos() as f64;
        let h = self.hysteresis;
        for ((cgroup, family), mut a) in acc {
            let subject = pb::AlertSubject {
                cgroup: cgroup.clone(),
                resource: family.clone(),
                ..Default::default()
            };
            if a.current_calls < self.cfg.min_calls {
                continue;
            }
            let p99 = a.current.percentile(0.99).unwrap_or(0) as f64;
            let baseline = if a.baseline_calls >= self.cfg.min_calls && !a.baseline_p99s.is_empty()
            {
                a.baseline_p99s.sort_unstable();
                Some(a.baseline_p99s[a.baseline_p99s.len() / 2] as f64)
            } else {
                None
            };
            let Some(base) = baseline else {
                // No baseline yet: raise nothing, keep what is active while slow.
                if p99 >= floor * (1.0 - h) {
                    out.observations.push(Observation::unknown(subject));
                }
                continue;
            };
            let ratio = p99 / base.max(1.0);
            let level = (p99 >= floor && ratio >= self.cfg.factor).then_some(Severity::High);
            let hold = (p99 >= floor * (1.0 - h)).then_some(Severity::High);
            if hold.is_none() {
                continue;
            }
            out.observations.push(Observation {
                subject,
                level,
                hold,
                unknown: false,
                summary: format!(
                    "cgroup {cgroup}: {family} syscalls p99 {} over the last {} ({ratio:.0}x its baseline {})",
                    ms(p99),
                    crate::detect::rule::duration(self.cfg.window.as_secs_f64()),
                    ms(base)
                ),
                evidence: pb::AlertEvidence {
                    value: p99,
                    threshold: floor.max(base * self.cfg.factor),
                    window_seconds: self.cfg.window.as_secs_f64(),
                    values: vec![
                        value("p99", p99, "ns"),
                        value("baseline_p99", base, "ns"),
                        value("ratio", ratio, "ratio"),
                        value("calls", a.current_calls as f64, "count"),
                    ],
                    series_name: "p99_ns".into(),
                    series: a.series,
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

    /// A batch at `secs` with `n` calls of `ns` each in family `family` of cgroup "app".
    fn batch(secs: f64, family: &str, ns: u64, n: u64) -> pb::Batch {
        let mut d = Dense::default();
        for _ in 0..n {
            d.record(ns);
        }
        let s = d.to_sparse();
        pb::Batch {
            time_unix_nano: t(secs),
            syscalls: vec![pb::SyscallLatency {
                syscall: format!("family:{family}"),
                cgroup: "app".into(),
                count: n,
                errors: 0,
                latency_ns: Some(pb::Histogram {
                    grouping_power: nodewatch_proto::hist::GROUPING_POWER,
                    max_value_power: nodewatch_proto::hist::MAX_VALUE_POWER,
                    indices: s.indices,
                    counts: s.counts,
                }),
            }],
            ..Default::default()
        }
    }

    fn series(slow_from: f64, family: &str, slow_ns: u64) -> Vec<pb::Batch> {
        (0..900)
            .map(|i| {
                let s = f64::from(i);
                batch(
                    s,
                    family,
                    if s >= slow_from { slow_ns } else { 500_000 },
                    10,
                )
            })
            .collect()
    }

    #[test]
    fn slow_file_syscalls_fire_naming_the_cgroup() {
        let rule = SyscallLatency::new(SyscallLatencyConfig::default(), 0.05);
        let h = FakeHistory::default();
        let e = evaluate(&rule, series(840.0, "file", 200_000_000), &h);
        let o = &e.observations[0];
        assert_eq!(o.level, Some(Severity::High));
        assert_eq!(
            (o.subject.cgroup.as_str(), o.subject.resource.as_str()),
            ("app", "file")
        );
        assert!(
            o.summary.contains("cgroup app: file syscalls p99"),
            "{}",
            o.summary
        );
    }

    #[test]
    fn steady_fast_blocking_families_and_moderate_slowdowns_do_not() {
        let rule = SyscallLatency::new(SyscallLatencyConfig::default(), 0.05);
        let h = FakeHistory::default();
        assert!(
            evaluate(&rule, series(2000.0, "file", 0), &h)
                .observations
                .is_empty()
        );
        // Reads that wait for peers are slow by design.
        assert!(
            evaluate(&rule, series(840.0, "io", 2_000_000_000), &h)
                .observations
                .is_empty()
        );
        // 10x but under 100 ms: not yet.
        let e = evaluate(&rule, series(840.0, "file", 20_000_000), &h);
        assert!(e.observations.is_empty());
    }

    #[test]
    fn a_long_slowdown_keeps_holding() {
        let rule = SyscallLatency::new(SyscallLatencyConfig::default(), 0.05);
        let h = FakeHistory::default();
        // Slow for 10 of the last 15 minutes: the baseline rose, but it holds.
        let e = evaluate(&rule, series(300.0, "file", 200_000_000), &h);
        let o = &e.observations[0];
        assert_eq!(o.hold, Some(Severity::High));
    }
}
