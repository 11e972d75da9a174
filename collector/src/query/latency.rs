//! `Query.GetSyscallLatency`: merges a host's recent per-interval syscall
//! histograms (from the in-memory history) and computes counts, error rates
//! and percentiles within the histogram layout's stated error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nodewatch_proto::hist::{Dense, GROUPING_POWER, MAX_VALUE_POWER, RELATIVE_ERROR, Sparse};
use nodewatch_proto::pb;

use nodewatch_proto::time::unix_nanos;

use super::QueryError;
use crate::hosts::HostRegistry;

/// Range used when the request gives no start.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(600);
/// Distinct (syscall, cgroup) entries merged at most per request.
const MAX_ENTRIES: usize = 20_000;

#[derive(Default)]
struct Acc {
    count: u64,
    errors: u64,
    hist: Dense,
}

/// True when an entry of `cgroup` matches the request's cgroup selector.
fn cgroup_matches(selector: &str, cgroup: &str) -> bool {
    match selector {
        "" => cgroup.is_empty(),
        "*" => !cgroup.is_empty(),
        sel => cgroup == sel.trim_matches('/') || (sel == "/" && cgroup == "/"),
    }
}

/// Merges `batches` for the given selectors (see `GetSyscallLatencyRequest`).
/// Histograms with another layout or a malformed shape are skipped.
pub fn summarize(
    batches: &[Arc<pb::Batch>],
    syscall: &str,
    cgroup: &str,
) -> pb::GetSyscallLatencyResponse {
    let mut acc: HashMap<(String, String), Acc> = HashMap::new();
    let mut from = i64::MAX;
    let mut to = i64::MIN;
    let mut used = 0u32;
    for b in batches {
        let mut any = false;
        for l in &b.syscalls {
            if (!syscall.is_empty() && l.syscall != syscall) || !cgroup_matches(cgroup, &l.cgroup) {
                continue;
            }
            let Some(h) = &l.latency_ns else { continue };
            if Sparse::validate(h.grouping_power, h.max_value_power, &h.indices, &h.counts).is_err()
            {
                continue;
            }
            let key = (l.syscall.clone(), l.cgroup.clone());
            if !acc.contains_key(&key) && acc.len() >= MAX_ENTRIES {
                continue;
            }
            let a = acc.entry(key).or_default();
            a.count = a.count.saturating_add(l.count);
            a.errors = a.errors.saturating_add(l.errors);
            a.hist.add_sparse(&h.indices, &h.counts);
            any = true;
        }
        if any {
            used += 1;
            from = from.min(b.time_unix_nano);
            to = to.max(b.time_unix_nano);
        }
    }
    let mut entries: Vec<pb::SyscallLatencySummary> = acc
        .into_iter()
        .map(|((syscall, cgroup), a)| {
            let sparse = a.hist.to_sparse();
            let q = |p: f64| a.hist.percentile(p).unwrap_or(0);
            pb::SyscallLatencySummary {
                syscall,
                cgroup,
                count: a.count,
                errors: a.errors,
                error_ratio: if a.count == 0 {
                    0.0
                } else {
                    a.errors as f64 / a.count as f64
                },
                p50_ns: q(0.5),
                p90_ns: q(0.9),
                p99_ns: q(0.99),
                p999_ns: q(0.999),
                max_ns: a.hist.max().unwrap_or(0),
                latency_ns: Some(pb::Histogram {
                    grouping_power: GROUPING_POWER,
                    max_value_power: MAX_VALUE_POWER,
                    indices: sparse.indices,
                    counts: sparse.counts,
                }),
            }
        })
        .collect();
    entries.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.syscall.cmp(&b.syscall))
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
    pb::GetSyscallLatencyResponse {
        entries,
        from_unix_nano: if used > 0 { from } else { 0 },
        to_unix_nano: if used > 0 { to } else { 0 },
        batches: used,
        relative_error: RELATIVE_ERROR,
    }
}

/// Answers `Query.GetSyscallLatency` from the registry's recent history.
pub fn get_syscall_latency(
    registry: &HostRegistry,
    request: &pb::GetSyscallLatencyRequest,
) -> Result<pb::GetSyscallLatencyResponse, QueryError> {
    let id = registry.resolve(&request.host)?;
    let since = if request.since_unix_nano > 0 {
        request.since_unix_nano
    } else {
        unix_nanos(SystemTime::now() - DEFAULT_RANGE)
    };
    let batches = registry.recent_batches(&id, since);
    Ok(summarize(&batches, &request.syscall, &request.cgroup))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat(syscall: &str, cgroup: &str, values: &[u64], errors: u64) -> pb::SyscallLatency {
        let mut d = Dense::default();
        for &v in values {
            d.record(v);
        }
        let s = d.to_sparse();
        pb::SyscallLatency {
            syscall: syscall.into(),
            cgroup: cgroup.into(),
            count: values.len() as u64,
            errors,
            latency_ns: Some(pb::Histogram {
                grouping_power: GROUPING_POWER,
                max_value_power: MAX_VALUE_POWER,
                indices: s.indices,
                counts: s.counts,
            }),
        }
    }

    fn batch(t: i64, syscalls: Vec<pb::SyscallLatency>) -> Arc<pb::Batch> {
        Arc::new(pb::Batch {
            time_unix_nano: t,
            syscalls,
            ..Default::default()
        })
    }

    #[test]
    fn merges_over_batches_with_percentiles_and_error_ratio() {
        let b1 = batch(
            10,
            vec![
                lat("read", "", &[1_000; 50], 5),
                lat("family:io", "a.slice", &[2_000; 10], 0),
            ],
        );
        let b2 = batch(20, vec![lat("read", "", &[100_000; 50], 5)]);
        let r = summarize(&[b1.clone(), b2.clone()], "", "");
        assert_eq!(r.batches, 2);
        assert_eq!((r.from_unix_nano, r.to_unix_nano), (10, 20));
        assert_eq!(r.entries.len(), 1);
        let e = &r.entries[0];
        assert_eq!((e.syscall.as_str(), e.count, e.errors), ("read", 100, 10));
        assert!((e.error_ratio - 0.1).abs() < 1e-9);
        let within = |v: u64, exact: f64| (v as f64 - exact).abs() / exact <= RELATIVE_ERROR;
        assert!(within(e.p50_ns, 1_000.0), "{}", e.p50_ns);
        assert!(within(e.p90_ns, 100_000.0), "{}", e.p90_ns);
        assert!(within(e.max_ns, 100_000.0));
        // Cgroup selectors.
        let c = summarize(&[b1.clone(), b2.clone()], "", "a.slice");
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].count, 10);
        assert_eq!(
            summarize(&[b1.clone(), b2.clone()], "", "*").entries.len(),
            1
        );
        assert_eq!(summarize(&[b1, b2], "write", "").entries.len(), 0);
    }

    #[test]
    fn malformed_histograms_are_skipped() {
        let mut bad = lat("read", "", &[1_000], 0);
        bad.latency_ns.as_mut().unwrap().grouping_power = 7;
        let mut bad2 = lat("write", "", &[1_000], 0);
        bad2.latency_ns.as_mut().unwrap().indices.push(100_000);
        let r = summarize(&[batch(1, vec![bad, bad2])], "", "");
        assert!(r.entries.is_empty());
        assert_eq!(r.batches, 0);
    }
}
