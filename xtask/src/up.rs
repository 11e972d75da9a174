//! `cargo xtask up`: build release binaries, start a collector and an agent for
//! this host, show how to query them, stop both cleanly on Ctrl-C.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{cargo, workspace_root};

/// Options of `cargo xtask up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Collector listen address.
    #[arg(long, default_value = "127.0.0.1:7077")]
    listen: SocketAddr,
    /// Collector data directory [default: .nodewatch/data in the workspace].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Agent sampling interval.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Stop by itself after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    exit_after: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn stop(child: &mut Child, name: &str) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            eprintln!("up: {name} stopped");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("up: {name} did not stop within 10 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cargo xtask up`.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    install_signal_handlers();
    eprintln!("up: building release binaries");
    cargo(&[
        "build",
        "--release",
        "-p",
        "nodewatch-agent",
        "-p",
        "nodewatch-collector",
        "-p",
        "nodewatch-cli",
    ])?;
    let root = workspace_root();
    let bin = root.join("target/release");
    let state = root.join(".nodewatch");
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| state.join("data"));

    let collector_log = logs.join("collector.log");
    let mut collector = spawn(
        &bin.join("nodewatch-collector"),
        &[
            "--listen".into(),
            args.listen.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ],
        &collector_log,
    )?;
    let started = Instant::now();
    while TcpStream::connect_timeout(&args.listen, Duration::from_millis(200)).is_err() {
        if let Some(status) = collector.try_wait()? {
            bail!(
                "collector exited with {status} before listening; its log ({}):\n{}",
                collector_log.display(),
                tail(&collector_log)
            );
        }
        if started.elapsed() > Duration::from_secs(10) {
            stop(&mut collector, "collector");
            bail!("collector did not listen on {} within 10 s", args.listen);
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let agent_log = logs.join("agent.log");
    let mut agent = match spawn(
        &bin.join("nodewatch-agent"),
        &[
            "--collector".into(),
            format!("http://{}", args.listen),
            "--interval".into(),
            args.interval.clone(),
            "--spool-dir".into(),
            state.join("spool").display().to_string(),
        ],
        &agent_log,
    ) {
        Ok(a) => a,
        Err(e) => {
            stop(&mut collector, "collector");
            return Err(e);
        }
    };

    let cli = bin.join("nodewatch");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut listed = false;
    while started.elapsed() < Duration::from_secs(10) && !STOP.load(Ordering::SeqCst) {
        let out = Command::new(&cli)
            .args([
                "--collector",
                &args.listen.to_string(),
                "hosts",
                "--output",
                "json",
            ])
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = out
            && let Ok(serde_json::Value::Array(hosts)) = serde_json::from_slice(&out.stdout)
            && hosts.iter().any(|h| {
                h["hostname"] == hostname.as_str()
                    && h["memory_total_bytes"].as_u64().unwrap_or(0) > 0
            })
        {
            listed = true;
            break;
        }
        if agent.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !listed {
        stop(&mut agent, "agent");
        stop(&mut collector, "collector");
        bail!(
            "the agent's host did not show up within 10 s.\nagent log ({}):\n{}\ncollector log ({}):\n{}",
            agent_log.display(),
            tail(&agent_log),
            collector_log.display(),
            tail(&collector_log)
        );
    }

    let addr = args.listen.to_string();
    let cli_rel = "./target/release/nodewatch";
    let collector_flag = if addr == "127.0.0.1:7077" {
        String::new()
    } else {
        format!(" --collector {addr}")
    };
    println!(
        "\nnodewatch is up ({:.1} s): collector on {addr} (data in {}), agent sampling host {hostname:?} every {}.\n\n\
         Query it:\n  \
         {cli_rel}{collector_flag} hosts\n  \
         {cli_rel}{collector_flag} host {hostname}\n  \
         {cli_rel}{collector_flag} hosts --output json\n\n\
         Inspect the gRPC API through reflection (grpcurl):\n  \
         grpcurl -plaintext {addr} list\n  \
         grpcurl -plaintext {addr} describe nodewatch.v1.Query\n  \
         grpcurl -plaintext -d '{{}}' {addr} nodewatch.v1.Query/ListHosts\n  \
         grpcurl -plaintext -d '{{\"host\": \"{hostname}\"}}' {addr} nodewatch.v1.Query/GetHost\n  \
         grpcurl -plaintext {addr} grpc.health.v1.Health/Check\n\n\
         Logs: {} and {}\n\
         Press Ctrl-C to stop both.",
        started.elapsed().as_secs_f64(),
        data_dir.display(),
        args.interval,
        collector_log.display(),
        agent_log.display(),
    );

    let deadline =
        (args.exit_after > 0).then(|| Instant::now() + Duration::from_secs(args.exit_after));
    let mut failed = None;
    while !STOP.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        if let Some(status) = agent.try_wait()? {
            failed = Some(format!(
                "agent exited with {status}; log:\n{}",
                tail(&agent_log)
            ));
            break;
        }
        if let Some(status) = collector.try_wait()? {
            failed = Some(format!(
                "collector exited with {status}; log:\n{}",
                tail(&collector_log)
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("\nup: stopping agent and collector");
    stop(&mut agent, "agent");
    stop(&mut collector, "collector");
    match failed {
        Some(msg) => bail!(msg),
        None => Ok(()),
    }
}
