//! `nodewatch latency <HOST> [--syscall NAME] [--cgroup PATH] [--since 10m]`.

use std::time::{Duration, SystemTime};

use nodewatch_proto::hist::{bucket_lower, bucket_upper};
use nodewatch_proto::pb;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::client::CliError;
use crate::render::histogram::draw;
use crate::render::units::{duration_ns, percent};
use crate::render::{OutputFormat, Table, print_json};

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
    let resp = crate::client::query_client(channel)
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
                    duration_ns(e.p50_ns as f64),
                    duration_ns(e.p90_ns as f64),
                    duration_ns(e.p99_ns as f64),
                    duration_ns(e.p999_ns as f64),
                    duration_ns(e.max_ns as f64),
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
