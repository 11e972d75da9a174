//! `nodewatch latency <HOST> [--syscall NAME] [--cgroup PATH] [--since 10m]`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use nodewatch_proto::hist::{bucket_lower, bucket_upper};
use nodewatch_proto::pb;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{CliError, OutputFormat, Table, percent, print_json};

/// Arguments of `nodewatch latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Host id, hostname, or a unique prefix of either.
    pub host: String,
    /// Only this syscall (e.g. "read") or family (e.g. "family:io").
    #[arg(long)]
    pub syscall: Option<String>,
    /// Per-family latency of this cgroup (path relative to the cgroup2 root,
    /// e.g. "system.slice/nginx.service", or "other"); "*" for every cgroup.
    /// Without it: host-wide, per syscall.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// How far back to look, e.g. "10m", "1h".
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Rows shown in the table (busiest first).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// Human-readable nanoseconds, e.g. "850ns", "12.3µs", "5.24ms", "1.20s".
pub fn ns(v: u64) -> String {
    let f = v as f64;
    if v < 1_000 {
        format!("{v}ns")
    } else if v < 1_000_000 {
        format!("{:.1}µs", f / 1e3)
    } else if v < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.2}s", f / 1e9)
    }
}

fn entry_json(e: &pb::SyscallLatencySummary) -> Value {
    let h = e.latency_ns.clone().unwrap_or_default();
    json!({
        "syscall": e.syscall,
        "cgroup": e.cgroup,
        "count": e.count,
        "errors": e.errors,
        "error_ratio": e.error_ratio,
        "p50_ns": e.p50_ns,
        "p90_ns": e.p90_ns,
        "p99_ns": e.p99_ns,
        "p999_ns": e.p999_ns,
        "max_ns": e.max_ns,
        "histogram": {
            "grouping_power": h.grouping_power,
            "max_value_power": h.max_value_power,
            "buckets": h.indices.iter().zip(&h.counts).map(|(&i, &c)| json!({
                "lower_ns": bucket_lower(i as usize),
                "upper_ns": bucket_upper(i as usize),
                "count": c,
            })).collect::<Vec<_>>(),
        },
    })
}

/// Draws a histogram: one line per power-of-two range (buckets of a range
/// summed), bar lengths proportional to the count.
pub fn draw(h: &pb::Histogram, width: usize) -> String {
    // Group buckets by power of two of their lower bound.
    let mut rows: Vec<(u64, u64, u64)> = Vec::new();
    for (&i, &c) in h.indices.iter().zip(&h.counts) {
        let lo = bucket_lower(i as usize);
        let hi = bucket_upper(i as usize);
        let group_lo = if lo == 0 {
            0
        } else {
            1u64 << (63 - lo.leading_zeros())
        };
        match rows.last_mut() {
            Some(r) if r.0 == group_lo => {
                r.1 = r.1.max(hi);
                r.2 += c;
            }
            _ => rows.push((group_lo, hi, c)),
        }
    }
    let max = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1);
    let mut out = String::new();
    for (lo, hi, c) in rows {
        let len = ((c as f64 / max as f64) * width as f64).ceil() as usize;
        let _ = writeln!(
            out,
            "  {:>9} .. {:<9} {:>10} |{}",
            ns(lo),
            ns(hi),
            c,
            "█".repeat(len.min(width))
        );
    }
    out
}

/// `nodewatch latency`.
pub async fn run(
    channel: Channel,
    args: &LatencyArgs,
    output: OutputFormat,
) -> Result<(), CliError> {
    let since = SystemTime::now()
        .checked_sub(args.since)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let since_unix_nano = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
        .max(1);
    let resp = super::query_client(channel)
        .get_syscall_latency(pb::GetSyscallLatencyRequest {
            host: args.host.clone(),
            syscall: args.syscall.clone().unwrap_or_default(),
            cgroup: args.cgroup.clone().unwrap_or_default(),
            since_unix_nano,
        })
        .await?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&json!({
            "from_unix_nano": resp.from_unix_nano,
            "to_unix_nano": resp.to_unix_nano,
            "batches": resp.batches,
            "relative_error": resp.relative_error,
            "entries": resp.entries.iter().map(entry_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            if resp.entries.is_empty() {
                eprintln!(
                    "no syscall latency for this selection in the last {} (is eBPF active on the host? see `nodewatch host {}`)",
                    humantime::format_duration(args.since),
                    args.host
                );
                return Ok(());
            }
            let mut table = Table::new([
                "SYSCALL", "CGROUP", "COUNT", "ERRORS", "P50", "P90", "P99", "P99.9", "MAX",
            ]);
            for e in resp.entries.iter().take(args.limit) {
                table.row([
                    e.syscall.clone(),
                    if e.cgroup.is_empty() {
                        "(host)".to_string()
                    } else {
                        e.cgroup.clone()
                    },
                    e.count.to_string(),
                    format!("{} ({})", e.errors, percent(e.error_ratio)),
                    ns(e.p50_ns),
                    ns(e.p90_ns),
                    ns(e.p99_ns),
                    ns(e.p999_ns),
                    ns(e.max_ns),
                ]);
            }
            print!("{}", table.render());
            println!(
                "{} batches; percentiles are bucket upper bounds, within {:.1}% of the true value",
                resp.batches,
                resp.relative_error * 100.0
            );
            if let Some(top) = resp.entries.first()
                && let Some(h) = &top.latency_ns
            {
                println!();
                println!(
                    "{} {} latency:",
                    top.syscall,
                    if top.cgroup.is_empty() {
                        "(host)"
                    } else {
                        top.cgroup.as_str()
                    }
                );
                print!("{}", draw(h, 50));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewatch_proto::hist::Dense;

    #[test]
    fn formats_durations() {
        assert_eq!(ns(850), "850ns");
        assert_eq!(ns(12_300), "12.3µs");
        assert_eq!(ns(5_240_000), "5.24ms");
        assert_eq!(ns(1_200_000_000), "1.20s");
    }

    #[test]
    fn draws_one_line_per_power_of_two() {
        let mut d = Dense::default();
        for _ in 0..100 {
            d.record(5_000_000);
        }
        for _ in 0..10 {
            d.record(1_000);
        }
        let s = d.to_sparse();
        let h = pb::Histogram {
            grouping_power: 3,
            max_value_power: 36,
            indices: s.indices,
            counts: s.counts,
        };
        let text = draw(&h, 20);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[1].ends_with(&"█".repeat(20)), "{text}");
        assert!(lines[0].ends_with(&"█".repeat(2)), "{text}");
    }
}
