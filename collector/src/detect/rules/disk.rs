//! Disks: `disk_full` (free space or inodes below 5 % / 3 %) and
//! `disk_filling` (projected time to full, bytes and inodes).
//!
//! `disk_filling` fits the free series of the window (from the store) with
//! Theil–Sen, after the last cleanup: a rise of free space larger than
//! `cleanup` of the size (log rotation, a cache purge) restarts the fit.
//! When cleanups recur, a projection that runs past the next expected cleanup
//! is not an alert: the rotation keeps up, and the alert does not flap with
//! each cycle. The time to full comes with the band of the slope's 95 % interval.

use std::collections::HashMap;

use nodewatch_proto::pb;

use crate::config::{DiskFillingConfig, DiskFullConfig};
use crate::detect::fit::{jump_times, seconds, theil_sen};
use crate::detect::rule::{
    Evaluation, HostView, Observation, Rule, Severity, Worse, bytes, duration, grade, percent,
    value,
};

rule_struct!(
    /// `disk_full`: free < 5 % (high) / < 3 % (critical), bytes or inodes.
    DiskFull,
    DiskFullConfig
);

/// (resource, free, total) of a mount: bytes available to users, free inodes.
fn resources(d: &pb::DiskUsage) -> Vec<(&'static str, f64, f64)> {
    let mut v = vec![("bytes", d.available_bytes as f64, d.size_bytes as f64)];
    if d.inodes_total > 0 {
        v.push(("inodes", d.inodes_free as f64, d.inodes_total as f64));
    }
    v
}

fn subject(d: &pb::DiskUsage, resource: &str) -> pb::AlertSubject {
    pb::AlertSubject {
        mount: d.mount_point.clone(),
        device: d.device.clone(),
        resource: resource.to_string(),
        ..Default::default()
    }
}

fn amount(resource: &str, v: f64) -> String {
    if resource == "bytes" {
        bytes(v)
    } else {
        format!("{v:.0} inodes")
    }
}

impl Rule for DiskFull {
    rule_basics!("disk_full");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let disks = &host.latest.disks;
        let mut out = Evaluation {
            observations: Vec::new(),
            complete: !disks.is_empty(),
        };
        let t = [
            (Severity::High, self.cfg.high),
            (Severity::Critical, self.cfg.critical),
        ];
        for d in disks.iter().filter(|d| !d.read_only && d.size_bytes > 0) {
            for (resource, free, total) in resources(d) {
                let ratio = free / total;
                let (level, hold, threshold) = grade(ratio, &t, Worse::Below, self.hysteresis);
                if hold.is_none() {
                    continue;
                }
                out.observations.push(Observation {
                    subject: subject(d, resource),
                    level,
                    hold,
                    summary: format!(
                        "{} ({}) has {} free of {} ({}); writes fail with ENOSPC when it is full",
                        d.mount_point,
                        d.device,
                        amount(resource, free),
                        amount(resource, total),
                        percent(ratio)
                    ),
                    evidence: pb::AlertEvidence {
                        value: ratio,
                        threshold,
                        values: vec![
                            value("free", free, resource),
                            value("total", total, resource),
                        ],
                        ..Default::default()
                    },
                    ..Default::default()
                });
            }
        }
        out
    }
}

rule_struct!(
    /// `disk_filling`: full within 24 h and free < 40 % -> high; within 4 h and free < 20 % -> critical.
    DiskFilling,
    DiskFillingConfig
);

/// Points of the free series fetched per mount.
const POINTS: u32 = 240;

impl Rule for DiskFilling {
    rule_basics!("disk_filling");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let disks = &host.latest.disks;
        let end = host.latest.time_unix_nano;
        let window = self.cfg.window;
        let mut history: HashMap<(&str, String), Vec<(i64, f64)>> = HashMap::new();
        for (resource, metric) in [
            ("bytes", "disk_available_bytes"),
            ("inodes", "disk_inodes_free"),
        ] {
            for (labels, points) in host
                .history
                .series(host.host_id, metric, end, window, POINTS)
            {
                if let Some((_, mount)) = labels.into_iter().find(|(k, _)| k == "mount") {
                    history.insert((resource, mount), points);
                }
            }
        }
        let mut out = Evaluation {
            observations: Vec::new(),
            complete: !disks.is_empty() && !history.is_empty(),
        };
        let origin = end - nodewatch_proto::time::duration_nanos(window);
        let win_s = window.as_secs_f64();
        let h = self.hysteresis;
        for d in disks.iter().filter(|d| !d.read_only && d.size_bytes > 0) {
            for (resource, free, total) in resources(d) {
                let Some(points) = history.get(&(resource, d.mount_point.clone())) else {
                    continue;
                };
                let pts = seconds(points, origin);
                let cleanups = jump_times(&pts, self.cfg.cleanup * total, true);
                let from = cleanups.last().copied().unwrap_or(f64::MIN);
                let seg: Vec<(f64, f64)> =
                    pts.iter().copied().filter(|&(t, _)| t >= from).collect();
                let fit = theil_sen(&seg);
                let Some(fit) = fit.filter(|f| f.span >= self.cfg.min_coverage * win_s) else {
                    out.observations
                        .push(Observation::unknown(subject(d, resource)));
                    continue;
                };
                let free_ratio = free / total;
                if fit.slope >= 0.0 {
                    continue;
                }
                let rate = -fit.slope;
                let tto = free.max(0.0) / rate;
                // A cleanup expected before the disk fills: the rotation keeps up.
                if !cleanups.is_empty() {
                    let first = pts.first().map_or(0.0, |p| p.0);
                    let cycle = if cleanups.len() >= 2 {
                        (cleanups[cleanups.len() - 1] - cleanups[0]) / (cleanups.len() - 1) as f64
                    } else {
                        cleanups[0] - first
                    };
                    let now_s = pts.last().map_or(0.0, |p| p.0);
                    let next = cleanups[cleanups.len() - 1] + cycle - now_s;
                    if next > 0.0 && tto > next {
                        continue;
                    }
                }
                let significant = fit.slope_high < 0.0;
                let crit = (
                    self.cfg.critical_within.as_secs_f64(),
                    self.cfg.critical_free,
                );
                let high = (self.cfg.high_within.as_secs_f64(), self.cfg.high_free);
                let sev_at = |relax: f64| {
                    if tto <= crit.0 * (1.0 + relax) && free_ratio < crit.1 * (1.0 + relax) {
                        Some(Severity::Critical)
                    } else if tto <= high.0 * (1.0 + relax) && free_ratio < high.1 * (1.0 + relax) {
                        Some(Severity::High)
                    } else {
                        None
                    }
                };
                let level = sev_at(0.0).filter(|_| significant);
                let hold = sev_at(h);
                if hold.is_none() {
                    continue;
                }
                let band_low = free / -fit.slope_low.min(-f64::MIN_POSITIVE);
                let band_high = if fit.slope_high < 0.0 {
                    free / -fit.slope_high
                } else {
                    0.0
                };
                let threshold = if level == Some(Severity::Critical) {
                    crit.0
                } else {
                    high.0
                };
                out.observations.push(Observation {
                    subject: subject(d, resource),
                    level,
                    hold,
                    unknown: false,
                    summary: format!(
                        "{} ({}) fills at {}/h: full in ~{} ({}–{}), {} free",
                        d.mount_point,
                        resource,
                        amount(resource, rate * 3600.0),
                        duration(tto),
                        duration(band_low),
                        if band_high > 0.0 {
                            duration(band_high)
                        } else {
                            "never".to_string()
                        },
                        percent(free_ratio)
                    ),
                    evidence: pb::AlertEvidence {
                        value: tto,
                        threshold,
                        window_seconds: fit.span,
                        values: vec![
                            value("slope", fit.slope * 3600.0, &format!("{resource}/h")),
                            value(
                                "slope_low",
                                fit.slope_low * 3600.0,
                                &format!("{resource}/h"),
                            ),
                            value(
                                "slope_high",
                                fit.slope_high * 3600.0,
                                &format!("{resource}/h"),
                            ),
                            value("free", free, resource),
                            value("total", total, resource),
                            value("free_ratio", free_ratio, "ratio"),
                            value("cleanups", cleanups.len() as f64, "count"),
                        ],
                        series_name: format!("free_{resource}"),
                        series: points
                            .iter()
                            .map(|&(t, v)| pb::EvidencePoint {
                                time_unix_nano: t,
                                value: v,
                            })
                            .collect(),
                        time_to_impact_low_seconds: band_low,
                        time_to_impact_high_seconds: band_high,
                    },
                    time_to_impact: Some(tto),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::testing::{FakeHistory, evaluate, t};

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn disk(free: f64) -> pb::Batch {
        pb::Batch {
            time_unix_nano: t(6.0 * 3600.0),
            disks: vec![pb::DiskUsage {
                mount_point: "/var".into(),
                device: "/dev/sda2".into(),
                size_bytes: (100.0 * GIB) as u64,
                available_bytes: free as u64,
                free_bytes: free as u64,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn history(f: impl Fn(f64) -> f64) -> FakeHistory {
        let pts: Vec<(i64, f64)> = (0..=360)
            .map(|i| f64::from(i) * 60.0)
            .map(|s| (t(s), f(s)))
            .collect();
        let mut h = FakeHistory::default();
        h.series.insert(
            "disk_available_bytes".into(),
            vec![(vec![("mount".to_string(), "/var".to_string())], pts)],
        );
        h
    }

    #[test]
    fn disk_full_bytes_and_inodes() {
        let rule = DiskFull::new(DiskFullConfig::default(), 0.05);
        let h = FakeHistory::default();
        let e = evaluate(&rule, vec![disk(4.0 * GIB)], &h);
        assert_eq!(e.observations[0].level, Some(Severity::High));
        assert_eq!(e.observations[0].subject.resource, "bytes");
        let e = evaluate(&rule, vec![disk(2.0 * GIB)], &h);
        assert_eq!(e.observations[0].level, Some(Severity::Critical));
        let mut b = disk(50.0 * GIB);
        b.disks[0].inodes_total = 1000;
        b.disks[0].inodes_free = 10;
        let e = evaluate(&rule, vec![b], &h);
        assert_eq!(e.observations[0].subject.resource, "inodes");
        let mut ro = disk(0.0);
        ro.disks[0].read_only = true;
        assert!(evaluate(&rule, vec![ro], &h).observations.is_empty());
    }

    #[test]
    fn steady_fill_projects_time_to_full() {
        let rule = DiskFilling::new(DiskFillingConfig::default(), 0.05);
        // 40 GiB free at the start, 2 GiB/h: 28 GiB left now, 14 h to full.
        let h = history(|s| 40.0 * GIB - s / 3600.0 * 2.0 * GIB);
        let e = evaluate(&rule, vec![disk(28.0 * GIB)], &h);
        let o = &e.observations[0];
        assert_eq!(o.level, Some(Severity::High));
        assert!((o.time_to_impact.unwrap() / 3600.0 - 14.0).abs() < 0.1);
        assert!(o.summary.contains("full in ~14h00m"), "{}", o.summary);
    }

    #[test]
    fn static_disk_and_slow_fill_do_not_fire() {
        let rule = DiskFilling::new(DiskFillingConfig::default(), 0.05);
        let h = history(|_| 10.0 * GIB);
        assert!(
            evaluate(&rule, vec![disk(10.0 * GIB)], &h)
                .observations
                .is_empty()
        );
        // 90 % free: filling but far from the 40 % free bar.
        let h = history(|s| 95.0 * GIB - s / 3600.0 * 2.0 * GIB);
        assert!(
            evaluate(&rule, vec![disk(83.0 * GIB)], &h)
                .observations
                .is_empty()
        );
    }

    #[test]
    fn rotation_that_keeps_up_does_not_fire_or_flap() {
        let rule = DiskFilling::new(DiskFillingConfig::default(), 0.05);
        // Fills 3 GiB/h from 20 GiB free, rotated back every hour.
        let f = |s: f64| 20.0 * GIB - (s % 3600.0) / 3600.0 * 3.0 * GIB;
        let h = history(f);
        for minute in [10.0, 30.0, 50.0] {
            let mut h2 = FakeHistory::default();
            let shifted: Vec<(i64, f64)> = (0..=360)
                .map(|i| f64::from(i) * 60.0 + minute * 60.0)
                .map(|s| (t(s - minute * 60.0), f(s)))
                .collect();
            h2.series.insert(
                "disk_available_bytes".into(),
                vec![(vec![("mount".to_string(), "/var".to_string())], shifted)],
            );
            let free = f(6.0 * 3600.0 + minute * 60.0);
            let e = evaluate(&rule, vec![disk(free)], &h2);
            assert!(
                e.observations.iter().all(|o| o.level.is_none()),
                "{minute}: {:?}",
                e.observations
            );
        }
        let e = evaluate(&rule, vec![disk(f(6.0 * 3600.0))], &h);
        assert!(e.observations.iter().all(|o| o.level.is_none()));
    }
}
