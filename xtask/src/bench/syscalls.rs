//! `cargo xtask bench syscalls`: what tracing syscalls adds to a `getppid`
//! tight loop, alternating in one run between nothing attached, empty
//! programs on the same hooks (the floor of the mechanism), two reference
//! programs on those hooks (clock reads only; the latency histogram without
//! cgroup attribution), nodewatch's programs, and the equivalent bpftrace
//! one-liner.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The bpftrace equivalent: start time per thread, histogram per syscall id.
const BPFTRACE_PROGRAM: &str = "tracepoint:raw_syscalls:sys_enter { @s[tid] = nsecs; } \
tracepoint:raw_syscalls:sys_exit /@s[tid]/ { @h[args->id] = hist(nsecs - @s[tid]); delete(@s[tid]); }";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Bare,
    Empty,
    Clock,
    Plain,
    Nodewatch,
    Bpftrace,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Bare => "nothing attached",
            Setup::Empty => "empty programs (floor)",
            Setup::Clock => "reference: clock reads only",
            Setup::Plain => "reference: histogram, no cgroups",
            Setup::Nodewatch => "nodewatch",
            Setup::Bpftrace => "bpftrace",
        }
    }
}

/// Options: `--rounds N` (default 5), `--calls N` per measurement (default 2000000),
/// `--hook auto|tp_btf|raw_tracepoint` (default auto), `--no-bpftrace`,
/// `--bpf-stats` (afterwards, each program's own run time from the kernel's
/// BPF statistics).
struct Options {
    rounds: usize,
    calls: u64,
    hook: String,
    bpftrace: bool,
    bpf_stats: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        rounds: 5,
        calls: 2_000_000,
        hook: "auto".into(),
        bpftrace: true,
        bpf_stats: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => o.rounds = it.next().context("--rounds N")?.parse()?,
            "--calls" => o.calls = it.next().context("--calls N")?.parse()?,
            "--hook" => o.hook = it.next().context("--hook NAME")?.clone(),
            "--no-bpftrace" => o.bpftrace = false,
            "--bpf-stats" => o.bpf_stats = true,
            other => bail!("unknown option {other}"),
        }
    }
    if o.rounds == 0 || o.calls == 0 {
        bail!("--rounds and --calls must be positive");
    }
    Ok(o)
}

/// Attached programs of one setup; detached on drop.
enum Attached {
    None,
    Helper(Child, Option<ChildStdin>),
    Bpftrace(Child),
}

impl Drop for Attached {
    fn drop(&mut self) {
        match self {
            Attached::None => {}
            Attached::Helper(child, stdin) => {
                drop(stdin.take());
                let _ = wait_bounded(child, Duration::from_secs(5));
            }
            Attached::Bpftrace(child) => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                let _ = wait_bounded(child, Duration::from_secs(10));
            }
        }
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::io::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().map(|_| ())
}

fn attach_helper(helper: &std::path::Path, mode: &str, hook: &str) -> anyhow::Result<Attached> {
    let mut child = Command::new(helper)
        .args([mode, hook])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", helper.display()))?;
    let stdin = child.stdin.take();
    let mut out = BufReader::new(child.stdout.take().context("helper stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.starts_with("attached") {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{mode} programs did not attach (run as root): {line}");
    }
    Ok(Attached::Helper(child, stdin))
}

fn attach_bpftrace() -> anyhow::Result<Attached> {
    let mut child = Command::new("bpftrace")
        .args(["-e", BPFTRACE_PROGRAM])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start bpftrace")?;
    let mut out = BufReader::new(child.stdout.take().context("bpftrace stdout")?);
    let mut line = String::new();
    let t0 = Instant::now();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            bail!("bpftrace exited before attaching: {err}");
        }
        if line.starts_with("Attaching") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("bpftrace did not attach within 60 s");
        }
    }
    // Drain its output in the background so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    // Give the probes a moment to be live.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Attached::Bpftrace(child))
}

/// Where bpftrace expects tracefs.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Unmounts the tracefs the bench mounted, when dropped.
struct MountGuard;

impl Drop for MountGuard {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(TRACEFS)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("bench: could not unmount {TRACEFS}; unmount it by hand");
        }
    }
}

/// Nanoseconds per `getppid` over `calls` calls (best of three runs).
fn measure(calls: u64) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        for _ in 0..calls {
            // SAFETY: getppid has no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        best = best.min(t0.elapsed().as_nanos() as f64 / calls as f64);
    }
    best
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the benchmark.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench syscalls attaches eBPF programs: run it as root");
    }
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "nodewatch-agent",
        "--example",
        "ebpf_attach",
    ])?;
    let helper = crate::workspace_root().join("target/release/examples/ebpf_attach");
    let mut _tracefs: Option<MountGuard> = None;
    let mut setups = vec![
        Setup::Bare,
        Setup::Empty,
        Setup::Clock,
        Setup::Plain,
        Setup::Nodewatch,
    ];
    if o.bpftrace {
        if Command::new("bpftrace").arg("--version").output().is_err() {
            crate::bootstrap::apt_install(&["bpftrace"])?;
        }
        setups.push(Setup::Bpftrace);
        // bpftrace's tracepoints need tracefs (not mounted in some containers);
        // a mount made here is undone when the bench ends.
        let tracing = std::path::Path::new(TRACEFS);
        if !tracing.join("events").exists() {
            eprintln!(
                "bench: mounting tracefs on {TRACEFS} (bpftrace needs it; unmounted at the end)"
            );
            let st = Command::new("mount")
                .args(["-t", "tracefs", "nodev", TRACEFS])
                .status()
                .context("cannot run mount")?;
            if !st.success() {
                bail!("cannot mount tracefs; run with --no-bpftrace");
            }
            _tracefs = Some(MountGuard);
        }
    }
    pin_to_cpu0();
    eprintln!(
        "bench syscalls: {} rounds × {} setups, {} getppid calls each (best of 3), hook {}",
        o.rounds,
        setups.len(),
        o.calls,
        o.hook
    );
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for round in 0..o.rounds {
        for (i, &s) in setups.iter().enumerate() {
            let attached = match s {
                Setup::Bare => Attached::None,
                Setup::Empty => attach_helper(&helper, "empty", &o.hook)?,
                Setup::Clock => attach_helper(&helper, "clock", &o.hook)?,
                Setup::Plain => attach_helper(&helper, "plain", &o.hook)?,
                Setup::Nodewatch => attach_helper(&helper, "full", &o.hook)?,
                Setup::Bpftrace => attach_bpftrace()?,
            };
            let ns = measure(o.calls);
            drop(attached);
            eprintln!("  round {}: {:<34} {ns:8.1} ns/call", round + 1, s.label());
            results[i].push(ns);
        }
    }
    // Per round, each setup minus the bare loop of the same round (paired), so
    // that drifts of the machine between rounds cancel out.
    let added: Vec<Vec<f64>> = results
        .iter()
        .map(|v| v.iter().zip(&results[0]).map(|(x, b)| x - b).collect())
        .collect();
    let summary = |v: &[f64]| {
        let mut v = v.to_vec();
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(f64::MIN, f64::max);
        (median(&mut v), lo, hi)
    };
    let ratio = |a: usize, b: usize| {
        let r: Vec<f64> = added[a]
            .iter()
            .zip(&added[b])
            .map(|(x, y)| x / y.max(0.1))
            .collect();
        summary(&r)
    };
    println!();
    println!(
        "| setup | ns per getppid, median (min–max) | added ns per syscall, median (min–max) | added vs floor, median (min–max) |"
    );
    println!("|---|---|---|---|");
    for (i, s) in setups.iter().enumerate() {
        let (m, lo, hi) = summary(&results[i]);
        let (am, alo, ahi) = summary(&added[i]);
        let (add, vs) = if i == 0 {
            ("–".to_string(), "–".to_string())
        } else {
            let (rm, rlo, rhi) = ratio(i, 1);
            (
                format!("{am:.1} ({alo:.1}–{ahi:.1})"),
                format!("{rm:.2}× ({rlo:.2}–{rhi:.2})"),
            )
        };
        println!(
            "| {} | {m:.1} ({lo:.1}–{hi:.1}) | {add} | {vs} |",
            s.label()
        );
    }
    println!();
    let at = |want: Setup| setups.iter().position(|&s| s == want);
    let (nw_i, clock_i, plain_i) = (
        at(Setup::Nodewatch).unwrap_or(0),
        at(Setup::Clock).unwrap_or(0),
        at(Setup::Plain).unwrap_or(0),
    );
    let (nw, _, _) = summary(&added[nw_i]);
    let (vs_floor, _, _) = ratio(nw_i, 1);
    let totals: Vec<f64> = results[nw_i]
        .iter()
        .zip(&results[1])
        .map(|(a, b)| a / b)
        .collect();
    let (tot, _, _) = summary(&totals);
    println!(
        "nodewatch: {nw:.1} ns added per syscall, {vs_floor:.2}× the empty-program floor's added cost (target ≤ 1.5×); per-call time {tot:.2}× the floor's"
    );
    let (clock, _, _) = ratio(clock_i, 1);
    let (plain, _, _) = ratio(plain_i, 1);
    let (nw_vs_plain, _, _) = ratio(nw_i, plain_i);
    println!(
        "references: two clock reads alone {clock:.2}× the floor; histogram without cgroups {plain:.2}× the floor; nodewatch {nw_vs_plain:.2}× the histogram without cgroups"
    );
    if let Some(bt_i) = at(Setup::Bpftrace) {
        let (bt, _, _) = summary(&added[bt_i]);
        let (cheaper, lo, hi) = ratio(bt_i, nw_i);
        println!(
            "bpftrace: {bt:.1} ns added per syscall; nodewatch is {cheaper:.1}× cheaper ({lo:.1}–{hi:.1}) (target ≥ 5×)"
        );
    }
    if o.bpf_stats {
        println!();
        bpf_stats(&helper, &o)?;
    }
    Ok(())
}

/// `run_time_ns` and `run_cnt` of every loaded program named `nw_*`, by name
/// (from `bpftool -j prog show`).
fn program_stats() -> anyhow::Result<std::collections::BTreeMap<String, (u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("cannot run bpftool")?;
    if !out.status.success() {
        bail!("bpftool prog show failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool output")?;
    let mut m = std::collections::BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        if name.starts_with("nw_") {
            let t = p["run_time_ns"].as_u64().unwrap_or(0);
            let c = p["run_cnt"].as_u64().unwrap_or(0);
            m.insert(name.to_string(), (t, c));
        }
    }
    Ok(m)
}

/// Restores `kernel.bpf_stats_enabled` when dropped.
struct StatsSwitch(String);

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl Drop for StatsSwitch {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, &self.0);
    }
}

/// Per program, nanoseconds per run from the kernel's BPF statistics, over
/// `calls` getppid calls after a warm-up (long enough for the tracer to give
/// this process's cgroup its slot). The statistics' own clock reads are in
/// every figure; the empty programs show how much that is.
fn bpf_stats(helper: &std::path::Path, o: &Options) -> anyhow::Result<()> {
    if Command::new("bpftool").arg("version").output().is_err() {
        crate::bootstrap::apt_install(&["bpftool"])?;
    }
    let old = std::fs::read_to_string(STATS_SYSCTL).context("kernel.bpf_stats_enabled")?;
    let _restore = StatsSwitch(old.trim().to_string());
    std::fs::write(STATS_SYSCTL, "1").context("cannot enable kernel.bpf_stats_enabled")?;
    println!(
        "| program | ns per run (kernel BPF statistics, {} calls) | minus the empty program on the same hook |",
        o.calls
    );
    println!("|---|---|---|");
    let mut empty: [f64; 2] = [0.0; 2];
    for mode in ["empty", "clock", "plain", "full"] {
        let attached = attach_helper(helper, mode, &o.hook)?;
        measure(100_000);
        std::thread::sleep(Duration::from_millis(1500));
        measure(100_000);
        let a = program_stats()?;
        for _ in 0..o.calls {
            // SAFETY: getppid has no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        let b = program_stats()?;
        drop(attached);
        for (name, &(t1, c1)) in &b {
            let Some(&(t0, c0)) = a.get(name) else {
                continue;
            };
            if c1 <= c0 {
                continue;
            }
            let per = (t1 - t0) as f64 / (c1 - c0) as f64;
            let side = usize::from(name.contains("exit"));
            if mode == "empty" {
                empty[side] = per;
            }
            println!(
                "| {name} | {per:.1} | {:.1} |",
                if mode == "empty" {
                    0.0
                } else {
                    per - empty[side]
                }
            );
        }
    }
    Ok(())
}
