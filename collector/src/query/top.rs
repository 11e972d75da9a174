//! `Query.TopProcesses`: ranks one host's processes from the collector's recent
//! in-memory history (the newest per-process pass, and for growth the oldest
//! sample of the same process — same pid and start time — in the window).

use std::collections::HashMap;
use std::sync::Arc;

use nodewatch_proto::pb;

use super::QueryError;
use crate::hosts::HostRegistry;

/// Default number of processes returned.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest number of processes returned.
pub const MAX_LIMIT: usize = 1000;
/// Default growth window, seconds.
pub const DEFAULT_WINDOW_SECONDS: u32 = 600;

fn fd_ratio(p: &pb::ProcessStats) -> f64 {
    if p.fd_limit_soft == 0 || p.fd_limit_soft == u64::MAX {
        0.0
    } else {
        f64::from(p.open_fds) / p.fd_limit_soft as f64
    }
}

/// Ranks the processes of `batches` (oldest first).
pub fn rank(
    batches: &[Arc<pb::Batch>],
    by: pb::TopOrder,
    limit: usize,
) -> pb::TopProcessesResponse {
    let Some(latest) = batches.iter().rev().find(|b| !b.processes.is_empty()) else {
        return pb::TopProcessesResponse::default();
    };
    // Oldest sighting of each (pid, start time) in the window.
    let mut first: HashMap<(u32, u64), (i64, u64)> = HashMap::new();
    for b in batches {
        if b.time_unix_nano >= latest.time_unix_nano {
            break;
        }
        for p in &b.processes {
            first
                .entry((p.pid, p.start_time_ticks))
                .or_insert((b.time_unix_nano, p.rss_bytes));
        }
    }
    let mut ranked: Vec<pb::TopProcess> = latest
        .processes
        .iter()
        .map(|p| {
            let (growth, span) = match first.get(&(p.pid, p.start_time_ticks)) {
                Some(&(t, rss)) if latest.time_unix_nano > t => {
                    let secs = (latest.time_unix_nano - t) as f64 / 1e9;
                    ((p.rss_bytes as f64 - rss as f64) / secs * 3600.0, secs)
                }
                _ => (0.0, 0.0),
            };
            pb::TopProcess {
                process: Some(p.clone()),
                fd_ratio: fd_ratio(p),
                rss_growth_bytes_per_hour: growth,
                growth_span_seconds: span,
            }
        })
        .collect();
    let key = |t: &pb::TopProcess| -> f64 {
        let p = t
            .process
            .as_ref()
            .map_or_else(pb::ProcessStats::default, Clone::clone);
        match by {
            pb::TopOrder::Unspecified | pb::TopOrder::Rss => p.rss_bytes as f64,
            pb::TopOrder::Fds => t.fd_ratio,
            pb::TopOrder::Cpu => p.cpu_ratio,
            pb::TopOrder::Growth => t.rss_growth_bytes_per_hour,
        }
    };
    ranked.sort_by(|a, b| {
        key(b).total_cmp(&key(a)).then_with(|| {
            a.process
                .as_ref()
                .map(|p| p.pid)
                .cmp(&b.process.as_ref().map(|p| p.pid))
        })
    });
    let total = ranked.len() as u32;
    ranked.truncate(limit);
    pb::TopProcessesResponse {
        processes: ranked,
        time_unix_nano: latest.time_unix_nano,
        total,
    }
}

/// Serves one request against `registry`.
pub fn top_processes(
    registry: &HostRegistry,
    request: &pb::TopProcessesRequest,
) -> Result<pb::TopProcessesResponse, QueryError> {
    let id = registry.resolve(&request.host)?;
    let by = pb::TopOrder::try_from(request.by)
        .map_err(|_| QueryError::invalid(format!("unknown order {}", request.by)))?;
    let limit = match request.limit as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let window = match request.window_seconds {
        0 => DEFAULT_WINDOW_SECONDS,
        w => w,
    };
    // The window ends at the newest batch, not at the collector's clock: agent
    // and collector clocks may differ.
    let all = registry.recent_batches(&id, i64::MIN);
    let newest = all.last().map_or(0, |b| b.time_unix_nano);
    let since = newest.saturating_sub(i64::from(window) * 1_000_000_000);
    let start = all.partition_point(|b| b.time_unix_nano < since);
    Ok(rank(&all[start..], by, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, start: u64, rss: u64, fds: u32, soft: u64, cpu: f64) -> pb::ProcessStats {
        pb::ProcessStats {
            pid,
            start_time_ticks: start,
            rss_bytes: rss,
            open_fds: fds,
            fd_limit_soft: soft,
            cpu_ratio: cpu,
            ..Default::default()
        }
    }

    fn batch(t_secs: i64, processes: Vec<pb::ProcessStats>) -> Arc<pb::Batch> {
        Arc::new(pb::Batch {
            time_unix_nano: t_secs * 1_000_000_000,
            processes,
            ..Default::default()
        })
    }

    #[test]
    fn ranks_by_each_order() {
        let batches = vec![
            batch(
                0,
                vec![
                    proc(1, 10, 100 << 20, 10, 1024, 0.1),
                    proc(2, 20, 50 << 20, 900, 1024, 0.0),
                ],
            ),
            // A batch without a process pass is skipped.
            batch(1800, vec![]),
            batch(
                3600,
                vec![
                    proc(1, 10, 110 << 20, 10, 1024, 0.1),
                    proc(2, 20, 80 << 20, 900, 1024, 0.9),
                ],
            ),
            batch(3601, vec![]),
        ];
        let pids = |r: &pb::TopProcessesResponse| -> Vec<u32> {
            r.processes
                .iter()
                .map(|t| t.process.as_ref().unwrap().pid)
                .collect()
        };
        assert_eq!(pids(&rank(&batches, pb::TopOrder::Rss, 10)), vec![1, 2]);
        assert_eq!(pids(&rank(&batches, pb::TopOrder::Fds, 10)), vec![2, 1]);
        assert_eq!(pids(&rank(&batches, pb::TopOrder::Cpu, 10)), vec![2, 1]);
        let growth = rank(&batches, pb::TopOrder::Growth, 1);
        assert_eq!(pids(&growth), vec![2]);
        assert_eq!(growth.total, 2);
        assert_eq!(growth.time_unix_nano, 3600 * 1_000_000_000);
        let g = &growth.processes[0];
        assert_eq!(g.rss_growth_bytes_per_hour, (30u64 << 20) as f64);
        assert_eq!(g.growth_span_seconds, 3600.0);
        assert!((g.fd_ratio - 900.0 / 1024.0).abs() < 1e-12);
    }

    #[test]
    fn pid_reuse_is_a_new_process() {
        let batches = vec![
            batch(0, vec![proc(7, 1, 10 << 20, 3, 1024, 0.0)]),
            batch(60, vec![proc(7, 2, 500 << 20, 3, 1024, 0.0)]),
        ];
        let r = rank(&batches, pb::TopOrder::Growth, 10);
        assert_eq!(
            r.processes[0].rss_growth_bytes_per_hour, 0.0,
            "different start time"
        );
        assert_eq!(r.processes[0].growth_span_seconds, 0.0);
    }

    #[test]
    fn empty_history() {
        let r = rank(&[], pb::TopOrder::Rss, 10);
        assert!(r.processes.is_empty());
        assert_eq!(r.time_unix_nano, 0);
    }
}
