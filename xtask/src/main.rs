//! `cargo xtask`: project chores.
//!
//! - `bootstrap`: install the eBPF toolchain if missing (nightly rust-src, LLVM 22, bpf-linker).
//! - `build`: bootstrap, then build every binary.
//! - `up`: bootstrap, build release, run a collector and an agent for this host.
//! - `test`: bootstrap, then run every test (kernel tests included; root needed for those).
//! - `bench <name>`: on-demand benchmarks that report ratios against a reference.

mod bench;
mod bootstrap;
mod up;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// Project chores for nodewatch.
#[derive(Debug, Parser)]
#[command(about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what the build needs if missing: nightly rust-src, LLVM 22 dev files (apt, as root), bpf-linker.
    Bootstrap,
    /// Bootstrap, then build every binary.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Bootstrap, build release, then run a collector and an agent for this host until Ctrl-C.
    Up(up::UpArgs),
    /// Bootstrap, then run every test of the workspace (kernel tests need root).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run a benchmark: reports ratios against a reference measured in the same run.
    Bench {
        /// Which benchmark.
        name: BenchName,
        /// Extra arguments for the benchmark.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Available benchmarks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchName {
    /// Syscall tracing overhead vs the empty-program floor and bpftrace.
    Syscalls,
    /// Agent sampling CPU vs one node_exporter scrape.
    Samplers,
    /// Collector ingest CPU, bytes/sample and freshness vs Prometheus remote-write.
    Ingest,
    /// A collector outage with the agent's disk spool: loss, spool bytes per host-hour, replay speed, agent RSS.
    Outage,
}

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs cargo with `args` in the workspace root.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Debian's `prometheus-alertmanager`, which the Alertmanager scenario test
/// starts on loopback: installed with apt-get when missing.
fn ensure_alertmanager() -> anyhow::Result<()> {
    let present = Command::new("prometheus-alertmanager")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    bootstrap::apt_install(&["prometheus-alertmanager"])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Cmd::Bootstrap => bootstrap::ensure(),
        Cmd::Build { release } => {
            bootstrap::ensure()?;
            let mut a = vec!["build", "--workspace", "--bins"];
            if release {
                a.push("--release");
            }
            cargo(&a)
        }
        Cmd::Up(up_args) => {
            bootstrap::ensure()?;
            up::run(&up_args)
        }
        Cmd::Test { args } => {
            bootstrap::ensure()?;
            if let Err(e) = bootstrap::ensure_python_grpc() {
                // Only the Python reflection test needs it; it says it skips.
                eprintln!("bootstrap: {e:#}; the Python reflection test will skip");
            }
            if let Err(e) = ensure_alertmanager() {
                // Only the Alertmanager scenario test needs it; it says it skips.
                eprintln!("bootstrap: {e:#}; the Alertmanager test will skip");
            }
            // Integration tests start the real binaries of other packages.
            cargo(&["build", "--workspace", "--bins"])?;
            let mut a = vec!["test", "--workspace", "--all-targets"];
            if !args.is_empty() {
                a.push("--");
                a.extend(args.iter().map(String::as_str));
            }
            cargo(&a)
        }
        Cmd::Bench {
            name: BenchName::Samplers,
            args,
        } => {
            bootstrap::ensure()?;
            bench::samplers::run(&args)
        }
        Cmd::Bench {
            name: BenchName::Ingest,
            args,
        } => bench::ingest::run(&args),
        Cmd::Bench {
            name: BenchName::Outage,
            args,
        } => {
            bootstrap::ensure()?;
            bench::outage::run(&args)
        }
        Cmd::Bench { name, args } => {
            bootstrap::ensure()?;
            match name {
                BenchName::Syscalls => bench::syscalls::run(&args),
                _ => bail!("benchmark {name:?} is not available in this build"),
            }
        }
    }
}
