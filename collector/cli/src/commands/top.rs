//! `nodewatch top <HOST> --by rss|fds|cpu|growth`.

use std::time::Duration;

use nodewatch_proto::pb;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::client::CliError;
use crate::render::units::{bytes, percent};
use crate::render::{OutputFormat, Table, print_json};

/// Ranking order of `nodewatch top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TopBy {
    /// Largest resident set first.
    Rss,
    /// Highest open descriptors against the soft RLIMIT_NOFILE first.
    Fds,
    /// Highest CPU share first.
    Cpu,
    /// Fastest RSS growth over the window first.
    Growth,
}

impl From<TopBy> for pb::TopOrder {
    fn from(by: TopBy) -> Self {
        match by {
            TopBy::Rss => pb::TopOrder::Rss,
            TopBy::Fds => pb::TopOrder::Fds,
            TopBy::Cpu => pb::TopOrder::Cpu,
            TopBy::Growth => pb::TopOrder::Growth,
        }
    }
}

/// Arguments of `nodewatch top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// Host id, hostname, or a unique prefix of either.
    pub host: String,
    /// Ranking order.
    #[arg(long, value_enum, default_value_t = TopBy::Rss)]
    pub by: TopBy,
    /// Most processes shown.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Window of the RSS growth, e.g. "10m" (bounded by the collector's in-memory history).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub window: Duration,
}

fn signed_bytes(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "+" };
    format!("{sign}{}", bytes(v.abs() as u64))
}

fn limit_text(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

/// JSON view of one ranked process (stable field names for scripts).
pub fn process_json(t: &pb::TopProcess) -> Value {
    let p = t.process.clone().unwrap_or_default();
    json!({
        "pid": p.pid,
        "start_time_ticks": p.start_time_ticks,
        "name": p.name,
        "cmdline": p.cmdline,
        "cgroup": p.cgroup,
        "uid": p.uid,
        "rss_bytes": p.rss_bytes,
        "pss_bytes": p.pss_bytes,
        "rss_growth_bytes_per_hour": t.rss_growth_bytes_per_hour,
        "growth_span_seconds": t.growth_span_seconds,
        "cpu_ratio": p.cpu_ratio,
        "threads": p.threads,
        "open_fds": p.open_fds,
        "fd_limit_soft": p.fd_limit_soft,
        "fd_limit_hard": p.fd_limit_hard,
        "fd_ratio": t.fd_ratio,
        "cgroup_memory_max": p.cgroup_memory_max,
        "sockets": p.sockets.iter().map(|s| json!({"state": s.state, "count": s.count})).collect::<Vec<_>>(),
    })
}

/// Renders the table of `nodewatch top`.
pub fn render(r: &pb::TopProcessesResponse) -> String {
    let mut t = Table::new([
        "PID",
        "NAME",
        "RSS",
        "GROWTH/H",
        "CPU",
        "FDS",
        "FD LIMIT",
        "FD USE",
        "THREADS",
        "MEM LIMIT",
        "COMMAND",
    ]);
    for tp in &r.processes {
        let p = tp.process.clone().unwrap_or_default();
        let command: String = p.cmdline.chars().take(60).collect();
        t.row([
            p.pid.to_string(),
            p.name.clone(),
            bytes(p.rss_bytes),
            if tp.growth_span_seconds > 0.0 {
                signed_bytes(tp.rss_growth_bytes_per_hour)
            } else {
                "-".to_string()
            },
            percent(p.cpu_ratio),
            p.open_fds.to_string(),
            limit_text(p.fd_limit_soft),
            percent(tp.fd_ratio),
            p.threads.to_string(),
            p.cgroup_memory_max.map_or_else(|| "-".to_string(), bytes),
            command,
        ]);
    }
    t.render()
}

/// `nodewatch top`.
pub async fn run(channel: Channel, args: &TopArgs, output: OutputFormat) -> Result<(), CliError> {
    let response = crate::client::query_client(channel)
        .top_processes(pb::TopProcessesRequest {
            host: args.host.clone(),
            by: pb::TopOrder::from(args.by) as i32,
            limit: args.limit,
            window_seconds: u32::try_from(args.window.as_secs()).unwrap_or(u32::MAX),
        })
        .await?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&json!({
            "time_unix_nano": response.time_unix_nano,
            "total": response.total,
            "processes": response.processes.iter().map(process_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            if response.time_unix_nano == 0 {
                eprintln!(
                    "no per-process data from this host yet (is the processes sampler enabled?)"
                );
                return Ok(());
            }
            print!("{}", render(&response));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_ranked_process() {
        let r = pb::TopProcessesResponse {
            processes: vec![pb::TopProcess {
                process: Some(pb::ProcessStats {
                    pid: 42,
                    name: "leaky".into(),
                    cmdline: "leaky --fast".into(),
                    rss_bytes: 3 << 20,
                    open_fds: 200,
                    fd_limit_soft: 256,
                    threads: 2,
                    ..Default::default()
                }),
                fd_ratio: 200.0 / 256.0,
                rss_growth_bytes_per_hour: -1_048_576.0,
                growth_span_seconds: 60.0,
            }],
            time_unix_nano: 1,
            total: 1,
        };
        let text = render(&r);
        let line = text.lines().nth(1).unwrap();
        assert!(line.contains("leaky"), "{text}");
        assert!(
            line.contains("3.0 MiB") && line.contains("-1.0 MiB"),
            "{text}"
        );
        assert!(line.contains("78.1%") && line.contains("256"), "{text}");
        let j = process_json(&r.processes[0]);
        assert_eq!(j["open_fds"], 200);
        assert_eq!(j["fd_limit_soft"], 256);
    }
}
