//! `cargo xtask bench samplers`: the agent's CPU per full sampling cycle
//! against one scrape of Debian's prometheus-node-exporter, measured side by
//! side in one run on a host loaded with >= 1,000 processes and >= 10,000
//! loopback sockets; plus the agent's CPU share at its default cadences and
//! its RSS.
//!
//! CPU of a process = the sum of its threads' run time from
//! /proc/PID/task/*/schedstat (nanoseconds) read before and after the work;
//! utime+stime from /proc/PID/stat are reported beside it as a cross-check
//! (10 ms ticks, hence many cycles per round).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Options of the bench (`cargo xtask bench samplers [--processes N] [--sockets N] [--rounds N] [--defaults-seconds N]`).
#[derive(Debug, Clone)]
struct Options {
    processes: usize,
    sockets: usize,
    rounds: usize,
    cycles: u64,
    scrapes: u64,
    defaults_seconds: u64,
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        processes: 1000,
        sockets: 10_000,
        rounds: 5,
        cycles: 20,
        scrapes: 20,
        defaults_seconds: 30,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || -> anyhow::Result<u64> {
            it.next()
                .with_context(|| format!("{a} needs a value"))?
                .parse()
                .with_context(|| format!("{a} needs a number"))
        };
        match a.as_str() {
            "--processes" => o.processes = value()?.min(20_000) as usize,
            "--sockets" => o.sockets = value()?.min(50_000) as usize,
            "--rounds" => o.rounds = value()?.clamp(1, 50) as usize,
            "--cycles" => o.cycles = value()?.clamp(1, 1000),
            "--scrapes" => o.scrapes = value()?.clamp(1, 1000),
            "--defaults-seconds" => o.defaults_seconds = value()?.min(3600),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// Run time of every thread of `pid`, nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// utime + stime of `pid`, clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Children killed and reaped on drop.
struct Reaped(Vec<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn raise_nofile(want: u64) -> anyhow::Result<()> {
    // SAFETY: getrlimit/setrlimit with valid structs.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit failed");
        }
        if lim.rlim_cur >= want {
            return Ok(());
        }
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            bail!(
                "cannot raise RLIMIT_NOFILE to {want} (hard limit {}; run as root)",
                lim.rlim_max
            );
        }
    }
    Ok(())
}

/// `n` idle processes (`sleep`), killed on drop.
fn spawn_processes(n: usize) -> anyhow::Result<Reaped> {
    let mut children = Reaped(Vec::with_capacity(n));
    for _ in 0..n {
        let c = Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning sleep")?;
        children.0.push(c);
    }
    Ok(children)
}

/// `n` loopback sockets: n/2 connections, both ends held by this process.
fn open_sockets(n: usize) -> anyhow::Result<(TcpListener, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n / 2 {
        held.push(TcpStream::connect(addr).context("loopback connect")?);
        held.push(listener.accept().context("loopback accept")?.0);
    }
    Ok((listener, held))
}

/// The sampling workload (agent example) under our control.
struct Workload {
    _child: Reaped,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Workload {
    fn start(binary: &std::path::Path, mode: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let pid = child.id();
        let mut w = Self {
            _child: Reaped(vec![child]),
            stdin,
            stdout,
            pid,
        };
        let ready = w.line()?;
        if ready != "ready" {
            bail!("workload said {ready:?}");
        }
        Ok(w)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        self.stdout.read_line(&mut s)?;
        Ok(s.trim().to_string())
    }

    fn ask(&mut self, cmd: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.line()
    }
}

/// node_exporter started on a free loopback port, killed on drop.
struct NodeExporter {
    child: Reaped,
    port: u16,
    pid: u32,
}

fn node_exporter_binary() -> anyhow::Result<std::path::PathBuf> {
    let path = std::path::PathBuf::from("/usr/bin/prometheus-node-exporter");
    if !path.exists() {
        crate::bootstrap::apt_install(&["prometheus-node-exporter"])?;
        if !path.exists() {
            bail!(
                "apt-get installed prometheus-node-exporter but {} is missing",
                path.display()
            );
        }
    }
    Ok(path)
}

impl NodeExporter {
    fn start() -> anyhow::Result<Self> {
        let binary = node_exporter_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus-node-exporter")?;
        let pid = child.id();
        let ne = Self {
            child: Reaped(vec![child]),
            port,
            pid,
        };
        let start = Instant::now();
        loop {
            if ne.scrape().is_ok() {
                return Ok(ne);
            }
            if start.elapsed() > Duration::from_secs(15) {
                bail!("node_exporter did not answer on port {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One scrape; returns the number of `node_` sample lines.
    fn scrape(&self) -> anyhow::Result<usize> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"
        )?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        if !body.starts_with("HTTP/1.0 200") && !body.starts_with("HTTP/1.1 200") {
            bail!("scrape failed");
        }
        Ok(body.lines().filter(|l| l.starts_with("node_")).count())
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn row(name: &str, v: &[f64], unit: &str) -> String {
    let (lo, hi) = min_max(v);
    format!("| {name} | {:.2} {unit} | {:.2}–{:.2} |", median(v), lo, hi)
}

/// Runs the bench and prints the table.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse_options(args)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("note: not root; other users' processes may be unreadable");
    }
    raise_nofile(o.sockets as u64 + 4096)?;
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "nodewatch-agent",
        "--example",
        "sampler_bench",
    ])?;
    let binary = crate::workspace_root().join("target/release/examples/sampler_bench");

    println!(
        "starting prometheus-node-exporter, {} processes, {} loopback sockets",
        o.processes, o.sockets
    );
    let ne = NodeExporter::start()?;
    let _procs = spawn_processes(o.processes)?;
    let (_listener, _sockets) = open_sockets(o.sockets)?;
    let series = ne.scrape()?;

    let mut agent = Workload::start(&binary, "full")?;
    let mut parts = [
        (
            "host counters: CPU + memory + disks",
            Workload::start(&binary, "host")?,
            Vec::new(),
        ),
        (
            "socket pass (sock_diag + owners)",
            Workload::start(&binary, "sockets")?,
            Vec::new(),
        ),
        (
            "process pass",
            Workload::start(&binary, "processes")?,
            Vec::new(),
        ),
    ];
    let mut agent_ms = Vec::new();
    let mut agent_tick_ms = Vec::new();
    let mut ne_ms = Vec::new();
    let mut ne_tick_ms = Vec::new();
    let mut ratio = Vec::new();
    let hz = 100.0;
    let mut seen = String::new();
    for round in 0..o.rounds {
        // A: agent full cycles.
        let (ns0, t0) = (cpu_ns(agent.pid), cpu_ticks(agent.pid));
        seen = agent.ask(&format!("cycles {}", o.cycles))?;
        let (ns1, t1) = (cpu_ns(agent.pid), cpu_ticks(agent.pid));
        let a = (ns1 - ns0) as f64 / 1e6 / o.cycles as f64;
        agent_ms.push(a);
        agent_tick_ms.push((t1 - t0) as f64 * 1000.0 / hz / o.cycles as f64);
        // B: node_exporter scrapes.
        let (ns0, t0) = (cpu_ns(ne.pid), cpu_ticks(ne.pid));
        for _ in 0..o.scrapes {
            ne.scrape()?;
        }
        let (ns1, t1) = (cpu_ns(ne.pid), cpu_ticks(ne.pid));
        let b = (ns1 - ns0) as f64 / 1e6 / o.scrapes as f64;
        ne_ms.push(b);
        ne_tick_ms.push((t1 - t0) as f64 * 1000.0 / hz / o.scrapes as f64);
        ratio.push(a / b);
        // The parts of a full cycle, each in its own process.
        for (_, w, v) in &mut parts {
            let ns0 = cpu_ns(w.pid);
            w.ask(&format!("cycles {}", o.cycles))?;
            v.push((cpu_ns(w.pid) - ns0) as f64 / 1e6 / o.cycles as f64);
        }
        println!(
            "round {}: agent {a:.2} ms/cycle, node_exporter {b:.2} ms/scrape",
            round + 1
        );
    }
    for (_, w, _) in &mut parts {
        let _ = w.ask("quit");
    }
    let rss_full = agent.ask("rss")?;
    let _ = agent.ask("quit");
    drop(agent);

    println!("agent at its defaults for {} s ...", o.defaults_seconds);
    let mut defaults = Workload::start(&binary, "defaults")?;
    let (ns0, w0) = (cpu_ns(defaults.pid), Instant::now());
    defaults.ask(&format!("run {}", o.defaults_seconds))?;
    let share = (cpu_ns(defaults.pid) - ns0) as f64 / 1e9 / w0.elapsed().as_secs_f64() * 100.0;
    let rss_defaults = defaults.ask("rss")?;
    let hwm = status_kb(defaults.pid, "VmHWM:");
    let _ = defaults.ask("quit");
    drop(defaults);
    drop(ne.child);

    let parse_rss = |s: &str| -> (f64, f64) {
        let v: Vec<f64> = s
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        (
            v.first().copied().unwrap_or(0.0) / 1024.0,
            v.get(1).copied().unwrap_or(0.0) / 1024.0,
        )
    };
    let (full_rss, full_hwm) = parse_rss(&rss_full);
    let (def_rss, _) = parse_rss(&rss_defaults);
    let seen: Vec<&str> = seen.split_whitespace().collect();
    println!();
    println!(
        "host: {} processes seen by the agent, {} TCP sockets; node_exporter: {series} node_ series",
        seen.get(2).unwrap_or(&"?"),
        seen.get(3).unwrap_or(&"?")
    );
    println!(
        "{} rounds (A B A B), {} agent cycles and {} scrapes per round; CPU from /proc/PID/task/*/schedstat",
        o.rounds, o.cycles, o.scrapes
    );
    println!();
    println!("| measure | median | min–max |");
    println!("|---|---|---|");
    println!(
        "{}",
        row(
            "agent full cycle CPU (host + disks + sockets + processes)",
            &agent_ms,
            "ms"
        )
    );
    println!("{}", row("node_exporter scrape CPU", &ne_ms, "ms"));
    println!(
        "{}",
        row("ratio agent cycle / node_exporter scrape", &ratio, "x")
    );
    for (name, _, v) in &parts {
        println!("{}", row(&format!("of which: {name}"), v, "ms"));
    }
    println!(
        "{}",
        row(
            "agent full cycle, utime+stime cross-check",
            &agent_tick_ms,
            "ms"
        )
    );
    println!(
        "{}",
        row(
            "node_exporter scrape, utime+stime cross-check",
            &ne_tick_ms,
            "ms"
        )
    );
    println!(
        "| agent CPU at defaults (1 s interval, 10 s passes), {} s | {share:.3} % of a core | one run |",
        o.defaults_seconds
    );
    println!(
        "| agent RSS at defaults | {def_rss:.1} MiB | peak {:.1} MiB |",
        hwm as f64 / 1024.0
    );
    println!("| agent RSS, full-cycle workload | {full_rss:.1} MiB | peak {full_hwm:.1} MiB |");
    Ok(())
}
