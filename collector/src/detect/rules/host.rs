//! Host-wide capacity: `host_memory` (MemAvailable-based; page cache is not
//! "used") and `host_cpu` (busy share averaged over a window: the scaling trigger).

use nodewatch_proto::pb;

use super::{host_series, within};
use crate::config::{HostCpuConfig, HostMemoryConfig};
use crate::detect::rule::{
    Evaluation, HostView, Observation, Rule, Severity, Worse, bytes, grade, percent, value,
};

rule_struct!(
    /// `host_memory`: (MemTotal - MemAvailable) / MemTotal > 85 % -> high.
    HostMemory,
    HostMemoryConfig
);

impl Rule for HostMemory {
    rule_basics!("host_memory");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let Some(m) = &host.latest.memory else {
            return Evaluation::default();
        };
        let mut out = Evaluation::complete();
        if m.total_bytes == 0 {
            return out;
        }
        let used = m.total_bytes.saturating_sub(m.available_bytes) as f64;
        let ratio = used / m.total_bytes as f64;
        let t = [(Severity::High, self.cfg.high)];
        let (level, hold, threshold) = grade(ratio, &t, Worse::Above, self.hysteresis);
        if hold.is_some() {
            out.observations.push(Observation {
                level,
                hold,
                summary: format!(
                    "{}: memory {} used ({} of {}; {} available, page cache not counted)",
                    host.hostname,
                    percent(ratio),
                    bytes(used),
                    bytes(m.total_bytes as f64),
                    bytes(m.available_bytes as f64)
                ),
                evidence: pb::AlertEvidence {
                    value: ratio,
                    threshold,
                    values: vec![
                        value("total", m.total_bytes as f64, "bytes"),
                        value("available", m.available_bytes as f64, "bytes"),
                        value("cached", m.cached_bytes as f64, "bytes"),
                        value("oom_kills", m.oom_kills as f64, "count"),
                    ],
                    series_name: "used_ratio".into(),
                    series: host_series(host.recent, |b| {
                        b.memory
                            .as_ref()
                            .filter(|m| m.total_bytes > 0)
                            .map(|m| 1.0 - m.available_bytes as f64 / m.total_bytes as f64)
                    }),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        out
    }
}

rule_struct!(
    /// `host_cpu`: busy share averaged over `window` > 70 % -> medium.
    HostCpu,
    HostCpuConfig
);

fn busy(b: &pb::Batch) -> Option<f64> {
    b.cpu
        .as_ref()
        .and_then(|c| c.total.as_ref())
        .map(|t| t.busy_ratio)
}

impl Rule for HostCpu {
    rule_basics!("host_cpu");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let win = within(host.recent, self.cfg.window);
        let samples: Vec<f64> = win.iter().filter_map(|b| busy(b)).collect();
        if samples.len() < 2 {
            return Evaluation::default();
        }
        let mut out = Evaluation::complete();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let t = [(Severity::Medium, self.cfg.medium)];
        let (level, hold, threshold) = grade(mean, &t, Worse::Above, self.hysteresis);
        if hold.is_some() {
            out.observations.push(Observation {
                level,
                hold,
                summary: format!(
                    "{}: CPU {} busy over the last {} (scale out or find the hot process: nodewatch top --by cpu)",
                    host.hostname,
                    percent(mean),
                    crate::detect::rule::duration(self.cfg.window.as_secs_f64())
                ),
                evidence: pb::AlertEvidence {
                    value: mean,
                    threshold,
                    window_seconds: self.cfg.window.as_secs_f64(),
                    values: vec![value("busy_mean", mean, "ratio")],
                    series_name: "busy_ratio".into(),
                    series: host_series(win, busy),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::testing::{FakeHistory, evaluate, t};

    #[test]
    fn memory_counts_available_not_free() {
        let h = FakeHistory::default();
        let rule = HostMemory::new(HostMemoryConfig::default(), 0.05);
        let b = |free, available| pb::Batch {
            memory: Some(pb::MemoryStats {
                total_bytes: 1000,
                free_bytes: free,
                available_bytes: available,
                cached_bytes: 800,
                ..Default::default()
            }),
            ..Default::default()
        };
        // Little free but much reclaimable page cache: fine.
        assert!(
            evaluate(&rule, vec![b(50, 850)], &h)
                .observations
                .is_empty()
        );
        assert_eq!(
            evaluate(&rule, vec![b(50, 100)], &h).observations[0].level,
            Some(Severity::High)
        );
    }

    #[test]
    fn cpu_is_averaged_over_the_window() {
        let h = FakeHistory::default();
        let rule = HostCpu::new(HostCpuConfig::default(), 0.05);
        let b = |secs: f64, r: f64| pb::Batch {
            time_unix_nano: t(secs),
            cpu: Some(pb::CpuStats {
                total: Some(pb::CpuTimes {
                    cpu: -1,
                    busy_ratio: r,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spiky: Vec<_> = (0..60)
            .map(|i| b(f64::from(i), if i % 10 == 0 { 1.0 } else { 0.3 }))
            .collect();
        assert!(evaluate(&rule, spiky, &h).observations.is_empty());
        let busy: Vec<_> = (0..60).map(|i| b(f64::from(i), 0.9)).collect();
        assert_eq!(
            evaluate(&rule, busy, &h).observations[0].level,
            Some(Severity::Medium)
        );
    }
}
