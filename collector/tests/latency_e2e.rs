//! Syscall latency end to end with the real binaries: the agent's eBPF
//! programs → collector → `nodewatch latency --output json`. Needs root (the
//! agent loads eBPF programs); prints `skipping: <reason>` otherwise.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{bin, cli, collector, free_addr, wait_for};

#[test]
fn latency_of_a_getppid_loop_reaches_the_cli() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping: the agent needs root to load eBPF programs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut coll = collector(addr, dir.path(), &[]);
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut agent = Command::new(bin("nodewatch-agent"))
        .args([
            "--collector",
            &format!("http://{addr}"),
            "--interval",
            "200ms",
            "--host-id",
            "latency-e2e",
            "--spool-dir",
        ])
        .arg(dir.path().join("spool"))
        .env_remove("NODEWATCH_NO_EBPF")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let active = wait_for(Duration::from_secs(15), || {
        let l = agent_log();
        if l.contains("ebpf: active") {
            Some(true)
        } else if l.contains("ebpf: unavailable") {
            Some(false)
        } else {
            None
        }
    });
    if active != Some(true) {
        let _ = agent.kill();
        let _ = agent.wait();
        coll.terminate();
        println!("skipping: eBPF not active in the agent: {}", agent_log());
        return;
    }
    const N: u64 = 30_000;
    for _ in 0..N {
        // SAFETY: getppid cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let entry = wait_for(Duration::from_secs(15), || {
        let out = cli(
            addr,
            &[
                "latency",
                "latency-e2e",
                "--syscall",
                "getppid",
                "--output",
                "json",
            ],
        );
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let e = v["entries"].as_array()?.first()?.clone();
        (e["count"].as_u64()? >= N).then_some(e)
    });
    let table = cli(addr, &["latency", "latency-e2e", "--syscall", "getppid"]);
    let _ = agent.kill();
    let _ = agent.wait();
    coll.terminate();
    let entry =
        entry.unwrap_or_else(|| panic!("getppid latency never reached the CLI: {}", agent_log()));
    assert_eq!(entry["syscall"], "getppid");
    assert_eq!(entry["cgroup"], "");
    assert_eq!(entry["errors"], 0);
    // Other processes rarely call getppid; allow a little slack.
    assert!(entry["count"].as_u64().unwrap() <= N + 1000, "{entry}");
    assert!(entry["p50_ns"].as_u64().unwrap() > 0);
    assert!(entry["p50_ns"].as_u64() <= entry["max_ns"].as_u64());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains("getppid") && text.contains('█'),
        "{text}"
    );
}
