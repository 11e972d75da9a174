//! `memory_leak`: a process (pid + start time) whose RSS rises steadily.
//!
//! The RSS series over `window` comes from the store (so a collector restart
//! keeps the history); each (pid, start time) is its own series, so a
//! restarted process starts a new one and a short-lived process never covers
//! enough of the window. The Theil–Sen slope must be positive with its whole
//! 95 % band, the last `tail` of the window must still be rising, and the RSS
//! must have grown net over the window (a GC-like sawtooth has not). The
//! growth per hour must reach max(50 MiB, 5 % of the limit) and 10 % of the RSS.
//! Time to OOM: against the cgroup's memory.max when it has one, else the
//! host's MemAvailable.

use std::collections::HashMap;

use nodewatch_proto::pb;

use super::{process_label, process_subject};
use crate::config::MemoryLeakConfig;
use crate::detect::fit::{seconds, theil_sen};
use crate::detect::rule::{
    Evaluation, HostView, Observation, Rule, Severity, bytes, duration, value,
};

rule_struct!(
    /// `memory_leak`: robust RSS slope over the window, with time to OOM.
    MemoryLeak,
    MemoryLeakConfig
);

/// Points of the RSS series fetched per process.
const POINTS: u32 = 120;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Rule for MemoryLeak {
    rule_basics!("memory_leak");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let procs = &host.latest.processes;
        let end = host.latest.time_unix_nano;
        let window = self.cfg.window;
        let series = host
            .history
            .series(host.host_id, "process_rss_bytes", end, window, POINTS);
        let mut out = Evaluation {
            observations: Vec::new(),
            complete: host.latest.processes_complete && !procs.is_empty() && !series.is_empty(),
        };
        let mut by_proc: HashMap<(u32, u64), Vec<(i64, f64)>> = HashMap::new();
        for (labels, points) in series {
            let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let (Some(pid), Some(start)) = (
                get("pid").and_then(|v| v.parse().ok()),
                get("start").and_then(|v| v.parse().ok()),
            ) else {
                continue;
            };
            by_proc.insert((pid, start), points);
        }
        let available = host.latest.memory.map_or(0, |m| m.available_bytes) as f64;
        let h = self.hysteresis;
        let win_s = window.as_secs_f64();
        for p in procs {
            let Some(points) = by_proc.get(&(p.pid, p.start_time_ticks)) else {
                continue;
            };
            let origin = end - nodewatch_proto::time::duration_nanos(window);
            let pts = seconds(points, origin);
            let Some(fit) = theil_sen(&pts) else {
                continue;
            };
            if fit.span < self.cfg.min_coverage * win_s {
                // Too young to judge (a restarting process never gets here).
                out.observations
                    .push(Observation::unknown(process_subject(p)));
                continue;
            }
            let rss = p.rss_bytes as f64;
            let growth = fit.slope * 3600.0;
            let limit = p.cgroup_memory_max.map_or(available, |m| m as f64);
            let min_growth = self
                .cfg
                .min_growth_bytes_per_hour
                .max(self.cfg.min_growth_of_limit * limit);
            let ratio = if rss > 0.0 { growth / rss } else { 0.0 };
            // The recent tail still rising, and net growth (not a sawtooth).
            let tail_from = pts[pts.len() - 1].0 - self.cfg.tail * win_s;
            let tail: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|&(t, _)| t >= tail_from)
                .collect();
            let tail_rising = theil_sen(&tail).is_some_and(|f| f.slope > 0.0);
            let k = (pts.len() / 5).max(1);
            let head = median(pts[..k].iter().map(|x| x.1).collect());
            let last = median(pts[pts.len() - k..].iter().map(|x| x.1).collect());
            let net = last - head >= 0.5 * fit.slope * fit.span;
            let headroom = match p.cgroup_memory_max {
                Some(max) => (max as f64 - rss).max(0.0),
                None => available,
            };
            let tto = (fit.slope > 0.0).then(|| headroom / fit.slope);
            let sev = if tto.is_some_and(|t| t <= self.cfg.critical_within.as_secs_f64()) {
                Severity::Critical
            } else {
                Severity::High
            };
            let level = (growth >= min_growth
                && ratio >= self.cfg.min_growth_ratio_per_hour
                && fit.slope_low > 0.0
                && tail_rising
                && net)
                .then_some(sev);
            let hold = (growth >= min_growth * (1.0 - h)
                && ratio >= self.cfg.min_growth_ratio_per_hour * (1.0 - h)
                && fit.slope > 0.0
                && tail_rising)
                .then_some(sev);
            if hold.is_none() {
                continue;
            }
            let against = if p.cgroup_memory_max.is_some() {
                "its cgroup's memory.max"
            } else {
                "the host's available memory"
            };
            let oom = tto.map_or_else(String::new, |t| {
                format!("; out of memory in ~{} ({against})", duration(t))
            });
            let band = |s: f64| if s > 0.0 { headroom / s } else { 0.0 };
            out.observations.push(Observation {
                subject: process_subject(p),
                level,
                hold,
                unknown: false,
                summary: format!(
                    "{} leaks {}/h (RSS {}){oom}",
                    process_label(p),
                    bytes(growth),
                    bytes(rss)
                ),
                evidence: pb::AlertEvidence {
                    value: growth,
                    threshold: min_growth,
                    window_seconds: fit.span,
                    values: vec![
                        value("slope", growth, "bytes/h"),
                        value("slope_low", fit.slope_low * 3600.0, "bytes/h"),
                        value("slope_high", fit.slope_high * 3600.0, "bytes/h"),
                        value("growth_ratio", ratio, "ratio/h"),
                        value("rss", rss, "bytes"),
                        value("limit", limit, "bytes"),
                        value("headroom", headroom, "bytes"),
                    ],
                    series_name: "rss_bytes".into(),
                    series: points
                        .iter()
                        .map(|&(t, v)| pb::EvidencePoint {
                            time_unix_nano: t,
                            value: v,
                        })
                        .collect(),
                    time_to_impact_low_seconds: band(fit.slope_high),
                    time_to_impact_high_seconds: band(fit.slope_low),
                },
                time_to_impact: tto,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryLeakConfig;
    use crate::detect::rules::testing::{FakeHistory, evaluate, t};
    use std::time::Duration;

    const MIB: f64 = 1024.0 * 1024.0;

    type ProcSeries = ((u32, u64), Vec<(i64, f64)>);

    fn host(series: Vec<ProcSeries>, alive: &[(u32, u64, f64)]) -> (pb::Batch, FakeHistory) {
        let mut h = FakeHistory::default();
        h.series.insert(
            "process_rss_bytes".into(),
            series
                .into_iter()
                .map(|((pid, start), pts)| {
                    (
                        vec![
                            ("pid".to_string(), pid.to_string()),
                            ("start".to_string(), start.to_string()),
                            ("name".to_string(), "app".to_string()),
                        ],
                        pts,
                    )
                })
                .collect(),
        );
        let b = pb::Batch {
            time_unix_nano: t(3600.0),
            memory: Some(pb::MemoryStats {
                total_bytes: (16384.0 * MIB) as u64,
                available_bytes: (8192.0 * MIB) as u64,
                ..Default::default()
            }),
            processes: alive
                .iter()
                .map(|&(pid, start, rss)| pb::ProcessStats {
                    pid,
                    start_time_ticks: start,
                    name: "app".into(),
                    rss_bytes: rss as u64,
                    ..Default::default()
                })
                .collect(),
            processes_complete: true,
            ..Default::default()
        };
        (b, h)
    }

    fn line(f: impl Fn(f64) -> f64) -> Vec<(i64, f64)> {
        (0..=120)
            .map(|i| f64::from(i) * 30.0)
            .map(|s| (t(s), f(s)))
            .collect()
    }

    fn rule() -> MemoryLeak {
        MemoryLeak::new(MemoryLeakConfig::default(), 0.05)
    }

    #[test]
    fn a_steady_leak_fires_with_time_to_oom() {
        // 500 MiB -> 1100 MiB in an hour (the bar: 5 % of 8 GiB available per hour).
        let s = line(|s| 500.0 * MIB + s / 3600.0 * 600.0 * MIB);
        let (b, h) = host(vec![((42, 7), s)], &[(42, 7, 1100.0 * MIB)]);
        let e = evaluate(&rule(), vec![b], &h);
        let o = &e.observations[0];
        assert_eq!((o.subject.pid, o.level), (42, Some(Severity::High)));
        let tto = o.time_to_impact.unwrap();
        // 8 GiB available at 600 MiB/h: about 13.7 h.
        assert!((tto / 3600.0 - 8192.0 / 600.0).abs() < 0.2, "{tto}");
        assert!(
            o.summary.contains("app (pid 42) leaks 600 MiB/h"),
            "{}",
            o.summary
        );
    }

    #[test]
    fn cgroup_limit_gives_the_time_to_oom() {
        let s = line(|s| 500.0 * MIB + s / 3600.0 * 300.0 * MIB);
        let (mut b, h) = host(vec![((42, 7), s)], &[(42, 7, 800.0 * MIB)]);
        b.processes[0].cgroup_memory_max = Some((1024.0 * MIB) as u64);
        let e = evaluate(&rule(), vec![b], &h);
        let o = &e.observations[0];
        // 224 MiB of headroom at 300 MiB/h: 45 min, critical.
        assert_eq!(o.level, Some(Severity::Critical));
        assert!((o.time_to_impact.unwrap() - 224.0 / 300.0 * 3600.0).abs() < 60.0);
    }

    #[test]
    fn flat_sawtooth_slow_and_stopped_do_not_fire() {
        let flat = line(|_| 2048.0 * MIB);
        let saw = line(|s| 500.0 * MIB + (s % 900.0) / 900.0 * 200.0 * MIB);
        let slow = line(|s| 2000.0 * MIB + s / 3600.0 * 30.0 * MIB);
        // Grew, then stopped for the last half hour.
        let stopped = line(|s| 500.0 * MIB + s.min(1800.0) / 3600.0 * 600.0 * MIB);
        for (name, s) in [
            ("flat", flat),
            ("sawtooth", saw),
            ("slow", slow),
            ("stopped", stopped),
        ] {
            let last = s.last().unwrap().1;
            let (b, h) = host(vec![((1, 1), s)], &[(1, 1, last)]);
            let e = evaluate(&rule(), vec![b], &h);
            assert!(
                e.observations.iter().all(|o| o.level.is_none()),
                "{name}: {:?}",
                e.observations
            );
        }
    }

    #[test]
    fn restarting_processes_are_each_too_short() {
        // A new pid every 5 minutes, each growing fast while it lives.
        let mut series = Vec::new();
        for k in 0..12u32 {
            let pts: Vec<(i64, f64)> = (0..10)
                .map(|i| {
                    let s = f64::from(k) * 300.0 + f64::from(i) * 30.0;
                    (t(s), 100.0 * MIB + f64::from(i) * 20.0 * MIB)
                })
                .collect();
            series.push(((100 + k, u64::from(k)), pts));
        }
        let (b, h) = host(series, &[(111, 11, 280.0 * MIB)]);
        let e = evaluate(&rule(), vec![b], &h);
        assert!(
            e.observations.iter().all(|o| o.level.is_none()),
            "{:?}",
            e.observations
        );
    }

    #[test]
    fn windows_shrink_by_configuration() {
        let cfg = MemoryLeakConfig {
            window: Duration::from_secs(60),
            ..Default::default()
        };
        let s: Vec<(i64, f64)> = (0..=60)
            .map(|i| (t(3540.0 + f64::from(i)), 100.0 * MIB + f64::from(i) * MIB))
            .collect();
        let (b, h) = host(vec![((9, 9), s)], &[(9, 9, 160.0 * MIB)]);
        let e = evaluate(&MemoryLeak::new(cfg, 0.05), vec![b], &h);
        assert!(e.observations[0].level.is_some());
    }
}
