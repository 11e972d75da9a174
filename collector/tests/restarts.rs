//! Restarts through the real binaries: everything the collector acknowledged
//! before it stopped is queryable after it starts again.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nodewatch_proto::pb;
use nodewatch_proto::time::now_nanos;
use support::*;

const SEC: i64 = 1_000_000_000;

/// Raw sample times of `memory_available_bytes` of `host` over the last 10 minutes.
async fn sample_times(addr: SocketAddr, host: &str) -> Vec<i64> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = pb::query_client::QueryClient::new(channel)
        .query_series(pb::QuerySeriesRequest {
            host: host.into(),
            metric: "memory_available_bytes".into(),
            start_unix_nano: now_nanos() - 600 * SEC,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.series
        .first()
        .map(|s| s.points.iter().map(|p| p.time_unix_nano).collect())
        .unwrap_or_default()
}

/// An agent restarts (a new run), streams a while, then the collector is
/// stopped with SIGTERM and started again: the second run's batches, all of
/// them acknowledged, must still be there. (They were lost when the host
/// record written at the second run's Hello made WAL replay take them for
/// out-of-order batches.)
#[tokio::test(flavor = "multi_thread")]
async fn batches_acknowledged_after_an_agent_restart_survive_a_collector_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let host = "restart-host";
    let mut collector = collector(addr, dir.path(), &[]);
    let mut first = agent(addr, dir.path(), &["--host-id", host]);
    wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), host).filter(|h| h["batches_received"].as_u64() >= Some(5))
    })
    .unwrap_or_else(|| panic!("first run did not report:\n{}", first.log_text()));
    first.terminate();

    let mut second = agent(addr, dir.path(), &["--host-id", host]);
    let before_second = sample_times(addr, host).await.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample_times(addr, host).await.len() < before_second + 10 {
        assert!(
            Instant::now() < deadline,
            "second run did not stream:\n{}",
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.terminate();
    let acknowledged = sample_times(addr, host).await;
    collector.terminate();

    let _collector = support::collector(addr, dir.path(), &[]);
    let after = sample_times(addr, host).await;
    let missing: Vec<i64> = acknowledged
        .iter()
        .filter(|t| !after.contains(t))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged samples missing after the restart (first missing at {}):\n{}",
        missing.len(),
        acknowledged.len(),
        missing[0],
        std::fs::read_to_string(
            dir.path()
                .join(format!("nodewatch-collector-{}.log", std::process::id()))
        )
        .unwrap_or_default()
    );
    assert_eq!(after.len(), acknowledged.len());
}

/// SIGTERM on the collector with agents and a host watch connected: streams
/// end cleanly and promptly (no forced close after the grace period, no HTTP/2
/// error on the agent), and the agent reconnects to the next collector.
#[test]
fn sigterm_ends_streams_cleanly_and_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let host = "clean-stop";
    let mut collector = collector(addr, dir.path(), &[]);
    let agent = agent(addr, dir.path(), &["--host-id", host]);
    wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), host).filter(|h| h["batches_received"].as_u64() >= Some(3))
    })
    .unwrap_or_else(|| panic!("agent did not report:\n{}", agent.log_text()));
    let mut watch = std::process::Command::new(bin("nodewatch"))
        .args([
            "--collector",
            &addr.to_string(),
            "hosts",
            "--watch",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    collector.terminate();
    let took = started.elapsed();
    let log = collector.log_text();
    assert!(
        took < Duration::from_secs(2),
        "collector took {took:?} to stop:\n{log}"
    );
    assert!(!log.contains("still open after"), "{log}");
    // The watch ends with the stream, not with an error.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "host watch still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = status;

    let _collector = support::collector(addr, dir.path(), &[]);
    let before = find_host(&hosts_json(addr), host).unwrap()["batches_received"]
        .as_u64()
        .unwrap_or(0);
    wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), host)
            .filter(|h| h["connected"] == true && h["batches_received"].as_u64() > Some(before))
    })
    .unwrap_or_else(|| panic!("agent did not come back:\n{}", agent.log_text()));
    let agent_log = agent.log_text();
    assert!(
        !agent_log.to_lowercase().contains("protocol error"),
        "{agent_log}"
    );
}
