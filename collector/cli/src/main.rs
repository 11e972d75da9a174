//! `nodewatch`: query a nodewatch collector from the terminal or from scripts.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
mod client;
mod commands;
mod render;

use commands::{alerts, latency, series, top};
use render::OutputFormat;

/// Query a nodewatch collector: hosts, their latest figures and history.
///
/// Every read command prints a table for people, or JSON for scripts with
/// `--output json`. Exit status: 0 on success, 1 on any error (message on stderr).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Collector address (host:port or http://host:port).
    #[arg(long, global = true, env = "NODEWATCH_COLLECTOR", default_value = nodewatch_proto::DEFAULT_COLLECTOR_ADDR)]
    collector: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every host with its headline figures.
    Hosts {
        /// Keep the list on screen, updated live (JSON: one array per line).
        #[arg(long, short = 'w')]
        watch: bool,
        /// Time between updates with --watch, e.g. "2s".
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Stop after this many updates with --watch (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show one host: identity, agent state, latest CPU and memory.
    Host {
        /// Host id, hostname, or a unique prefix of either.
        host: String,
    },
    /// Syscall latency of a host (eBPF): count, error rate, percentiles and a histogram.
    Latency(latency::LatencyArgs),
    /// Rank one host's processes by RSS, open fds against their limit, CPU, or RSS growth.
    Top(top::TopArgs),
    /// Show one host's filesystems and block devices.
    Disks {
        /// Host id, hostname, or a unique prefix of either.
        host: String,
    },
    /// Show one host's sockets, listeners and accept queues, ephemeral ports, CLOSE_WAIT / TIME_WAIT owners.
    Conns {
        /// Host id, hostname, or a unique prefix of either.
        host: String,
    },
    /// History of one metric of a host as a table with a chart (no METRIC: list metrics).
    Series(series::SeriesArgs),
    /// Alerts: pending and firing (--all: resolved too), --watch for every
    /// transition, `alerts show <ID>` for one alert's timeline and evidence.
    Alerts(alerts::AlertsArgs),
}

async fn run(args: Args) -> Result<(), client::CliError> {
    let channel = client::connect(&args.collector).await?;
    match args.command {
        Command::Hosts {
            watch: true,
            interval,
            count,
        } => commands::hosts::watch(channel, args.output, interval, count).await,
        Command::Hosts { .. } => commands::hosts::list(channel, args.output).await,
        Command::Host { host } => commands::hosts::show(channel, &host, args.output).await,
        Command::Latency(a) => latency::run(channel, &a, args.output).await,
        Command::Top(top) => top::run(channel, &top, args.output).await,
        Command::Disks { host } => commands::disks::run(channel, &host, args.output).await,
        Command::Conns { host } => commands::conns::run(channel, &host, args.output).await,
        Command::Series(series) => series::run(channel, &series, args.output).await,
        Command::Alerts(a) => alerts::run(channel, &a, args.output).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
