//! History of scalar series from the store: `QuerySeries` (raw samples or
//! aggregated per step), `ListMetrics` and the store's statistics.
//!
//! Step semantics: with `step = 0` every raw sample in `[start, end]` is a
//! point. With a step, samples fall into buckets `[start + k*step, start +
//! (k+1)*step)` and each non-empty bucket gives one point stamped with its
//! start: min, max, avg or last of its samples, or for RATE the counter
//! increase per second over the pairs of consecutive samples ending in the
//! bucket. A decrease between two samples is a counter reset (the agent or
//! host restarted): the later value counts as the increase since the reset.
//! RATE looks back one step (at least a minute) before `start` so that the
//! first bucket has a predecessor.

use std::collections::BTreeMap;

use nodewatch_proto::pb;
use nodewatch_proto::time::now_nanos;

use super::{MAX_POINTS, QueryError, check_step, labels_of, limit, matchers, range};
use crate::metrics::{is_counter, parse_key};
use crate::store::{SeriesKind, Store};

/// Increase between two counter samples; a decrease is a reset (restart from 0).
fn increase(prev: f64, cur: f64) -> f64 {
    if cur >= prev { cur - prev } else { cur }
}

/// Aggregates time-ordered samples into points (see `QuerySeriesRequest`).
/// Samples before `start` are used only as predecessors for RATE.
pub fn aggregate(
    samples: &[(i64, f64)],
    start: i64,
    step: i64,
    agg: pb::Aggregation,
) -> Vec<pb::Point> {
    let mut out = Vec::new();
    if step <= 0 {
        for (i, &(t, v)) in samples.iter().enumerate() {
            if t < start {
                continue;
            }
            if agg == pb::Aggregation::Rate {
                let Some(&(pt, pv)) = i.checked_sub(1).and_then(|j| samples.get(j)) else {
                    continue;
                };
                if t > pt {
                    out.push(pb::Point {
                        time_unix_nano: t,
                        value: increase(pv, v) / ((t - pt) as f64 / 1e9),
                    });
                }
            } else {
                out.push(pb::Point {
                    time_unix_nano: t,
                    value: v,
                });
            }
        }
        return out;
    }
    let mut i = 0;
    while i < samples.len() {
        let (t, _) = samples[i];
        if t < start {
            i += 1;
            continue;
        }
        let bucket = (t - start) / step;
        let bstart = start + bucket * step;
        let bend = bstart.saturating_add(step);
        let mut j = i;
        while j < samples.len() && samples[j].0 < bend {
            j += 1;
        }
        let vals = &samples[i..j];
        let value = match agg {
            pb::Aggregation::Min => vals.iter().map(|s| s.1).fold(f64::INFINITY, f64::min),
            pb::Aggregation::Max => vals.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max),
            pb::Aggregation::Last => vals[vals.len() - 1].1,
            pb::Aggregation::Rate => {
                let (mut inc, mut dt) = (0.0, 0i64);
                for k in i..j {
                    if k == 0 {
                        continue;
                    }
                    let (pt, pv) = samples[k - 1];
                    let (ct, cv) = samples[k];
                    if ct > pt {
                        inc += increase(pv, cv);
                        dt += ct - pt;
                    }
                }
                if dt == 0 {
                    i = j;
                    continue;
                }
                inc / (dt as f64 / 1e9)
            }
            _ => vals.iter().map(|s| s.1).sum::<f64>() / vals.len() as f64,
        };
        out.push(pb::Point {
            time_unix_nano: bstart,
            value,
        });
        i = j;
    }
    out
}

/// Answers `Query.QuerySeries`.
pub fn query_series(
    store: &Store,
    req: &pb::QuerySeriesRequest,
) -> Result<pb::QuerySeriesResponse, QueryError> {
    if req.metric.is_empty() {
        return Err(QueryError::invalid(
            "metric must not be empty (ListMetrics lists them)",
        ));
    }
    let host_id = store.resolve_host(&req.host)?;
    let (start, end) = range(req.start_unix_nano, req.end_unix_nano, now_nanos())?;
    check_step(start, end, req.step_nanos)?;
    let matchers = matchers(&req.matchers)?;
    let mut agg = pb::Aggregation::try_from(req.aggregation).unwrap_or_default();
    if agg == pb::Aggregation::Unspecified {
        agg = if is_counter(&req.metric) {
            pb::Aggregation::Rate
        } else {
            pb::Aggregation::Avg
        };
    }
    let limit = limit(req.limit);
    let mut found = store.find_series(&host_id, &req.metric, &matchers, limit + 1);
    let truncated = found.len() > limit;
    found.truncate(limit);
    // RATE needs the sample before the first step.
    let lookback = if agg == pb::Aggregation::Rate {
        req.step_nanos.max(60_000_000_000)
    } else {
        0
    };
    let mut series = Vec::with_capacity(found.len());
    for s in &found {
        if s.kind != SeriesKind::Scalar {
            return Err(QueryError::invalid(format!(
                "{} is a histogram metric: use QueryHistogram",
                req.metric
            )));
        }
        let samples = store.read_scalar(&host_id, s.sid, start.saturating_sub(lookback), end)?;
        if req.step_nanos == 0 && samples.len() > MAX_POINTS {
            return Err(QueryError::invalid(format!(
                "more than {MAX_POINTS} raw samples in range; set a step"
            )));
        }
        let points = aggregate(&samples, start, req.step_nanos, agg);
        let (metric, labels) = labels_of(&s.key);
        series.push(pb::SeriesData {
            metric,
            labels,
            points,
        });
    }
    Ok(pb::QuerySeriesResponse {
        host_id,
        series,
        truncated,
        aggregation: agg as i32,
        start_unix_nano: start,
        end_unix_nano: end,
    })
}

/// Answers `Query.ListMetrics`.
pub fn list_metrics(
    store: &Store,
    req: &pb::ListMetricsRequest,
) -> Result<pb::ListMetricsResponse, QueryError> {
    let host_id = store.resolve_host(&req.host)?;
    let mut by_name: BTreeMap<String, pb::MetricInfo> = BTreeMap::new();
    for s in store.find_series(&host_id, "", &[], usize::MAX) {
        let (metric, _) = parse_key(&s.key);
        let e = by_name
            .entry(metric.to_string())
            .or_insert_with(|| pb::MetricInfo {
                name: metric.to_string(),
                series: 0,
                histogram: s.kind == SeriesKind::Histogram,
                counter: is_counter(metric),
            });
        e.series += 1;
    }
    Ok(pb::ListMetricsResponse {
        host_id,
        metrics: by_name.into_values().collect(),
    })
}

/// Answers `Query.GetStoreStats`.
pub fn store_stats(store: &Store) -> pb::GetStoreStatsResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let size = store.size();
    let c = store.counters();
    pb::GetStoreStatsResponse {
        chunk_bytes: size.chunk_bytes,
        wal_bytes: size.wal_bytes,
        head_bytes: size.head_bytes,
        head_series: size.head_series,
        batches_stored: c.batches_stored.load(Relaxed),
        batches_duplicate: c.batches_duplicate.load(Relaxed),
        samples_stored: c.samples_stored.load(Relaxed),
        rejected_non_finite: c.rejected_non_finite.load(Relaxed),
        rejected_future: c.rejected_future.load(Relaxed),
        rejected_past: c.rejected_past.load(Relaxed),
        rejected_cardinality: c.rejected_cardinality.load(Relaxed),
        rejected_hosts: c.rejected_hosts.load(Relaxed),
        out_of_order_batches: c.out_of_order_batches.load(Relaxed),
        wal_syncs: c.wal_syncs.load(Relaxed),
        flushes: c.flushes.load(Relaxed),
        expired_generations: c.expired_generations.load(Relaxed),
        wal_corrupt_records: c.wal_corrupt_records.load(Relaxed),
        wal_write_errors: c.wal_write_errors.load(Relaxed),
        writable: store.writable(),
        series_refused: c.series_refused.load(Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn pts(p: &[pb::Point]) -> Vec<(i64, f64)> {
        p.iter().map(|p| (p.time_unix_nano, p.value)).collect()
    }

    #[test]
    fn steps_aggregate_min_max_avg_last() {
        let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * S, i as f64)).collect();
        let avg = aggregate(&samples, 0, 5 * S, pb::Aggregation::Avg);
        assert_eq!(pts(&avg), vec![(0, 2.0), (5 * S, 7.0)]);
        let min = aggregate(&samples, 0, 5 * S, pb::Aggregation::Min);
        assert_eq!(pts(&min), vec![(0, 0.0), (5 * S, 5.0)]);
        let max = aggregate(&samples, 0, 5 * S, pb::Aggregation::Max);
        assert_eq!(pts(&max), vec![(0, 4.0), (5 * S, 9.0)]);
        let last = aggregate(&samples, 2 * S, 4 * S, pb::Aggregation::Last);
        assert_eq!(pts(&last), vec![(2 * S, 5.0), (6 * S, 9.0)]);
        let raw = aggregate(&samples, 8 * S, 0, pb::Aggregation::Avg);
        assert_eq!(pts(&raw), vec![(8 * S, 8.0), (9 * S, 9.0)]);
    }

    #[test]
    fn rate_handles_counter_resets_and_uses_the_previous_sample() {
        // 10/s, then a restart at t=5 (value drops to 3), then 10/s again.
        let samples = vec![
            (0, 100.0),
            (S, 110.0),
            (2 * S, 120.0),
            (3 * S, 130.0),
            (4 * S, 140.0),
            (5 * S, 3.0),
            (6 * S, 13.0),
        ];
        let r = aggregate(&samples, S, 3 * S, pb::Aggregation::Rate);
        // Step [1,4): pairs (0,1),(1,2),(2,3) -> 30 over 3 s.
        assert_eq!(pts(&r)[0], (S, 10.0));
        // Step [4,7): (3,4)=10, (4,5)=reset 3, (5,6)=10 -> 23 over 3 s.
        assert!((r[1].value - 23.0 / 3.0).abs() < 1e-9);
        let raw = aggregate(&samples, 0, 0, pb::Aggregation::Rate);
        assert_eq!(raw.len(), 6);
        assert_eq!(raw[4].value, 3.0);
    }

    fn batch(seq: u64, t: i64) -> pb::Batch {
        use nodewatch_proto::hist::bucket_index_g as bucket_index;
        pb::Batch {
            seq,
            time_unix_nano: t,
            cpu: Some(pb::CpuStats {
                context_switches: seq * 500,
                ..Default::default()
            }),
            processes: [(10, "web"), (11, "db")]
                .iter()
                .map(|&(pid, name)| pb::ProcessStats {
                    pid,
                    start_time_ticks: 7,
                    name: name.into(),
                    rss_bytes: u64::from(pid) * 1000 + seq,
                    ..Default::default()
                })
                .collect(),
            syscalls: vec![pb::SyscallLatency {
                syscall: "read".into(),
                count: 100,
                latency_ns: Some(pb::Histogram {
                    grouping_power: 4,
                    max_value_power: 40,
                    // 99 fast calls (~1 us) and one slow (~1 ms) per interval.
                    indices: vec![bucket_index(4, 1_000), bucket_index(4, 1_000_000)],
                    counts: vec![99, 1],
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    async fn filled_store(dir: &std::path::Path) -> (Store, i64) {
        let store = Store::open(dir, crate::store::StoreConfig::default()).unwrap();
        let t0 = now_nanos() - 600 * S;
        for seq in 1..=120u64 {
            store
                .append("h", 1, &batch(seq, t0 + seq as i64 * S))
                .await
                .unwrap();
            if seq == 60 {
                store.flush().await.unwrap();
            }
        }
        (store, t0)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn series_query_selects_by_label_and_rates_counters() {
        let dir = tempfile::tempdir().unwrap();
        let (store, t0) = filled_store(dir.path()).await;
        let r = query_series(
            &store,
            &pb::QuerySeriesRequest {
                host: "h".into(),
                metric: "process_rss_bytes".into(),
                matchers: vec![pb::LabelMatcher {
                    name: "name".into(),
                    value: "db".into(),
                    op: pb::MatchOp::Equal as i32,
                }],
                start_unix_nano: t0,
                end_unix_nano: t0 + 200 * S,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.series.len(), 1);
        assert!(
            r.series[0]
                .labels
                .iter()
                .any(|l| l.name == "pid" && l.value == "11")
        );
        assert_eq!(r.series[0].points.len(), 120);
        assert_eq!(r.series[0].points[119].value, 11_000.0 + 120.0);
        // Counters default to a per-second rate: 500 switches per 1 s batch.
        let r = query_series(
            &store,
            &pb::QuerySeriesRequest {
                host: "h".into(),
                metric: "context_switches_total".into(),
                start_unix_nano: t0 + 10 * S,
                end_unix_nano: t0 + 100 * S,
                step_nanos: 30 * S,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.aggregation, pb::Aggregation::Rate as i32);
        let pts = &r.series[0].points;
        assert_eq!(pts.len(), 4, "{pts:?}");
        assert!(
            pts.iter().all(|p| (p.value - 500.0).abs() < 1e-9),
            "{pts:?}"
        );
        // Bad requests are invalid arguments; unknown hosts are named.
        let bad = pb::QuerySeriesRequest {
            host: "h".into(),
            metric: "load1".into(),
            start_unix_nano: 10,
            end_unix_nano: 5,
            ..Default::default()
        };
        assert!(matches!(
            query_series(&store, &bad),
            Err(QueryError::InvalidArgument(_))
        ));
        let unknown = pb::QuerySeriesRequest {
            host: "nope".into(),
            metric: "load1".into(),
            ..Default::default()
        };
        assert!(matches!(
            query_series(&store, &unknown),
            Err(QueryError::Host(crate::hosts::ResolveError::NotFound(_)))
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn histogram_query_merges_across_head_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (store, t0) = filled_store(dir.path()).await;
        let r = crate::query::histogram::query_histogram(
            &store,
            &pb::QueryHistogramRequest {
                host: "h".into(),
                start_unix_nano: t0,
                end_unix_nano: t0 + 200 * S,
                percentiles: vec![50.0, 99.0, 99.5],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.series.len(), 1);
        let p = &r.series[0].points[0];
        assert_eq!(p.count, 120 * 100);
        let get = |q: f64| {
            p.percentiles
                .iter()
                .find(|x| x.percentile == q)
                .unwrap()
                .value
        };
        assert!((1_000..=1_063).contains(&get(50.0)), "{p:?}");
        assert!((1_000..=1_063).contains(&get(99.0)), "{p:?}");
        assert!((1_000_000..=1_065_535).contains(&get(99.5)), "{p:?}");
        let m = list_metrics(&store, &pb::ListMetricsRequest { host: "h".into() }).unwrap();
        let h = m
            .metrics
            .iter()
            .find(|m| m.name == "syscall_latency_ns")
            .unwrap();
        assert!(h.histogram);
        assert!(
            m.metrics
                .iter()
                .any(|m| m.name == "context_switches_total" && m.counter)
        );
    }
}
