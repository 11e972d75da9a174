//! Attaches eBPF programs and keeps them attached until stdin closes (used by
//! `cargo xtask bench syscalls`).
//!
//! Usage: `ebpf_attach full|empty|plain|clock [auto|tp_btf|raw_tracepoint]`.
//! Prints `attached <hook>` on stdout once attached. `full` is the agent's
//! tracer, with the maps read every second as the agent does; the others are
//! reference programs on the same hooks (see `ProgramSet`).

use std::io::{BufRead as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nodewatch_agent::ebpf::{EbpfConfig, HookChoice, ProgramSet, ReferencePrograms, SyscallTracer};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "full".into());
    let hook = match args.next().as_deref() {
        None | Some("auto") => HookChoice::Auto,
        Some("tp_btf") => HookChoice::TpBtf,
        Some("raw_tracepoint") => HookChoice::RawTracepoint,
        Some(other) => anyhow::bail!("unknown hook {other}"),
    };
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in std::io::stdin().lock().lines() {}
            done.store(true, Ordering::Relaxed);
        });
    }
    match mode.as_str() {
        "empty" | "plain" | "clock" => {
            let set = match mode.as_str() {
                "empty" => ProgramSet::Empty,
                "plain" => ProgramSet::Plain,
                _ => ProgramSet::Clock,
            };
            let p = ReferencePrograms::attach(set, hook)?;
            println!("attached {}", p.hook().map(|h| h.as_str()).unwrap_or("?"));
            std::io::stdout().flush()?;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        "full" => {
            let config = EbpfConfig {
                hook,
                // The bench measures the programs themselves: no back-off.
                cpu_budget: 1.0,
                ..Default::default()
            };
            let mut t = SyscallTracer::start(&config)?;
            println!("attached {}", t.hook().as_str());
            std::io::stdout().flush()?;
            let mut ticks = 0u32;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                ticks += 1;
                if ticks.is_multiple_of(20) {
                    let _ = t.collect();
                }
            }
        }
        other => anyhow::bail!("unknown mode {other} (full|empty|plain|clock)"),
    }
    Ok(())
}
