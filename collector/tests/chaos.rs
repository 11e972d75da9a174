//! Chaos on loopback: simulated agents (writing the real protocol, keeping
//! every batch until it is acknowledged, as the agent does) and one real agent
//! (with its disk spool) stream while the real collector is killed with
//! SIGKILL, kept down and restarted, several times; the real agent is killed
//! with SIGKILL and restarted too. Afterwards every batch produced is stored
//! exactly once.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nodewatch_proto::time::now_nanos;
use support::*;

const AGENTS: usize = 4;

/// One simulated agent: produces a batch every 40 ms (time = its sample time),
/// keeps unacknowledged batches, resends them after every reconnect.
async fn run_agent(addr: SocketAddr, host: String, producing: Arc<AtomicBool>) -> u64 {
    let mut unacked: VecDeque<nodewatch_proto::pb::Batch> = VecDeque::new();
    let mut next_seq = 1u64;
    let mut next_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    'reconnect: loop {
        assert!(Instant::now() < deadline, "{host}: did not drain in time");
        let mut stream = match try_open_stream(addr, hello(&host, 7)).await {
            Ok(s) => s,
            Err(_) => {
                // Down: keep sampling meanwhile.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while producing.load(Ordering::Relaxed) && Instant::now() >= next_at {
                    unacked.push_back(batch(next_seq, now_nanos()));
                    next_seq += 1;
                    next_at += Duration::from_millis(40);
                }
                continue;
            }
        };
        while unacked.front().is_some_and(|b| b.seq <= stream.durable_seq) {
            unacked.pop_front();
        }
        loop {
            while producing.load(Ordering::Relaxed) && Instant::now() >= next_at {
                unacked.push_back(batch(next_seq, now_nanos()));
                next_seq += 1;
                next_at += Duration::from_millis(40);
            }
            let Some(b) = unacked.front().cloned() else {
                if !producing.load(Ordering::Relaxed) {
                    return next_seq - 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            match stream.send(b).await {
                Ok(acked) => {
                    while unacked.front().is_some_and(|b| b.seq <= acked) {
                        unacked.pop_front();
                    }
                }
                Err(_) => continue 'reconnect,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collector_killed_repeatedly_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    // Short cuts, so kills land with data in chunks and in the WAL.
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, "[store]\nchunk_duration = \"700ms\"\n").unwrap();
    let cfg_s = cfg.display().to_string();
    let mut collector = Some(support::collector(addr, dir.path(), &["--config", &cfg_s]));

    let real_host = "chaos-real";
    let real_args = ["--host-id", real_host];
    let mut real = Some(support::agent(addr, dir.path(), &real_args));
    let producing = Arc::new(AtomicBool::new(true));
    let agents: Vec<_> = (0..AGENTS)
        .map(|i| tokio::spawn(run_agent(addr, format!("chaos-{i}"), producing.clone())))
        .collect();

    // Three kill -9 / down / restart cycles, with different down times; the
    // real agent is killed during the second outage and started again.
    for (i, down_ms) in [300u64, 1200, 600].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(mut c) = collector.take() {
            c.kill9();
        }
        if i == 1
            && let Some(mut a) = real.take()
        {
            tokio::time::sleep(Duration::from_millis(down_ms / 2)).await;
            a.kill9();
            real = Some(support::agent(addr, dir.path(), &real_args));
            tokio::time::sleep(Duration::from_millis(down_ms / 2)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
        }
        collector = Some(support::collector(addr, dir.path(), &["--config", &cfg_s]));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    producing.store(false, Ordering::Relaxed);
    let mut produced = Vec::new();
    for a in agents {
        produced.push(a.await.unwrap());
    }

    for (i, &last) in produced.iter().enumerate() {
        let host = format!("chaos-{i}");
        let pts = load1(addr, &host).await;
        let mut seqs: Vec<u64> = pts.iter().map(|p| p.1 as u64).collect();
        let n = seqs.len();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "{host}: a batch stored twice");
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "{host}: produced 1..={last}, stored {} batches",
            n
        );
    }
    assert!(produced.iter().all(|&n| n > 50), "{produced:?}");

    // The real agent: every seq up to its newest stored batch is there once
    // (one memory sample per batch; one run across the kill, seqs from 1).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seq = query(addr)
            .await
            .get_host(nodewatch_proto::pb::GetHostRequest {
                host: real_host.into(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().latest)
            .map_or(0, |b| b.seq);
        let stored = query(addr)
            .await
            .query_series(nodewatch_proto::pb::QuerySeriesRequest {
                host: real_host.into(),
                metric: "memory_available_bytes".into(),
                start_unix_nano: now_nanos() - 600 * 1_000_000_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .series
            .first()
            .map_or(0, |s| s.points.len() as u64);
        if seq > 20 && stored == seq {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "real agent: newest seq {seq}, {stored} batches stored:\n{}",
            real.as_ref().map(|a| a.log_text()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(real);
    drop(collector);
}
