//! `nodewatch-agent`: samples this host and streams to a nodewatch collector.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use nodewatch_agent::client::{Backoff, Client};
use nodewatch_agent::config::{AgentConfig, collector_uri, parse_label};
use nodewatch_agent::ebpf::{EbpfError, SyscallTracer};
use nodewatch_agent::identity;
use nodewatch_agent::outbox::Outbox;
use nodewatch_agent::outbox::memory::MemoryOutbox;
use nodewatch_agent::samplers::registry::SamplerRegistry;
use nodewatch_proto::time::now_nanos;
use nodewatch_proto::{daemon, pb};
use tokio::sync::watch;
use tracing::{info, warn};

/// nodewatch agent: samples CPU, memory, disks, connections, processes and
/// syscall latency (eBPF) on this host and streams them to a collector.
///
/// Settings come from, in order of precedence: flags, NODEWATCH_* environment
/// variables, the TOML config file, built-in defaults. While the collector is
/// unreachable the agent keeps sampling and keeps batches (bounded) until it
/// reconnects.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// TOML configuration file (see docs/agent.example.toml).
    #[arg(long, short = 'c', env = "NODEWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Collector address [default: http://127.0.0.1:7077].
    #[arg(long, env = "NODEWATCH_COLLECTOR")]
    collector: Option<String>,
    /// Sampling interval, e.g. "1s", "500ms" [default: 1s].
    #[arg(long, env = "NODEWATCH_INTERVAL", value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Host id to report instead of /etc/machine-id.
    #[arg(long, env = "NODEWATCH_HOST_ID")]
    host_id: Option<String>,
    /// Label for this host, key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Do not load eBPF programs.
    #[arg(long, env = "NODEWATCH_NO_EBPF")]
    no_ebpf: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "nodewatch_agent=debug".
    #[arg(long, env = "NODEWATCH_LOG", default_value = "info")]
    log: String,
}

fn load(args: &Args) -> anyhow::Result<AgentConfig> {
    let mut config = match &args.config {
        Some(path) => AgentConfig::from_file(path)?,
        None => AgentConfig::default(),
    };
    if let Some(c) = &args.collector {
        config.collector = collector_uri(c);
    }
    if let Some(i) = args.interval {
        config.interval = i;
    }
    if let Some(id) = &args.host_id {
        config.host_id = Some(id.clone());
    }
    config.labels.extend(args.labels.iter().cloned());
    if args.no_ebpf {
        config.ebpf.enabled = false;
    }
    config.check()?;
    Ok(config)
}

fn main() -> std::process::ExitCode {
    daemon::exit_with(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon::init_logging(&args.log)?;
    let config = load(&args)?;
    let identity = identity::read(config.host_id.as_deref())?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        host_id = %identity.host_id,
        hostname = %identity.hostname,
        collector = %config.collector,
        interval = ?config.interval,
        "nodewatch-agent starting"
    );

    let registry = SamplerRegistry::new(&config.samplers);
    let (tracer, ebpf_status) = match SyscallTracer::start(&config.ebpf) {
        Ok(tracer) => {
            info!("ebpf: active (syscall latency tracing attached)");
            (
                Some(tracer),
                pb::FeatureStatus {
                    name: "ebpf".into(),
                    state: pb::FeatureState::Active as i32,
                    reason: String::new(),
                },
            )
        }
        Err(e) => {
            let state = if matches!(e, EbpfError::Disabled) {
                pb::FeatureState::Disabled
            } else {
                pb::FeatureState::Unavailable
            };
            warn!("ebpf: unavailable ({e}); all /proc samplers keep running");
            (
                None,
                pb::FeatureStatus {
                    name: "ebpf".into(),
                    state: state as i32,
                    reason: e.to_string(),
                },
            )
        }
    };
    let capabilities = Arc::new(Mutex::new(pb::Capabilities {
        ebpf: Some(ebpf_status),
        samplers: registry.statuses(),
        interval_ms: u32::try_from(config.interval.as_millis()).unwrap_or(u32::MAX),
    }));

    let outbox: Arc<dyn Outbox> = Arc::new(MemoryOutbox::new(config.outbox_bytes));
    let (stop_tx, stop_rx) = watch::channel(false);

    let sampling = {
        let outbox = outbox.clone();
        let interval = config.interval;
        let stop = stop_rx.clone();
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || sample_loop(registry, tracer, &*outbox, interval, &stop))
            .context("cannot start the sampling thread")?
    };

    let run_id = fastrand::u64(1..);
    let hello = {
        let capabilities = capabilities.clone();
        let labels = config.labels.clone();
        move || pb::Hello {
            host: Some(identity.clone()),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            labels: labels.clone().into_iter().collect(),
            capabilities: Some(
                capabilities
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
            run_id,
            ..Default::default()
        }
    };
    let client = Client {
        uri: config.collector.clone(),
        backoff: Backoff {
            min: config.reconnect_min,
            max: config.reconnect_max,
        },
        hello: Box::new(hello),
        outbox: outbox.clone(),
    };
    let client_task = tokio::spawn(client.run(stop_rx));

    daemon::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = client_task.await;
    let _ = tokio::task::spawn_blocking(move || sampling.join()).await;
    let stats = outbox.stats();
    info!(
        unacknowledged = stats.batches,
        dropped = stats.dropped,
        "nodewatch-agent stopped"
    );
    Ok(())
}

/// Samples every `interval` until `stop`, pushing one batch per cycle.
fn sample_loop(
    mut registry: SamplerRegistry,
    mut tracer: Option<SyscallTracer>,
    outbox: &dyn Outbox,
    interval: Duration,
    stop: &watch::Receiver<bool>,
) {
    let mut seq: u64 = 0;
    let mut next = Instant::now();
    let mut dropped_total = 0u64;
    while !*stop.borrow() {
        let now = Instant::now();
        let mut batch = pb::Batch {
            time_unix_nano: now_nanos(),
            ..Default::default()
        };
        registry.sample(&mut batch, now);
        if let Some(tracer) = tracer.as_mut() {
            let (syscalls, stats) = tracer.collect();
            batch.syscalls = syscalls;
            batch.ebpf = Some(stats);
        }
        seq += 1;
        batch.seq = seq;
        let dropped = outbox.push(batch);
        if dropped > 0 {
            if dropped_total == 0 {
                warn!(
                    "outbox full: dropping the oldest unacknowledged batches (raise outbox_bytes or reconnect the collector)"
                );
            }
            dropped_total += dropped;
        }
        next += interval;
        let now = Instant::now();
        if next <= now {
            // Fell behind (suspend, overload): skip missed cycles, keep the phase.
            while next <= now {
                next += interval;
            }
        }
        // Sleep in short steps so that a stop request is seen quickly.
        while !*stop.borrow() {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}
