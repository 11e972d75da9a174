//! Synthetic hosts for the rules' unit tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewatch_proto::pb;

use crate::detect::rule::{Evaluation, History, HostView, LabeledSeries, Rule};

/// A history answering from fixed series.
#[derive(Default)]
pub struct FakeHistory {
    /// metric -> series (labels, points).
    pub series: HashMap<String, Vec<LabeledSeries>>,
}

impl History for FakeHistory {
    fn series(
        &self,
        _host_id: &str,
        metric: &str,
        end: i64,
        window: Duration,
        _points: u32,
    ) -> Vec<LabeledSeries> {
        let start = end - window.as_nanos() as i64;
        self.series
            .get(metric)
            .map(|v| {
                v.iter()
                    .map(|(l, p)| {
                        (
                            l.clone(),
                            p.iter()
                                .copied()
                                .filter(|&(t, _)| t >= start && t <= end)
                                .collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Seconds to Unix nanoseconds from a fixed origin.
pub fn t(secs: f64) -> i64 {
    1_700_000_000_000_000_000 + (secs * 1e9) as i64
}

/// Evaluates `rule` on a host whose batches are `recent` (the last one is
/// also the latest snapshot), at the time of the last batch.
pub fn evaluate(rule: &dyn Rule, recent: Vec<pb::Batch>, history: &FakeHistory) -> Evaluation {
    let recent: Vec<Arc<pb::Batch>> = recent.into_iter().map(Arc::new).collect();
    let latest = recent.last().map(|b| (**b).clone()).unwrap_or_default();
    let now = UNIX_EPOCH + Duration::from_nanos(latest.time_unix_nano.max(0) as u64);
    let labels = HashMap::new();
    let view = HostView {
        host_id: "h1",
        hostname: "web-1",
        labels: &labels,
        latest: &latest,
        recent: &recent,
        last_seen: now,
        interval: Duration::from_secs(1),
        now,
        started: SystemTime::UNIX_EPOCH,
        history,
    };
    rule.evaluate(&view)
}
