//! Histogram series from the store: `QueryHistogram` merges the sparse
//! histograms of a series over the whole range (`step = 0`) or per step, and
//! reports percentiles from the merged bucket counts (never by averaging
//! percentiles), each within the layout's relative error.

use std::collections::BTreeMap;

use nodewatch_proto::hist::Merged;
use nodewatch_proto::pb;
use nodewatch_proto::time::now_nanos;

use super::{QueryError, check_step, labels_of, limit, matchers, range};
use crate::store::{SeriesKind, Store};

/// Default percentiles of histogram queries.
pub const DEFAULT_PERCENTILES: [f64; 4] = [50.0, 90.0, 99.0, 99.9];

/// Answers `Query.QueryHistogram`.
pub fn query_histogram(
    store: &Store,
    req: &pb::QueryHistogramRequest,
) -> Result<pb::QueryHistogramResponse, QueryError> {
    let metric = if req.metric.is_empty() {
        "syscall_latency_ns"
    } else {
        req.metric.as_str()
    };
    let host_id = store.resolve_host(&req.host)?;
    let (start, end) = range(req.start_unix_nano, req.end_unix_nano, now_nanos())?;
    check_step(start, end, req.step_nanos)?;
    let matchers = matchers(&req.matchers)?;
    let percentiles: Vec<f64> = if req.percentiles.is_empty() {
        DEFAULT_PERCENTILES.to_vec()
    } else {
        req.percentiles.clone()
    };
    if percentiles.iter().any(|p| !(0.0..=100.0).contains(p)) {
        return Err(QueryError::invalid("percentiles must be within 0..=100"));
    }
    let limit = limit(req.limit);
    let mut found = store.find_series(&host_id, metric, &matchers, limit + 1);
    let truncated = found.len() > limit;
    found.truncate(limit);
    let mut series = Vec::new();
    for s in &found {
        if s.kind != SeriesKind::Histogram {
            return Err(QueryError::invalid(format!(
                "{metric} is not a histogram metric: use QuerySeries"
            )));
        }
        let samples = store.read_histograms(&host_id, s.sid, start, end)?;
        let mut steps: BTreeMap<i64, (u8, Merged)> = BTreeMap::new();
        for (t, g, h) in &samples {
            let bucket = if req.step_nanos > 0 {
                start + (t - start) / req.step_nanos * req.step_nanos
            } else {
                start
            };
            let e = steps.entry(bucket).or_insert((*g, Merged::default()));
            if e.0 == *g {
                e.1.add(h);
            }
        }
        let points = steps
            .into_iter()
            .filter(|(_, (_, m))| m.count() > 0)
            .map(|(t, (g, m))| pb::MergedHistogramPoint {
                time_unix_nano: t,
                count: m.count(),
                percentiles: percentiles
                    .iter()
                    .map(|&p| pb::Percentile {
                        percentile: p,
                        value: m.percentile(u32::from(g), p).unwrap_or(0),
                    })
                    .collect(),
                buckets: req.include_buckets.then(|| pb::Histogram {
                    grouping_power: u32::from(g),
                    max_value_power: 64,
                    indices: m.buckets.keys().copied().collect(),
                    counts: m.buckets.values().copied().collect(),
                }),
            })
            .collect();
        let (metric, labels) = labels_of(&s.key);
        series.push(pb::HistogramSeriesData {
            metric,
            labels,
            points,
        });
    }
    Ok(pb::QueryHistogramResponse {
        host_id,
        series,
        truncated,
    })
}
