//! The real collector binary with its store: kill -9 keeps every acknowledged
//! batch, replays are stored once, bad input gets clear statuses.

mod support;

use std::time::{Duration, Instant};

use nodewatch_proto::time::now_nanos;

use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use support::*;

const SEC: i64 = 1_000_000_000;
const HOST: &str = "0123456789abcdef0123456789abcdef";

fn batch(seq: u64, t: i64, procs: u32) -> pb::Batch {
    pb::Batch {
        processes: processes(procs),
        ..support::batch(seq, t)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_keeps_every_acknowledged_batch_and_replay_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    // Short cuts so the kill lands with data both in chunks and in the WAL.
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, "[store]\nchunk_duration = \"300ms\"\n").unwrap();
    let cfg_s = cfg.display().to_string();
    let mut collector = collector(addr, dir.path(), &["--config", &cfg_s]);
    let t0 = now_nanos() - 3600 * SEC;
    let mut s = open_stream(addr, hello(HOST, 42)).await;
    assert_eq!(s.durable_seq, 0);
    let started = Instant::now();
    let mut acked = 0;
    let mut seq = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        seq += 1;
        acked = s
            .send(batch(seq, t0 + seq as i64 * SEC / 10, 3))
            .await
            .unwrap();
    }
    assert_eq!(acked, seq);
    // One more batch in flight while the collector dies.
    let _ =
        s.tx.send(pb::AgentMessage {
            kind: Some(AgentKind::Batch(batch(
                seq + 1,
                t0 + (seq + 1) as i64 * SEC / 10,
                3,
            ))),
        })
        .await;
    collector.kill9();
    drop(s);

    let _collector = support::collector(addr, dir.path(), &["--config", &cfg_s]);
    // The host is known again before its agent reconnects (restored from the store).
    let hosts = query(addr)
        .await
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let restored = hosts
        .iter()
        .find(|h| h.identity.as_ref().is_some_and(|i| i.host_id == HOST))
        .unwrap_or_else(|| panic!("host not restored: {hosts:?}"));
    assert!(!restored.connected);
    assert!(restored.last_seen_unix_nano > 0);
    let pts = load1(addr, HOST).await;
    assert!(
        pts.len() as u64 >= acked,
        "{} samples after restart, {acked} acknowledged",
        pts.len()
    );
    let values: Vec<u64> = pts.iter().map(|p| p.1 as u64).collect();
    assert_eq!(
        values[..acked as usize],
        (1..=acked).collect::<Vec<_>>()[..]
    );
    let before = pts.len();

    // The agent reconnects: Welcome says what is durable; it replays from the
    // start anyway (worst case) and nothing is stored twice.
    let mut s = open_stream(addr, hello(HOST, 42)).await;
    assert!(s.durable_seq >= acked, "{} < {acked}", s.durable_seq);
    for k in 1..=seq + 1 {
        s.send(batch(k, t0 + k as i64 * SEC / 10, 3)).await.unwrap();
    }
    let pts = load1(addr, HOST).await;
    assert_eq!(pts.len() as u64, seq + 1);
    assert!(pts.len() >= before);
    let values: Vec<u64> = pts.iter().map(|p| p.1 as u64).collect();
    assert_eq!(values, (1..=seq + 1).collect::<Vec<_>>());
    let stats = query(addr)
        .await
        .get_store_stats(pb::GetStoreStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.batches_duplicate >= acked, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_statuses_and_the_collector_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        "max_message_bytes = 1048576\n[store]\nmax_series_per_host = 500\n",
    )
    .unwrap();
    let cfg_s = cfg.display().to_string();
    let _collector = collector(addr, dir.path(), &["--config", &cfg_s]);
    let now = now_nanos();

    // NaN.
    let mut s = open_stream(addr, hello(HOST, 1)).await;
    let mut b = batch(1, now, 1);
    b.cpu.as_mut().unwrap().load1 = f64::NAN;
    let e = s.send(b).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // Far future and far past. (Each refused seq is settled: the agent drops
    // it and never sends that seq again, so the next cases use new seqs.)
    for (seq, t) in [(2, now + 24 * 3600 * SEC), (3, now - 400 * 24 * 3600 * SEC)] {
        let mut s = open_stream(addr, hello(HOST, 1)).await;
        let e = s.send(batch(seq, t, 1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    }

    // Label flood: 1000 processes x ~10 series is over the 500-series limit.
    // What fits is stored (host-wide figures first), the rest refused and counted.
    let mut s = open_stream(addr, hello(HOST, 1)).await;
    assert_eq!(s.durable_seq, 3);
    assert_eq!(s.send(batch(4, now - SEC, 1000)).await.unwrap(), 4);
    assert_eq!(load1(addr, HOST).await, vec![(now - SEC, 4.0)]);

    // Oversized message (limit 1 MiB).
    let mut s = open_stream(addr, hello(HOST, 1)).await;
    let mut big = batch(5, now, 1);
    big.processes[0].cmdline = "x".repeat(2 << 20);
    let e = s.send(big).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
        ),
        "{e}"
    );

    // Still serving: a good batch is stored and queryable.
    let mut s = open_stream(addr, hello(HOST, 1)).await;
    assert_eq!(s.send(batch(6, now, 2)).await.unwrap(), 4);
    assert_eq!(load1(addr, HOST).await, vec![(now - SEC, 4.0), (now, 6.0)]);
    let stats = query(addr)
        .await
        .get_store_stats(pb::GetStoreStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.rejected_cardinality, 1, "{stats:?}");
    assert!(stats.series_refused > 0, "{stats:?}");
    assert_eq!(stats.batches_stored, 2, "{stats:?}");

    // The CLI reads the same history.
    let out = cli(
        addr,
        &[
            "series", HOST, "load1", "--since", "10m", "--step", "1s", "-o", "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["series"][0]["points"][0][1], 4.0, "{v}");
    let out = cli(addr, &["series", HOST, "load1", "--since", "10m"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("load1 on") && text.contains("TIME (UTC)"),
        "{text}"
    );
    let out = cli(addr, &["series", HOST, "no_such_metric"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no metric"));
}
