//! The agent's disk spool with the real binaries: a collector outage with an
//! agent `kill -9` in the middle loses nothing and stores every batch once
//! under one run id; a tiny spool drops its oldest batches, counts them and
//! keeps the agent's memory bounded; an unusable spool directory is a clear
//! start-up error. Windows are shrunk through flags and configuration only.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nodewatch_proto::pb;
use nodewatch_proto::time::now_nanos;
use support::*;

/// The newest batch the collector holds for `host`: (seq, time), with the
/// agent's spool figures.
async fn latest(addr: SocketAddr, host: &str) -> Option<(u64, i64, Option<pb::AgentStats>)> {
    let mut client = pb::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .ok()?;
    let r = client
        .get_host(pb::GetHostRequest { host: host.into() })
        .await
        .ok()?
        .into_inner();
    let latest = r.latest?;
    Some((latest.seq, latest.time_unix_nano, latest.agent))
}

/// Times of the stored `memory_available_bytes` samples of `host` up to `end`
/// (every batch carries memory: one sample per batch).
async fn memory_sample_times(addr: SocketAddr, host: &str, end: i64) -> Vec<i64> {
    let Ok(mut client) = pb::query_client::QueryClient::connect(format!("http://{addr}")).await
    else {
        return Vec::new();
    };
    let Ok(r) = client
        .query_series(pb::QuerySeriesRequest {
            host: host.into(),
            metric: "memory_available_bytes".into(),
            start_unix_nano: now_nanos() - 3600 * 1_000_000_000,
            end_unix_nano: end,
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    let r = r.into_inner();
    assert!(r.series.len() <= 1, "{r:?}");
    r.series
        .first()
        .map(|s| s.points.iter().map(|p| p.time_unix_nano).collect())
        .unwrap_or_default()
}

async fn store_stats(addr: SocketAddr) -> pb::GetStoreStatsResponse {
    let mut client = pb::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client
        .get_store_stats(pb::GetStoreStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Every `key=<number or word>` value of `key` in a log, in order.
fn log_values(log: &str, key: &str) -> Vec<String> {
    let needle = format!("{key}=");
    log.match_indices(&needle)
        .map(|(i, _)| {
            log[i + needle.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| if m.is_dir() { 0 } else { m.len() })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn outage_with_agent_kill9_stores_every_batch_once() {
    const HOST: &str = "spool-outage-host";
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let spool = dir.path().join("spool").display().to_string();
    let args = ["--host-id", HOST, "--spool-dir", spool.as_str()];
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut c1 = collector(addr, dir.path(), &[]);
    let mut a1 = agent(addr, dir.path(), &args);
    wait_for(Duration::from_secs(15), || {
        find_host(&hosts_json(addr), HOST).filter(|h| h["batches_received"].as_u64() >= Some(5))
    })
    .unwrap_or_else(|| panic!("no data before the outage:\n{}", a1.log_text()));

    // The outage: the collector stops; the agent keeps spooling, is killed
    // with SIGKILL and started again while the collector is still away.
    c1.terminate();
    std::thread::sleep(Duration::from_millis(1500));
    a1.kill9();
    let _a2 = agent(addr, dir.path(), &args);
    std::thread::sleep(Duration::from_millis(1500));
    let back = now_nanos();
    let _c2 = collector(addr, dir.path(), &[]);

    // Once the collector holds batches sampled after it came back, the
    // backlog is through (the spool replays in seq order): every seq up to
    // the newest is stored, one memory sample per batch.
    let mut last = (0, 0, 0);
    let done = wait_for(Duration::from_secs(40), || {
        let (seq, time, _) = rt.block_on(latest(addr, HOST))?;
        if time < back + 1_000_000_000 {
            return None;
        }
        let times = rt.block_on(memory_sample_times(addr, HOST, time));
        last = (seq, times.len(), time);
        (times.len() as u64 == seq).then_some(times)
    });
    let log = a1.log_text();
    let times = done.unwrap_or_else(|| {
        panic!(
            "stored {} batches, newest seq {}: some were lost\n{log}",
            last.1, last.0
        )
    });
    assert!(times.windows(2).all(|w| w[0] < w[1]), "times repeat");
    assert!(
        times.len() >= 15,
        "outage too short to mean anything: {}",
        times.len()
    );

    // One run id for both agent processes (they share one log file).
    let runs = log_values(&log, "run_id");
    assert_eq!(runs.len(), 2, "{log}");
    assert_eq!(runs[0], runs[1], "{log}");
    assert!(log.contains("(resumed)"), "{log}");
    // Nothing was stored twice or under another run: no replayed batch
    // showed up as older than what the host already had.
    let stats = rt.block_on(store_stats(addr));
    assert_eq!(stats.out_of_order_batches, 0, "{stats:?}");
    assert_eq!(stats.rejected_past + stats.rejected_future, 0, "{stats:?}");
}

#[test]
fn tiny_spool_drops_the_oldest_counts_them_and_stays_bounded() {
    const HOST: &str = "spool-cap-host";
    const CAP: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let spool = dir.path().join("spool");
    let config = dir.path().join("agent.toml");
    // Big batches fast: every pass every 50 ms, so 1 MiB fills in seconds.
    std::fs::write(
        &config,
        format!(
            "spool_max_bytes = {CAP}\n[samplers]\nprocess_interval = \"50ms\"\nsocket_interval = \"50ms\"\ndisk_interval = \"50ms\"\n"
        ),
    )
    .unwrap();
    let spool_s = spool.display().to_string();
    let config_s = config.display().to_string();
    let mut a = agent(
        addr,
        dir.path(),
        &[
            "--host-id",
            HOST,
            "--spool-dir",
            &spool_s,
            "--config",
            &config_s,
            "--interval",
            "50ms",
        ],
    );
    let pid = a.child.id();
    wait_for(Duration::from_secs(60), || {
        a.log_text().contains("spool full").then_some(())
    })
    .unwrap_or_else(|| panic!("the spool never filled:\n{}", a.log_text()));
    let mut rss_max = 0;
    for _ in 0..20 {
        rss_max = rss_max.max(rss_kib(pid));
        let bytes = dir_bytes(&spool.join(format!("host-{HOST}")));
        // The cap, plus the small ledger and lock files.
        assert!(bytes <= CAP + 4096, "{bytes} bytes spooled");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        rss_max > 0 && rss_max < 64 * 1024,
        "agent RSS {rss_max} KiB"
    );

    // The collector comes up: the rest is delivered, the drops are reported.
    let _c = collector(addr, dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let back = now_nanos();
    let agent_stats = wait_for(Duration::from_secs(30), || {
        let (_, time, stats) = rt.block_on(latest(addr, HOST))?;
        (time > back).then_some(stats)
    })
    .unwrap_or_else(|| panic!("agent did not deliver:\n{}", a.log_text()));
    let out = cli(addr, &["host", HOST, "--output", "json"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    match agent_stats {
        Some(s) => {
            assert!(s.dropped_batches > 0, "{s:?}");
            // The count only grows (the agent may drop more while it drains).
            let shown = doc["spool"]["dropped_batches"].as_u64().unwrap_or(0);
            assert!(shown >= s.dropped_batches, "{doc} vs {s:?}");
            let table = cli(addr, &["host", HOST]);
            let text = String::from_utf8_lossy(&table.stdout);
            assert!(text.contains(" dropped"), "{text}");
        }
        None => panic!("GetHost does not carry the agent's spool figures"),
    }

    // Produced = stored + dropped + not yet acknowledged, by the agent's own count.
    a.terminate();
    let log = a.log_text();
    let value = |key: &str| -> u64 {
        log_values(&log, key)
            .last()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in:\n{log}"))
    };
    let (last_seq, dropped, unacked) =
        (value("last_seq"), value("dropped"), value("unacknowledged"));
    assert!(dropped > 0, "{log}");
    let stored = rt
        .block_on(memory_sample_times(addr, HOST, now_nanos()))
        .len() as u64;
    // (A batch in flight when its segment was dropped may be stored and
    // counted as dropped: the count errs on the side of reporting loss.)
    assert!(
        stored <= last_seq && last_seq <= stored + dropped + unacked,
        "stored {stored} + dropped {dropped} (+ unacked {unacked}) vs produced {last_seq}"
    );
}

#[test]
fn unusable_spool_dir_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(bin("nodewatch-agent"))
        .args(["--no-ebpf", "--host-id", "spool-bad-dir", "--spool-dir"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("spool directory"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert!(line.contains("--no-spool"), "{line}");
}
