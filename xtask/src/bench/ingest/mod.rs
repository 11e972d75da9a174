//! `cargo xtask bench ingest`: collector ingest against Prometheus remote-write,
//! side by side in one run.
//!
//! Simulated agents (realistic host data: counters, noisy gauges, idle series,
//! per-process series, syscall histograms) send the same samples, round after
//! round (A B C D A B C D ...), to
//! - A: the release collector with a durable store (fsync per commit group),
//!   detectors on (the default),
//! - B: Debian's `prometheus` with its remote-write receiver (snappy protobuf),
//! - C: the release collector with the WAL on tmpfs and fsync off (in-memory path),
//! - D: as A with the detectors off, for their cost.
//!
//! Reported: CPU per sample of each target (utime+stime from /proc), bytes on
//! disk per sample, freshness (agent sample -> queryable) p50/p99, and the
//! latency of querying one hour of one host.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use nodewatch_collector::metrics::{SampleSink, map_batch, parse_key};
use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{cargo, workspace_root};

const SEC: i64 = 1_000_000_000;

/// Options of `cargo xtask bench ingest`.
#[derive(Debug, clap::Parser)]
#[command(name = "bench ingest")]
pub struct IngestArgs {
    /// Simulated agents (hosts).
    #[arg(long, default_value_t = 12)]
    agents: u32,
    /// Simulated minutes of 1 s batches per agent (split over the rounds).
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    /// Rounds (each target gets one slice of the data per round, in turn).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Processes per simulated host.
    #[arg(long, default_value_t = 60)]
    processes: u32,
    /// Seconds of the real-time freshness phase.
    #[arg(long, default_value_t = 15)]
    freshness_secs: u64,
}

mod hosts;
mod load;
mod remote_write;
mod targets;

use hosts::*;
use load::*;
use remote_write::*;
use targets::*;

fn median_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (
        med,
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                // Allocated size: what the file really takes on disk.
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Entry point.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    use clap::Parser as _;
    if cfg!(debug_assertions) {
        // The load generator shares the machine with the targets: run it optimised.
        let mut a = vec![
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask",
            "--",
            "bench",
            "ingest",
        ];
        a.extend(args.iter().map(String::as_str));
        return cargo(&a);
    }
    let args = IngestArgs::try_parse_from(
        std::iter::once("bench ingest".to_string()).chain(args.iter().cloned()),
    )?;
    eprintln!("building the release collector ...");
    cargo(&[
        "build",
        "--release",
        "-p",
        "nodewatch-collector",
        "--bin",
        "nodewatch-collector",
    ])?;
    let prom = ensure_prometheus()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(args, prom))
}

async fn bench(args: IngestArgs, prom_bin: PathBuf) -> anyhow::Result<()> {
    let tick_ns = 1e9 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let disk = tempfile_dir(std::env::temp_dir(), "nodewatch-bench-ingest")?;
    let shm = tempfile_dir(PathBuf::from("/dev/shm"), "nodewatch-bench-ingest")?;
    let mut durable = start_collector("collector durable", disk.join("durable"), true, true)?;
    let mut memory = start_collector("collector in-memory", shm.join("memory"), false, true)?;
    let mut quiet = start_collector(
        "collector durable, detectors off",
        disk.join("quiet"),
        true,
        false,
    )?;
    let mut prom = start_prometheus(&prom_bin, disk.join("prometheus"))?;

    let total_batches = u64::from(args.minutes) * 60;
    let per_round = total_batches / u64::from(args.rounds.max(1));
    let t0 = now_nanos() - (total_batches as i64 + 120) * SEC;
    let sims = |_: ()| -> Vec<HostSim> {
        (0..args.agents)
            .map(|a| HostSim::new(u64::from(a) + 1, args.processes))
            .collect()
    };
    let (mut sim_d, mut sim_m, mut sim_p, mut sim_q) = (sims(()), sims(()), sims(()), sims(()));
    let mut streams_d = Vec::new();
    let mut streams_m = Vec::new();
    let mut streams_q = Vec::new();
    for a in 0..args.agents {
        streams_d.push(open_agent(durable.addr, a).await?);
        streams_m.push(open_agent(memory.addr, a).await?);
        streams_q.push(open_agent(quiet.addr, a).await?);
    }
    let totals_d = Arc::new(Totals {
        scalars: AtomicU64::new(0),
        histograms: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let totals_m = Arc::new(Totals {
        scalars: AtomicU64::new(0),
        histograms: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let totals_q = Arc::new(Totals {
        scalars: AtomicU64::new(0),
        histograms: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let mut detect_ratios = Vec::new();
    let mut per_sample: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut ratios = Vec::new();
    eprintln!(
        "{} agents x {} batches ({} rounds), ~{} processes per host",
        args.agents, total_batches, args.rounds, args.processes
    );
    for round in 0..u64::from(args.rounds) {
        let seqs = round * per_round + 1..=(round + 1) * per_round;
        // A: durable collector.
        let before_s = totals_d.scalars.load(Ordering::Relaxed);
        let c0 = durable.cpu_ticks()?;
        streams_d =
            round_collector(streams_d, &mut sim_d, seqs.clone(), t0, totals_d.clone()).await?;
        let cpu_d = (durable.cpu_ticks()? - c0) as f64 * tick_ns;
        let samples = (totals_d.scalars.load(Ordering::Relaxed) - before_s) as f64;
        let d = cpu_d / samples;
        // B: Prometheus, same samples.
        let c0 = prom.cpu_ticks()?;
        let addr = prom.addr;
        let mut sp = std::mem::take(&mut sim_p);
        let seqs_p = seqs.clone();
        sim_p = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<HostSim>> {
            round_prometheus(addr, &mut sp, seqs_p, t0)?;
            Ok(sp)
        })
        .await??;
        let p = (prom.cpu_ticks()? - c0) as f64 * tick_ns / samples;
        // C: in-memory path.
        let c0 = memory.cpu_ticks()?;
        streams_m =
            round_collector(streams_m, &mut sim_m, seqs.clone(), t0, totals_m.clone()).await?;
        let m = (memory.cpu_ticks()? - c0) as f64 * tick_ns / samples;
        // D: durable collector with its detectors off.
        let c0 = quiet.cpu_ticks()?;
        streams_q =
            round_collector(streams_q, &mut sim_q, seqs.clone(), t0, totals_q.clone()).await?;
        let q = (quiet.cpu_ticks()? - c0) as f64 * tick_ns / samples;
        detect_ratios.push(d / q);
        eprintln!(
            "round {}: {samples} samples; ns/sample: durable {d:.0}, prometheus {p:.0}, in-memory {m:.0}, durable without detectors {q:.0}",
            round + 1
        );
        per_sample.entry("quiet").or_default().push(q);
        per_sample.entry("durable").or_default().push(d);
        per_sample.entry("prometheus").or_default().push(p);
        per_sample.entry("memory").or_default().push(m);
        ratios.push(d / p);
    }
    let scalars = totals_d.scalars.load(Ordering::Relaxed);
    let histograms = totals_d.histograms.load(Ordering::Relaxed);
    let wire = totals_d.bytes.load(Ordering::Relaxed);

    // Freshness: real-time batches, polled through QuerySeries.
    eprintln!(
        "freshness: {} s of real-time batches ...",
        args.freshness_secs
    );
    let fresh = freshness(
        &durable,
        &mut sim_d,
        streams_d,
        total_batches,
        args.freshness_secs,
    )
    .await?;
    drop(streams_m);
    drop(streams_q);
    // Memory with and without the detectors, same hosts and data.
    let (rss_on, rss_off) = (durable.rss_kib(), quiet.rss_kib());
    quiet.stop();

    // Query: one hour of one host, every series, at a 15 s step, vs Prometheus.
    let q_start = t0 + SEC;
    let q_end = t0 + (total_batches as i64 + 1) * SEC;
    let mut q_collector = Vec::new();
    let mut q_prom = Vec::new();
    let mut q_points = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        q_points = query_host_hour(durable.addr, &host_id(0), q_start, q_end).await?;
        q_collector.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let path = format!(
            "/api/v1/query_range?query=%7Bhost%3D%22{}%22%7D&start={:.3}&end={:.3}&step=15",
            host_id(0),
            q_start as f64 / 1e9,
            q_end as f64 / 1e9
        );
        let (status, body) =
            tokio::task::spawn_blocking(move || http(prom.addr, "GET", &path, &[], &[])).await??;
        if status != 200 {
            bail!(
                "prometheus query answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        q_prom.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Bytes on disk: Prometheus as it stands (WAL + head chunks); the collector
    // after cutting its head into chunks (what a 20-minute chunk_duration does).
    let prom_bytes = dir_bytes(&prom.dir.join("tsdb"));
    prom.stop();
    let wal_before = dir_bytes(&durable.dir.join("data"));
    durable.stop();
    memory.stop();
    let data = durable.dir.join("data");
    let store = nodewatch_collector::store::Store::open(&data, Default::default())?;
    store.flush().await?;
    let size = store.size();
    drop(store);
    let chunk_alloc = dir_bytes(&data) - dir_bytes(&data.join("wal"));

    let (dm, dlo, dhi) = median_min_max(&per_sample["durable"]);
    let (pm, plo, phi) = median_min_max(&per_sample["prometheus"]);
    let (mm, mlo, mhi) = median_min_max(&per_sample["memory"]);
    let (qm, qlo, qhi) = median_min_max(&per_sample["quiet"]);
    let (xm, xlo, xhi) = median_min_max(&detect_ratios);
    let (rm, rlo, rhi) = median_min_max(&ratios);
    let (qcm, qclo, qchi) = median_min_max(&q_collector);
    let (qpm, qplo, qphi) = median_min_max(&q_prom);
    let n = scalars as f64;
    println!();
    println!(
        "load: {} agents, {} batches each (1 s apart), {} processes/host; {} scalar samples (+{} histograms), {:.0} wire bytes/batch; {} rounds A B C D",
        args.agents,
        total_batches,
        args.processes,
        scalars,
        histograms,
        wire as f64 / (u64::from(args.agents) * total_batches) as f64,
        args.rounds
    );
    println!();
    println!("| measure | nodewatch | Prometheus 2.42 (Debian) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| CPU per sample, durable ingest (median, min–max of {} rounds) | {dm:.0} ns ({dlo:.0}–{dhi:.0}) | {pm:.0} ns ({plo:.0}–{phi:.0}) | {rm:.2} ({rlo:.2}–{rhi:.2}) |",
        args.rounds
    );
    println!(
        "| CPU per sample, in-memory path (WAL on tmpfs, no fsync) | {mm:.0} ns ({mlo:.0}–{mhi:.0}) = {:.2} M samples/s per core | | {:.2} |",
        1e3 / mm,
        mm / pm
    );
    println!(
        "| CPU per sample, durable ingest with detectors off (median, min–max) | {qm:.0} ns ({qlo:.0}–{qhi:.0}) | | detectors on / off: {xm:.2} ({xlo:.2}–{xhi:.2}) |"
    );
    println!(
        "| collector RSS after the rounds, detectors on / off ({} hosts) | {:.0} / {:.0} MiB | | |",
        args.agents,
        rss_on as f64 / 1024.0,
        rss_off as f64 / 1024.0
    );
    println!(
        "| bytes on disk per sample | {:.2} (chunks after cut; {:.2} before, WAL) | {:.2} (WAL + head chunks) | |",
        chunk_alloc as f64 / n,
        wal_before as f64 / n,
        prom_bytes as f64 / n
    );
    println!(
        "| chunk database file per sample (scalars + histograms) | {:.2} | | |",
        size.chunk_bytes as f64 / (scalars + histograms) as f64
    );
    println!(
        "| freshness, sample -> queryable (p50 / p99 / max, {} samples) | {:.0} / {:.0} / {:.0} ms | | |",
        fresh.len(),
        pct(&fresh, 50.0),
        pct(&fresh, 99.0),
        pct(&fresh, 100.0)
    );
    println!(
        "| query: 1 h of one host, {q_points} points at 15 s step (median, min–max of 5) | {qcm:.0} ms ({qclo:.0}–{qchi:.0}) | {qpm:.0} ms ({qplo:.0}–{qphi:.0}) | {:.2} |",
        qcm / qpm
    );
    let _ = std::fs::remove_dir_all(&disk);
    let _ = std::fs::remove_dir_all(&shm);
    Ok(())
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn tempfile_dir(base: PathBuf, prefix: &str) -> anyhow::Result<PathBuf> {
    let d = base.join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Sends one batch per second per agent with the real clock and measures when
/// each becomes visible through QuerySeries.
async fn freshness(
    target: &Target,
    sims: &mut [HostSim],
    streams: Vec<AgentStream>,
    last_seq: u64,
    secs: u64,
) -> anyhow::Result<Vec<f64>> {
    let addr = target.addr;
    let mut client = pb::query_client::QueryClient::connect(format!("http://{addr}")).await?;
    let mut lat = Vec::new();
    let mut streams = streams;
    let watched = streams.len().min(4);
    for k in 1..=secs {
        let tick = Instant::now();
        let seq = last_seq + k;
        let now = now_nanos();
        let mut sent = Vec::new();
        for (a, (s, sim)) in streams.iter_mut().zip(sims.iter_mut()).enumerate() {
            let t = now + a as i64 * 1_000;
            let b = sim.batch(seq, t);
            s.tx.send(pb::AgentMessage {
                kind: Some(AgentKind::Batch(b)),
            })
            .await?;
            sent.push(t);
        }
        // Poll the first hosts until their sample shows up.
        for (a, &t) in sent.iter().enumerate().take(watched) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = client
                    .query_series(pb::QuerySeriesRequest {
                        host: host_id(a as u32),
                        metric: "load1".into(),
                        start_unix_nano: t,
                        end_unix_nano: t + 1,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if r.series
                    .iter()
                    .any(|s| s.points.iter().any(|p| p.time_unix_nano == t))
                {
                    lat.push((now_nanos() - t) as f64 / 1e6);
                    break;
                }
                if Instant::now() > deadline {
                    bail!("sample of host {a} not queryable after 10 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        // Drain acks.
        for s in &mut streams {
            while let Ok(Ok(Some(_))) =
                tokio::time::timeout(Duration::from_millis(1), s.rx.message()).await
            {}
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    Ok(lat)
}

/// Fetches every series of one host over [start, end] at a 15 s step; returns the point count.
async fn query_host_hour(
    addr: SocketAddr,
    host: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<usize> {
    let mut client = pb::query_client::QueryClient::connect(format!("http://{addr}"))
        .await?
        .max_decoding_message_size(256 << 20);
    let metrics = client
        .list_metrics(pb::ListMetricsRequest { host: host.into() })
        .await?
        .into_inner();
    let mut points = 0;
    for m in metrics.metrics.iter().filter(|m| !m.histogram) {
        let t = Instant::now();
        let r = client
            .query_series(pb::QuerySeriesRequest {
                host: host.into(),
                metric: m.name.clone(),
                start_unix_nano: start,
                end_unix_nano: end,
                step_nanos: 15 * SEC,
                aggregation: pb::Aggregation::Last as i32,
                limit: 10_000,
                ..Default::default()
            })
            .await?
            .into_inner();
        points += r.series.iter().map(|s| s.points.len()).sum::<usize>();
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!("{} {:?}", m.name, t.elapsed());
        }
    }
    Ok(points)
}
