//! `cargo xtask bench outage`: a collector outage with the agent's disk spool.
//!
//! Runs a release collector and a release agent (default configuration,
//! loopback, data and spool in a temporary directory) on a host loaded with
//! idle processes, stops the collector (SIGTERM) for the outage, starts it
//! again and reports:
//! - batches produced (the newest seq) vs stored (memory samples, one per
//!   batch): zero loss;
//! - spool growth per host-hour, measured over the outage (no collector);
//! - replay speed: backlog seconds / drain seconds, where the drain runs from
//!   the first batch stored after the restart until the agent reports the
//!   backlog replayed (it sends live batches first and the backlog behind);
//! - freshness of live data while the backlog drains: for every new live
//!   batch, the time from its sample time until the collector serves it;
//! - the agent's RSS before and its ceiling during the outage.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use nodewatch_proto::pb;

const HOST: &str = "nodewatch-outage-bench";

/// Options of the bench.
#[derive(Debug, Clone)]
struct Options {
    outage: Duration,
    before: Duration,
    processes: usize,
    ebpf: bool,
}

/// "90s", "10m", "1h", "500ms" or plain seconds.
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .with_context(|| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("bad duration {s:?}: use ms, s, m or h"),
    })
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        outage: Duration::from_secs(180),
        before: Duration::from_secs(20),
        processes: 1000,
        ebpf: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--outage" => o.outage = parse_duration(value()?)?,
            "--before" => o.before = parse_duration(value()?)?,
            "--processes" => {
                o.processes = value()?
                    .parse::<usize>()
                    .context("--processes")?
                    .min(20_000)
            }
            "--no-ebpf" => o.ebpf = false,
            other => bail!(
                "unknown option {other} (--outage 3m, --before 20s, --processes 1000, --no-ebpf)"
            ),
        }
    }
    Ok(o)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Bytes of the files in `dir` (not recursive).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// A child process stopped with SIGTERM (then killed) on drop.
struct Daemon {
    child: Child,
    name: &'static str,
}

impl Daemon {
    fn start(
        binary: &Path,
        args: &[String],
        log: &Path,
        name: &'static str,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .args(args)
            .env("NODEWATCH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self { child, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then up to 15 s for the process to exit.
    fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not stop on SIGTERM", self.name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Idle processes, killed on drop.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn spawn_sleepers(n: usize) -> anyhow::Result<Sleepers> {
    let mut s = Sleepers(Vec::with_capacity(n));
    for _ in 0..n {
        s.0.push(
            Command::new("sleep")
                .arg("86400")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning sleep")?,
        );
    }
    Ok(s)
}

/// A removed-on-drop temporary directory.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_collector(bin: &Path, addr: SocketAddr, tmp: &Path, n: u32) -> anyhow::Result<Daemon> {
    let d = Daemon::start(
        &bin.join("nodewatch-collector"),
        &[
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            tmp.join("data").display().to_string(),
        ],
        &tmp.join(format!("collector-{n}.log")),
        "collector",
    )?;
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("collector did not listen on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(d)
}

/// The collector's newest batch of the bench host: (seq, sample time).
async fn latest(addr: SocketAddr) -> Option<(u64, i64)> {
    let mut c = pb::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .ok()?;
    let r = c
        .get_host(pb::GetHostRequest { host: HOST.into() })
        .await
        .ok()?
        .into_inner();
    r.latest.map(|b| (b.seq, b.time_unix_nano))
}

/// Stored memory samples (one per batch) of the bench host from `start` to `end`.
async fn stored_batches(addr: SocketAddr, start: i64, end: i64) -> anyhow::Result<Vec<i64>> {
    let mut c = pb::query_client::QueryClient::connect(format!("http://{addr}")).await?;
    let r = c
        .query_series(pb::QuerySeriesRequest {
            host: HOST.into(),
            metric: "memory_available_bytes".into(),
            start_unix_nano: start,
            end_unix_nano: end,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(r.series
        .first()
        .map(|s| s.points.iter().map(|p| p.time_unix_nano).collect())
        .unwrap_or_default())
}

/// How many times the agent's log says it finished replaying a backlog.
fn count_replayed(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.matches("backlog replayed").count())
        .unwrap_or(0)
}

/// What one run measured.
#[derive(Debug)]
struct Outcome {
    produced: u64,
    stored: usize,
    duplicates: u64,
    out_of_order: u64,
    outage_secs: f64,
    spool_growth: u64,
    spool_end: u64,
    reconnect_secs: f64,
    drain_secs: f64,
    freshness_ms: Vec<f64>,
    rss_before_kib: u64,
    rss_max_kib: u64,
}

/// Runs the bench and prints the table.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse_options(args)?;
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "nodewatch-agent",
        "-p",
        "nodewatch-collector",
    ])?;
    let bin = crate::workspace_root().join("target/release");
    let tmp =
        TempDir(std::env::temp_dir().join(format!("nodewatch-outage-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)?;
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    println!(
        "outage {:?} after {:?}; {} idle processes; eBPF {}; data in {}",
        o.outage,
        o.before,
        o.processes,
        if o.ebpf { "on" } else { "off" },
        tmp.0.display()
    );
    let _sleepers = spawn_sleepers(o.processes)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = measure(&o, &bin, &tmp.0, addr, &rt)?;
    print_table(&o, &outcome);
    Ok(())
}

fn measure(
    o: &Options,
    bin: &Path,
    tmp: &Path,
    addr: SocketAddr,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Outcome> {
    let mut collector = start_collector(bin, addr, tmp, 1)?;
    let spool = tmp.join("spool");
    let mut agent_args = vec![
        "--collector".to_string(),
        format!("http://{addr}"),
        "--host-id".into(),
        HOST.into(),
        "--spool-dir".into(),
        spool.display().to_string(),
    ];
    if !o.ebpf {
        agent_args.push("--no-ebpf".into());
    }
    let mut agent = Daemon::start(
        &bin.join("nodewatch-agent"),
        &agent_args,
        &tmp.join("agent.log"),
        "agent",
    )?;
    let host_spool = spool.join(format!("host-{HOST}"));
    let first = now_nanos();

    std::thread::sleep(o.before);
    let Some((seq_before, _)) = rt.block_on(latest(addr)) else {
        bail!(
            "no batch stored before the outage; agent log:\n{}",
            std::fs::read_to_string(tmp.join("agent.log")).unwrap_or_default()
        );
    };
    let rss_before_kib = rss_kib(agent.pid());

    // The outage.
    collector.stop()?;
    let down = Instant::now();
    let spool_start = dir_bytes(&host_spool);
    let mut rss_max_kib = 0;
    while down.elapsed() < o.outage {
        rss_max_kib = rss_max_kib.max(rss_kib(agent.pid()));
        if agent.child.try_wait()?.is_some() {
            bail!("the agent exited during the outage");
        }
        std::thread::sleep(Duration::from_millis(500).min(o.outage));
    }
    let spool_end = dir_bytes(&host_spool);
    let outage_secs = down.elapsed().as_secs_f64();

    // The collector returns; the backlog drains.
    let back = Instant::now();
    let back_ns = now_nanos();
    let _collector = start_collector(bin, addr, tmp, 2)?;
    let agent_log = tmp.join("agent.log");
    let replays_before = count_replayed(&agent_log);
    let mut reconnected = None;
    let mut seen_time = 0i64;
    let mut freshness_ms = Vec::new();
    let drained = loop {
        if back.elapsed() > Duration::from_secs(600) {
            bail!("the backlog did not drain within 10 minutes");
        }
        if let Some((seq, time)) = rt.block_on(latest(addr)) {
            if reconnected.is_none() && seq > seq_before {
                reconnected = Some(back.elapsed());
            }
            // A new live batch: how long after its sampling it is served.
            if time >= back_ns && time > seen_time {
                seen_time = time;
                freshness_ms.push((now_nanos() - time) as f64 / 1e6);
            }
        }
        if count_replayed(&agent_log) > replays_before {
            break back.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let reconnect = reconnected.unwrap_or(drained);
    // Let it run a little, then compare produced with stored.
    std::thread::sleep(Duration::from_secs(3));
    let (produced, newest) = rt
        .block_on(latest(addr))
        .context("no batch after the outage")?;
    let times = rt.block_on(stored_batches(addr, first - 60_000_000_000, newest))?;
    let stats = rt.block_on(async {
        let mut c = pb::query_client::QueryClient::connect(format!("http://{addr}")).await?;
        Ok::<_, anyhow::Error>(
            c.get_store_stats(pb::GetStoreStatsRequest {})
                .await?
                .into_inner(),
        )
    })?;
    agent.stop()?;
    Ok(Outcome {
        produced,
        stored: times.len(),
        duplicates: stats.batches_duplicate,
        out_of_order: stats.out_of_order_batches,
        outage_secs,
        spool_growth: spool_end.saturating_sub(spool_start),
        spool_end,
        reconnect_secs: reconnect.as_secs_f64(),
        drain_secs: (drained - reconnect).as_secs_f64(),
        freshness_ms,
        rss_before_kib,
        rss_max_kib,
    })
}

fn print_table(o: &Options, r: &Outcome) {
    let per_hour = r.spool_growth as f64 * 3600.0 / r.outage_secs;
    let lost = r.produced as i64 - r.stored as i64;
    // The backlog is the outage plus the reconnect delay; the drain is bounded
    // below by the poll period.
    let backlog = r.outage_secs + r.reconnect_secs;
    let drain = r.drain_secs.max(0.02);
    println!();
    println!("| what | value |");
    println!("|---|---|");
    println!("| outage (collector stopped) | {:.0} s |", r.outage_secs);
    println!(
        "| batches produced (newest seq) / stored | {} / {} ({} lost) |",
        r.produced, r.stored, lost
    );
    println!(
        "| replays ignored as duplicates / stored out of order | {} / {} |",
        r.duplicates, r.out_of_order
    );
    println!(
        "| spool growth per host-hour ({} processes, default cadences) | {} ({:.0} bytes) |",
        o.processes,
        mib(per_hour),
        per_hour
    );
    println!(
        "| spool at the end of the outage | {} |",
        mib(r.spool_end as f64)
    );
    println!(
        "| collector restart -> first replayed batch stored | {:.2} s |",
        r.reconnect_secs
    );
    println!(
        "| backlog drain | {:.2} s for {:.0} s of backlog = {:.0}x real time |",
        r.drain_secs,
        backlog,
        backlog / drain
    );
    let mut fresh = r.freshness_ms.clone();
    fresh.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        fresh
            .get(((fresh.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "| freshness of live batches while the backlog drains, p50 / p99 / max ({} batches) | {:.0} / {:.0} / {:.0} ms |",
        fresh.len(),
        pct(0.5),
        pct(0.99),
        fresh.last().copied().unwrap_or(0.0)
    );
    println!(
        "| agent RSS before / ceiling during the outage | {:.1} / {:.1} MiB |",
        r.rss_before_kib as f64 / 1024.0,
        r.rss_max_kib as f64 / 1024.0
    );
    println!(
        "| 24 h at this rate | {} (default spool_max_bytes 4 GiB) |",
        mib(per_hour * 24.0)
    );
}
