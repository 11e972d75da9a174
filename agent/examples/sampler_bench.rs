//! Sampling workload driven by `cargo xtask bench samplers` over stdin/stdout.
//! The bench measures this process's CPU from /proc while it works.
//!
//! Started as `sampler_bench full` (every cadence due at every cycle),
//! `host` / `sockets` / `processes` (one part of a full cycle: CPU + memory +
//! disks, the socket pass, the process pass) or `defaults` (the agent's
//! default configuration). It runs one
//! warm-up cycle, prints `ready`, then serves commands (one per line, each
//! answered by one line):
//! - `cycles N`: N cycles back to back, each batch encoded as the agent would
//!   send it. Answers `done <encoded bytes of the last batch> <processes> <sockets>`.
//! - `run SECONDS`: one cycle per second for SECONDS, as the agent's loop does.
//!   Answers `done <batches>`.
//! - `rss`: answers `rss <VmRSS kB> <VmHWM kB>`.
//! - `quit`.

use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use nodewatch_agent::samplers::config::SamplersConfig;
use nodewatch_agent::samplers::registry::SamplerRegistry;
use nodewatch_proto::pb;
use prost::Message as _;

fn full_config() -> SamplersConfig {
    SamplersConfig {
        disk_interval: Duration::ZERO,
        process_interval: Duration::ZERO,
        socket_interval: Duration::ZERO,
        // PSS stays on its own slow cadence: it is not part of a regular cycle.
        ..SamplersConfig::default()
    }
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn cycle(registry: &mut SamplerRegistry) -> (usize, usize, u64) {
    let mut batch = pb::Batch::default();
    registry.sample(&mut batch, Instant::now());
    let bytes = batch.encode_to_vec().len();
    let sockets: u64 = batch
        .connections
        .as_ref()
        .map(|c| c.tcp_states.iter().map(|s| s.count).sum())
        .unwrap_or(0);
    (bytes, batch.processes.len(), sockets)
}

fn main() {
    let only = |cpu, disks, connections, processes| SamplersConfig {
        cpu,
        memory: cpu,
        disks,
        connections,
        processes,
        ..full_config()
    };
    let config = match std::env::args().nth(1).as_deref() {
        Some("full") => full_config(),
        Some("host") => only(true, true, false, false),
        Some("sockets") => only(false, false, true, false),
        Some("processes") => only(false, false, false, true),
        Some("defaults") => SamplersConfig::default(),
        _ => {
            eprintln!("usage: sampler_bench full|host|sockets|processes|defaults");
            std::process::exit(2);
        }
    };
    let mut registry = SamplerRegistry::new(&config);
    let mut out = std::io::stdout().lock();
    // Warm-up: the first pass opens every per-process file.
    cycle(&mut registry);
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("cycles"), Some(n)) => {
                let mut last = (0, 0, 0);
                for _ in 0..n.min(10_000) {
                    last = cycle(&mut registry);
                }
                let _ = writeln!(out, "done {} {} {}", last.0, last.1, last.2);
            }
            (Some("run"), Some(secs)) => {
                let start = Instant::now();
                let mut next = start;
                let mut batches = 0u64;
                for _ in 0..secs.min(3600) {
                    next += Duration::from_secs(1);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    cycle(&mut registry);
                    batches += 1;
                }
                let _ = writeln!(out, "done {batches}");
            }
            (Some("rss"), _) => {
                let _ = writeln!(out, "rss {} {}", status_kb("VmRSS:"), status_kb("VmHWM:"));
            }
            (Some("quit"), _) => break,
            _ => {
                let _ = writeln!(out, "error unknown command");
            }
        }
        let _ = out.flush();
    }
}
