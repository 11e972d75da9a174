//! `syscall_latency` end to end with the agent's eBPF tracing (root, BTF): a
//! process in its own cgroup whose fsyncs become slow for real (each one
//! flushes 128 MiB of dirty pages to the disk instead of 4 KiB) fires the rule
//! naming the cgroup and the "file" family, against its own baseline.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// 10 s of small fsyncs (the baseline), then fsyncs of 128 MiB rewritten in place.
const FSYNCER: &str = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o600)
end = time.time() + 10
while time.time() < end:
    os.pwrite(fd, b"x" * 4096, 0)
    os.fsync(fd)
    time.sleep(0.05)
print("slow", flush=True)
big = b"y" * (128 << 20)
while True:
    os.pwrite(fd, big, 0)
    os.fsync(fd)
    time.sleep(0.3)
"#;

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Move anything left to the root, then remove the directory.
        if let (Ok(procs), Some(root)) = (
            std::fs::read_to_string(self.0.join("cgroup.procs")),
            self.0.parent(),
        ) {
            for pid in procs.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn slow_fsyncs_in_a_cgroup_fire_syscall_latency() {
    if !is_root() {
        println!("skipping: eBPF and cgroups need root");
        return;
    }
    let Some(root) = cgroup2_root() else {
        println!("skipping: no cgroup2 hierarchy mounted");
        return;
    };
    let name = format!("nodewatch-fsync-{}", std::process::id());
    let cg = Cgroup(root.join(&name));
    if let Err(e) = std::fs::create_dir(&cg.0) {
        println!("skipping: cannot create cgroup {}: {e}", cg.0.display());
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n\
         [rules.syscall_latency]\nwindow = \"2s\"\nbaseline = \"20s\"\nfor = \"1s\"\n\
         min_latency = \"25ms\"\nmin_calls = 3\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    // The busy machine of a test run must not make the programs back off.
    let agent_config = write_file(dir.path(), "agent.toml", "[ebpf]\ncpu_budget = 0.5\n");
    let ag = agent_ebpf(addr, dir.path(), &["--config", &agent_config]);
    let host = wait_for(Duration::from_secs(30), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));
    let ebpf = wait_for(Duration::from_secs(10), || {
        let h = find_host(&hosts_json(addr), host["host_id"].as_str()?)?;
        (h["ebpf"]["state"] != "unknown").then(|| h["ebpf"].clone())
    })
    .unwrap_or_default();
    if ebpf["state"] != "active" {
        println!("skipping: the agent's eBPF is not active here: {ebpf}");
        return;
    }

    let file = dir.path().join("fsynced");
    let procs = cg.0.join("cgroup.procs");
    let mut kid = Kid(Command::new("bash")
        .args([
            "-c",
            &format!(
                "echo $$ > {} && exec python3 -c '{FSYNCER}' {}",
                procs.display(),
                file.display()
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let mut line = String::new();
    BufReader::new(kid.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "slow");
    let t0 = Instant::now();
    // Nothing during the baseline.
    let early = find_alert(addr, "syscall_latency", true, |a| {
        a["subject"]["cgroup"] == name.as_str()
    });
    assert!(early.is_none(), "during the baseline: {early:?}");
    let alert = wait_for(Duration::from_secs(30), || {
        find_alert(addr, "syscall_latency", false, |a| {
            a["subject"]["cgroup"] == name.as_str() && a["state"] == "firing"
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no syscall_latency:\n{:?}\n{}",
            alerts_json(addr, &["--all"]),
            ag.log_text()
        )
    });
    println!(
        "syscall_latency fired {:?} after the fsyncs slowed: {}",
        t0.elapsed(),
        alert["summary"]
    );
    assert_eq!(alert["subject"]["resource"], "file");
    assert_eq!(alert["severity"], "high");
    let p99 = alert["evidence"]["values"]["p99"]["value"]
        .as_f64()
        .unwrap();
    let base = alert["evidence"]["values"]["baseline_p99"]["value"]
        .as_f64()
        .unwrap();
    assert!(
        p99 >= 5e6 && p99 >= 10.0 * base,
        "p99 {p99} baseline {base}"
    );
}
