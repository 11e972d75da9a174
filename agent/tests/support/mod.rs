//! Helpers shared by the integration tests: child processes killed on drop,
//! waiting for a condition, one sampling pass, and facts about this host.
//! Each test binary uses a subset.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodewatch_agent::samplers::config::SamplersConfig;
use nodewatch_agent::samplers::registry::SamplerRegistry;
use nodewatch_proto::pb;

/// A child process, killed and reaped on drop (also when a test fails).
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bash -c script` with stdin, stdout and stderr on /dev/null.
pub fn spawn_bash(script: &str) -> std::io::Result<KillOnDrop> {
    Command::new("bash")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
}

/// Calls `done` every `step` until it returns true (then true) or `timeout`
/// has passed (then false).
pub fn wait_until(timeout: Duration, step: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Waits (at most 10 s) until process `pid` is named `comm`, e.g. after an exec.
pub fn wait_for_comm(pid: u32, comm: &str) -> bool {
    wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    })
}

/// Runs the samplers due now into a new batch.
pub fn sample(registry: &mut SamplerRegistry) -> pb::Batch {
    let mut batch = pb::Batch::default();
    registry.sample(&mut batch, Instant::now());
    batch
}

/// Builds a registry for `config` and runs its first pass (every sampler is due).
pub fn sample_once(config: &SamplersConfig) -> pb::Batch {
    sample(&mut SamplerRegistry::new(config))
}

/// The default configuration without the host-wide samplers (CPU, memory,
/// disks): the socket and process passes only.
pub fn sockets_and_processes() -> SamplersConfig {
    SamplersConfig {
        cpu: false,
        memory: false,
        disks: false,
        ..SamplersConfig::default()
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Kernel release as (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The path of program `name` in PATH, if any.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
