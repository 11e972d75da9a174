//! End to end with the real binaries: an agent with its passes shrunk to 1 s
//! by configuration, a collector, and `nodewatch top | disks | conns`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{agent, cli, collector, free_addr, hosts_json, wait_for};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(out: &std::process::Output) -> Option<serde_json::Value> {
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[test]
fn top_disks_and_conns_show_the_agents_samples() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut coll = collector(addr, dir.path(), &[]);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[samplers]\nprocess_interval = \"1s\"\nsocket_interval = \"1s\"\ndisk_interval = \"1s\"\n",
    )
    .unwrap();
    let config_s = config.display().to_string();
    let mut ag = agent(
        addr,
        dir.path(),
        &["--interval", "1s", "--config", &config_s],
    );
    // A process with a known descriptor limit.
    let child = Child(
        Command::new("bash")
            .args(["-c", "ulimit -n 300 && exec sleep 60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();

    let host = wait_for(Duration::from_secs(20), || {
        hosts_json(addr)
            .first()
            .and_then(|h| h["host_id"].as_str().map(str::to_string))
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));

    let found = wait_for(Duration::from_secs(20), || {
        let doc = json(&cli(
            addr,
            &[
                "top", &host, "--by", "fds", "--limit", "1000", "--output", "json",
            ],
        ))?;
        doc["processes"]
            .as_array()?
            .iter()
            .find(|p| p["pid"] == pid && p["name"] == "sleep")
            .cloned()
    })
    .unwrap_or_else(|| panic!("child not in top:\n{}", ag.log_text()));
    assert_eq!(found["fd_limit_soft"], 300);
    assert_eq!(found["fd_limit_hard"], 300);

    let out = cli(addr, &["top", &host, "--by", "rss"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("  PID") || text.contains("PID"), "{text}");

    let disks = wait_for(Duration::from_secs(10), || {
        json(&cli(addr, &["disks", &host, "--output", "json"]))
    })
    .unwrap();
    let fs = disks["filesystems"].as_array().unwrap();
    assert!(
        fs.iter()
            .any(|f| f["mount_point"] == "/" && f["size_bytes"].as_u64() > Some(0)),
        "{disks}"
    );
    assert!(cli(addr, &["disks", &host]).status.success());

    // The collector's own listener is reported with its pid.
    let port = u64::from(addr.port());
    let coll_pid = coll.child.id();
    let listener = wait_for(Duration::from_secs(10), || {
        let doc = json(&cli(addr, &["conns", &host, "--output", "json"]))?;
        doc["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["port"] == port)
            .cloned()
    })
    .unwrap();
    assert_eq!(listener["pid"], coll_pid);
    let out = cli(addr, &["conns", &host]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("LISTEN"));

    ag.terminate();
    coll.terminate();
}
