//! `nodewatch-agent`: samples this host and streams to a nodewatch collector.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use nodewatch_agent::client::{Backoff, Client};
use nodewatch_agent::config::{AgentConfig, check_identity, collector_uri, parse_label};
use nodewatch_agent::ebpf::{EbpfError, SyscallTracer};
use nodewatch_agent::identity;
use nodewatch_agent::outbox::Outbox;
use nodewatch_agent::outbox::memory::MemoryOutbox;
use nodewatch_agent::outbox::spool::{SpoolConfig, SpoolOutbox};
use nodewatch_agent::samplers::registry::SamplerRegistry;
use nodewatch_agent::wire::split_for_wire;
use nodewatch_proto::time::now_nanos;
use nodewatch_proto::{daemon, pb};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// nodewatch agent: samples CPU, memory, disks, connections, processes and
/// syscall latency (eBPF) on this host and streams them to a collector.
///
/// Settings come from, in order of precedence: flags, NODEWATCH_* environment
/// variables, the TOML config file, built-in defaults. While the collector is
/// unreachable the agent keeps sampling and keeps batches in its disk spool
/// (bounded by spool_max_bytes; kept across agent restarts) until it
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
    /// Spool directory: unacknowledged batches, the run id and seqs survive
    /// collector outages and agent restarts [default: /var/lib/nodewatch-agent/spool].
    #[arg(long, env = "NODEWATCH_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Most bytes of spool files; the oldest are dropped beyond it [default: 4 GiB].
    #[arg(long, env = "NODEWATCH_SPOOL_MAX_BYTES")]
    spool_max_bytes: Option<u64>,
    /// Keep unacknowledged batches in memory only (lost when the agent stops).
    #[arg(long, env = "NODEWATCH_NO_SPOOL", conflicts_with = "spool_dir")]
    no_spool: bool,
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
    if let Some(dir) = &args.spool_dir {
        config.spool_dir = dir.clone();
    }
    if args.no_spool {
        config.spool_dir = PathBuf::new();
    }
    if let Some(max) = args.spool_max_bytes {
        config.spool_max_bytes = max;
    }
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
    check_identity(&identity)?;
    // The spool first: an unusable spool directory is a start-up error.
    let (outbox, run_id, first_seq): (Arc<dyn Outbox>, u64, u64) = match config.spool_dir() {
        Some(dir) => {
            let spool = SpoolConfig::new(dir.to_path_buf(), config.spool_max_bytes);
            let (outbox, start) = SpoolOutbox::open(spool, &identity.host_id)?;
            (Arc::new(outbox), start.run_id, start.next_seq)
        }
        None => {
            info!(
                "spool: off; unacknowledged batches are kept in memory ({} bytes at most) and lost when the agent stops",
                config.outbox_bytes
            );
            (
                Arc::new(MemoryOutbox::new(config.outbox_bytes)),
                fastrand::u64(1..),
                1,
            )
        }
    };
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

    let (stop_tx, stop_rx) = watch::channel(false);

    // Dropped when the sampling thread ends, on return or while unwinding a panic.
    let (sampler_gone_tx, sampler_gone) = tokio::sync::oneshot::channel::<()>();
    let sampling = {
        let outbox = outbox.clone();
        let interval = config.interval;
        let stop = stop_rx.clone();
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let _gone = sampler_gone_tx;
                sample_loop(registry, tracer, &*outbox, interval, first_seq, &stop)
            })
            .context("cannot start the sampling thread")?
    };

    let hello = {
        let capabilities = capabilities.clone();
        let labels = config.labels.clone();
        let outbox = outbox.clone();
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
            // Everything up to the outbox's `acked` is done with (acknowledged,
            // or dropped as the oldest when the spool was full): the collector
            // need not wait for those seqs.
            first_seq: outbox.stats().acked + 1,
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
    let mut client_task = tokio::spawn(client.run(stop_rx));

    // Supervision: an agent whose sampling thread or client died must not
    // stay up sending nothing. It exits non-zero and its supervisor restarts
    // it; with the spool, nothing pushed is lost.
    let mut failure = None;
    tokio::select! {
        () = daemon::shutdown_signal() => {}
        _ = sampler_gone => failure = Some("the sampling thread stopped"),
        _ = &mut client_task => failure = Some("the client task stopped"),
    }
    let _ = stop_tx.send(true);
    if !client_task.is_finished() {
        let _ = client_task.await;
    }
    let sampled = tokio::task::spawn_blocking(move || sampling.join())
        .await
        .context("cannot join the sampling thread")?;
    // Everything pushed is on disk (fsynced) before the agent exits.
    if let Err(e) = outbox.sync() {
        error!("{}", daemon::error_chain(&e));
    }
    let stats = outbox.stats();
    if let Some(what) = failure {
        let why = match &sampled {
            Err(panic) => format!("panicked: {}", panic_message(&**panic)),
            Ok(_) => "ended".to_string(),
        };
        error!(
            unacknowledged = stats.batches,
            "{what} ({why}); exiting so that the supervisor restarts the agent"
        );
        anyhow::bail!("{what} ({why})");
    }
    info!(
        unacknowledged = stats.batches,
        dropped = stats.dropped,
        last_seq = sampled.unwrap_or(0),
        "nodewatch-agent stopped"
    );
    Ok(())
}

/// The message of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Samples every `interval` until `stop`, pushing one batch per cycle, the
/// first with seq `first_seq`; returns the last seq pushed.
fn sample_loop(
    mut registry: SamplerRegistry,
    mut tracer: Option<SyscallTracer>,
    outbox: &dyn Outbox,
    interval: Duration,
    first_seq: u64,
    stop: &watch::Receiver<bool>,
) -> u64 {
    let mut seq: u64 = first_seq.saturating_sub(1);
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
        let stats = outbox.stats();
        batch.agent = Some(pb::AgentStats {
            spool_bytes: stats.bytes as u64,
            spool_batches: stats.batches as u64,
            dropped_batches: stats.dropped,
        });
        // Never more than the collector accepts in one message: a host with
        // a huge process table sends its processes in extra batches.
        for mut part in split_for_wire(batch, nodewatch_proto::MAX_MESSAGE_BYTES) {
            // Seqs only grow, also past what the collector says it holds (a
            // spool that lost its newest records in a power loss): a reused
            // seq would be taken for a duplicate.
            seq = (seq + 1).max(stats.acked + 1);
            part.seq = seq;
            let dropped = outbox.push(part);
            if dropped > 0 {
                if dropped_total == 0 {
                    warn!(
                        "outbox full: dropping the oldest unacknowledged batches (raise spool_max_bytes, or outbox_bytes without a spool, or reconnect the collector)"
                    );
                }
                dropped_total += dropped;
            }
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
    seq
}
