//! End to end with the real binaries: nodewatch-collector, nodewatch-agent, nodewatch.

mod support;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn agent_host_is_listed_within_10s_with_figures_matching_proc() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let start = Instant::now();
    let _collector = collector(addr, dir.path(), &[]);
    let agent = agent(addr, dir.path(), &["--interval", "1s"]);
    let id = machine_id();
    let host = wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), &id).filter(|h| h["memory_total_bytes"].as_u64() > Some(0))
    })
    .unwrap_or_else(|| {
        panic!(
            "host not listed within 10 s; agent log:\n{}",
            agent.log_text()
        )
    });
    assert!(start.elapsed() < Duration::from_secs(10));

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(host["hostname"], hostname.trim());
    assert_eq!(host["connected"], true);
    assert_eq!(
        host["memory_total_bytes"].as_u64().unwrap(),
        meminfo_kib("MemTotal:") * 1024
    );
    let available = host["memory_available_bytes"].as_u64().unwrap() as f64;
    let now_available = (meminfo_kib("MemAvailable:") * 1024) as f64;
    assert!(
        (available - now_available).abs() / now_available < 0.10,
        "available {available} vs /proc {now_available}"
    );
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes()[3].is_ascii_digit())
        .count();
    assert_eq!(host["cpu_count"].as_u64().unwrap() as usize, cpus);
    let load1: f64 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((host["load1"].as_f64().unwrap() - load1).abs() < 2.0);

    // The second batch carries a CPU busy ratio computed over the interval.
    let host = wait_for(Duration::from_secs(5), || {
        find_host(&hosts_json(addr), &id).filter(|h| h["batches_received"].as_u64() >= Some(2))
    })
    .unwrap();
    let busy = host["cpu_busy_ratio"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&busy), "busy ratio {busy}");

    // `nodewatch host` shows the same host as a table and as JSON with the latest batch.
    let out = cli(addr, &["host", hostname.trim()]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&id) && table.contains("memory"), "{table}");
    let out = cli(addr, &["host", &id[..8], "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["host_id"], id.as_str());
    assert!(doc["latest"]["memory"]["total_bytes"].as_u64() > Some(0));
    assert!(doc["latest"]["cpu"]["per_cpu"].as_array().map(Vec::len) == Some(cpus));
}

#[test]
fn agent_reconnects_after_collector_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut c1 = collector(addr, dir.path(), &[]);
    let agent = agent(addr, dir.path(), &["--host-id", "reconnect-test-host"]);
    wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), "reconnect-test-host")
            .filter(|h| h["batches_received"].as_u64() >= Some(2))
    })
    .unwrap_or_else(|| panic!("no data before restart:\n{}", agent.log_text()));

    c1.terminate();
    // While the collector is away the agent keeps sampling.
    std::thread::sleep(Duration::from_millis(1500));
    let _c2 = collector(addr, dir.path(), &[]);
    let host = wait_for(Duration::from_secs(15), || {
        find_host(&hosts_json(addr), "reconnect-test-host")
            .filter(|h| h["connected"] == true && h["batches_received"].as_u64() >= Some(8))
    })
    .unwrap_or_else(|| {
        panic!(
            "agent did not reconnect and send again:\n{}",
            agent.log_text()
        )
    });
    // Batches sampled during the outage were kept and replayed (seq continuity):
    // at 200 ms per batch, 1.5 s of outage is several batches.
    assert!(host["batches_received"].as_u64().unwrap() >= 8);
    let log = agent.log_text();
    assert!(log.contains("collector unreachable"), "{log}");
    assert!(log.contains("reconnected to collector"), "{log}");
}

#[test]
fn garbage_and_protocol_violations_do_not_hurt_other_agents() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let collector = collector(addr, dir.path(), &[]);
    let good = agent(addr, dir.path(), &["--host-id", "good-agent"]);
    wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), "good-agent")
    })
    .unwrap_or_else(|| panic!("good agent missing:\n{}", good.log_text()));

    // Raw garbage: not HTTP/2 at all; the collector closes the connection.
    for payload in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff\xff"[..],
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(payload);
        let mut buf = [0u8; 1024];
        // Either an error/short answer then EOF, or a reset: never a hang.
        let mut total = 0;
        loop {
            match std::io::Read::read(&mut s, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            assert!(total < 1 << 20);
        }
    }

    // The good agent keeps streaming and queries keep working.
    let before = find_host(&hosts_json(addr), "good-agent").unwrap()["batches_received"]
        .as_u64()
        .unwrap();
    let after = wait_for(Duration::from_secs(5), || {
        find_host(&hosts_json(addr), "good-agent")
            .and_then(|h| h["batches_received"].as_u64())
            .filter(|n| *n > before + 2)
    });
    assert!(after.is_some(), "collector log:\n{}", collector.log_text());
}

#[test]
fn cli_explains_an_unreachable_collector() {
    let addr = free_addr();
    let out = cli(addr, &["hosts"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the collector"), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
}

#[test]
fn non_loopback_listen_needs_insecure_listen() {
    let out = std::process::Command::new(bin("nodewatch-collector"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-listen"), "{err}");
}

#[test]
fn hosts_watch_streams_live_updates() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _collector = collector(addr, dir.path(), &[]);
    let agent = agent(addr, dir.path(), &["--host-id", "watched-host"]);
    wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), "watched-host")
    })
    .unwrap_or_else(|| panic!("agent did not report:\n{}", agent.log_text()));
    let out = cli(
        addr,
        &[
            "hosts",
            "--watch",
            "--interval",
            "300ms",
            "--count",
            "4",
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let updates: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(updates.len(), 4);
    // Each update is a fresh listing: the agent's batch count grows across them.
    let batches: Vec<u64> = updates
        .iter()
        .map(|u| {
            find_host(u.as_array().unwrap(), "watched-host").unwrap()["batches_received"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(batches.last() > batches.first(), "{batches:?}");
}
