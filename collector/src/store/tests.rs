use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

const SEC: i64 = 1_000_000_000;

fn batch(seq: u64, t: i64, procs: u32) -> pb::Batch {
    pb::Batch {
        seq,
        time_unix_nano: t,
        cpu: Some(pb::CpuStats {
            total: Some(pb::CpuTimes {
                cpu: -1,
                user_seconds: 100.0 + seq as f64 * 0.37,
                busy_ratio: 0.25,
                ..Default::default()
            }),
            load1: seq as f64,
            ..Default::default()
        }),
        memory: Some(pb::MemoryStats {
            total_bytes: 8 << 30,
            available_bytes: (4 << 30) + seq * 4096,
            ..Default::default()
        }),
        processes: (0..procs)
            .map(|p| pb::ProcessStats {
                pid: 100 + p,
                start_time_ticks: 5,
                name: format!("proc{p}"),
                rss_bytes: 1 << 20,
                ..Default::default()
            })
            .collect(),
        syscalls: vec![pb::SyscallLatency {
            syscall: "read".into(),
            cgroup: String::new(),
            count: 3,
            errors: 0,
            latency_ns: Some(pb::Histogram {
                grouping_power: 4,
                max_value_power: 40,
                indices: vec![
                    nodewatch_proto::hist::bucket_index_g(4, 1000),
                    nodewatch_proto::hist::bucket_index_g(4, 50_000),
                ],
                counts: vec![2, 1],
            }),
        }],
        ..Default::default()
    }
}

fn hello(id: &str, name: &str) -> pb::Hello {
    pb::Hello {
        host: Some(pb::HostIdentity {
            host_id: id.into(),
            hostname: name.into(),
            ..Default::default()
        }),
        agent_version: "0.1.0".into(),
        run_id: 7,
        ..Default::default()
    }
}

fn load1(store: &Store, host: &str) -> Vec<(i64, f64)> {
    let s = store.find_series(host, "load1", &[], 10);
    assert_eq!(s.len(), 1, "{s:?}");
    store
        .read_scalar(host, s[0].sid, i64::MIN, i64::MAX)
        .unwrap()
}

fn small_config() -> StoreConfig {
    StoreConfig {
        chunk_duration: Duration::from_secs(3600),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn samples_are_queryable_from_head_chunks_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_nanos() - 600 * SEC;
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        store.put_host(&hello("h1", "web-1")).await.unwrap();
        for seq in 1..=50 {
            let r = store
                .append("h1", 7, &batch(seq, t0 + seq as i64 * SEC, 2))
                .await;
            assert_eq!(r.unwrap(), Appended::Stored);
        }
        assert_eq!(load1(&store, "h1").len(), 50);
        store.flush().await.unwrap();
        for seq in 51..=80 {
            store
                .append("h1", 7, &batch(seq, t0 + seq as i64 * SEC, 2))
                .await
                .unwrap();
        }
        let pts = load1(&store, "h1");
        assert_eq!(pts.len(), 80);
        assert!(pts.iter().enumerate().all(|(i, p)| p.1 == (i + 1) as f64));
        assert_eq!(store.resolve_host("web").unwrap(), "h1");
        assert_eq!(store.durable_seq("h1", 7), 80);
        assert!(store.size().chunk_bytes > 0);
    }
    // Reopen: chunks from the database, the rest from the WAL.
    let store = Store::open(dir.path(), small_config()).unwrap();
    let pts = load1(&store, "h1");
    assert_eq!(pts.len(), 80);
    assert_eq!(pts[79], (t0 + 80 * SEC, 80.0));
    assert_eq!(store.durable_seq("h1", 7), 80);
    let hosts = store.hosts();
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0]
            .hello
            .as_ref()
            .unwrap()
            .host
            .as_ref()
            .unwrap()
            .hostname,
        "web-1"
    );
    assert_eq!(hosts[0].latest.as_ref().unwrap().seq, 80);
    assert!(hosts[0].last_seen_unix_nano > 0);
    // Ranges cut precisely.
    let s = store.find_series("h1", "load1", &[], 1)[0].sid;
    let part = store
        .read_scalar("h1", s, t0 + 40 * SEC, t0 + 60 * SEC)
        .unwrap();
    assert_eq!(part.len(), 21);
    // Histograms survive as histograms.
    let hs = store.find_series("h1", "syscall_latency_ns", &[], 10);
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].kind, SeriesKind::Histogram);
    let h = store
        .read_histograms("h1", hs[0].sid, i64::MIN, i64::MAX)
        .unwrap();
    assert_eq!(h.len(), 80);
    let mut merged = nodewatch_proto::hist::Merged::default();
    for (_, _, s) in &h {
        merged.add(s);
    }
    assert_eq!(merged.count(), 240);
}

/// A Hello between two cuts writes the host record with latest parts from
/// batches that are only in the WAL; reopening must still replay those
/// batches as stored data, not as out-of-order batches to drop.
#[tokio::test(flavor = "multi_thread")]
async fn wal_batches_after_a_second_hello_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_nanos() - 600 * SEC;
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        store.put_host(&hello("h1", "web-1")).await.unwrap();
        for seq in 1..=10 {
            store
                .append("h1", 7, &batch(seq, t0 + seq as i64 * SEC, 1))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
        // A new agent run says Hello (record written with the latest parts so far)...
        let mut second = hello("h1", "web-1");
        second.run_id = 8;
        for seq in 1..=10 {
            store
                .append("h1", 8, &batch(seq, t0 + (10 + seq as i64) * SEC, 1))
                .await
                .unwrap();
            // ...and again after some of its batches, as a reconnecting agent does.
            if seq == 5 {
                store.put_host(&second).await.unwrap();
            }
        }
        store.put_host(&second).await.unwrap();
        assert_eq!(load1(&store, "h1").len(), 20);
    }
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(load1(&store, "h1").len(), 20);
    assert_eq!(store.durable_seq("h1", 8), 10);
    assert_eq!(
        store
            .counters()
            .out_of_order_batches
            .load(Ordering::Relaxed),
        0
    );
    // The stored data still reaches only as far as it does: the next batch is in order.
    store
        .append("h1", 8, &batch(11, t0 + 21 * SEC, 1))
        .await
        .unwrap();
    assert_eq!(load1(&store, "h1").len(), 21);
}

/// Batches older than the host's newest (a spool replay behind live data, a
/// second run, a clock step back) are stored and read back in time order, from
/// the head, after a WAL replay and from chunks.
#[tokio::test(flavor = "multi_thread")]
async fn backfill_is_stored_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_nanos() - 600 * SEC;
    // Live data at t0+100.. (run 1); a replay of t0+1..t0+20 (run 2), and a
    // third run with times between (t0+50..), interleaved.
    let expected: Vec<i64> = (1..=20)
        .chain(50..=60)
        .chain(100..=120)
        .map(|s| t0 + s * SEC)
        .collect();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let mut live = 0;
        for i in 0..21u64 {
            live += 1;
            let r = store
                .append("h", 1, &batch(live, t0 + (99 + live as i64) * SEC, 1))
                .await
                .unwrap();
            assert_eq!(r, Appended::Stored);
            if i < 20 {
                let r = store
                    .append("h", 2, &batch(i + 1, t0 + (i as i64 + 1) * SEC, 1))
                    .await
                    .unwrap();
                assert_eq!(r, Appended::Stored);
            }
            if i < 11 {
                store
                    .append("h", 3, &batch(i + 1, t0 + (50 + i as i64) * SEC, 1))
                    .await
                    .unwrap();
            }
        }
        let times: Vec<i64> = load1(&store, "h").iter().map(|p| p.0).collect();
        assert_eq!(times, expected);
        assert_eq!(
            store
                .counters()
                .out_of_order_batches
                .load(Ordering::Relaxed),
            31
        );
        // Exact duplicates are still skipped.
        let again = store.append("h", 2, &batch(20, t0 + 20 * SEC, 1)).await;
        assert_eq!(again.unwrap(), Appended::Duplicate);
    }
    // WAL replay rebuilds the same lanes.
    let store = Store::open(dir.path(), small_config()).unwrap();
    let times: Vec<i64> = load1(&store, "h").iter().map(|p| p.0).collect();
    assert_eq!(times, expected);
    // Chunks hold them after a cut, and after reopening.
    store.flush().await.unwrap();
    let times: Vec<i64> = load1(&store, "h").iter().map(|p| p.0).collect();
    assert_eq!(times, expected);
    drop(store);
    let store = Store::open(dir.path(), small_config()).unwrap();
    let pts = load1(&store, "h");
    assert_eq!(pts.iter().map(|p| p.0).collect::<Vec<_>>(), expected);
    // The values went with their batches: run 2's seq n sits at t0 + n.
    assert_eq!(pts[0], (t0 + SEC, 1.0));
    assert_eq!(pts[20], (t0 + 50 * SEC, 1.0));
    // New live data after the cut still lands in order.
    store
        .append("h", 1, &batch(22, t0 + 130 * SEC, 1))
        .await
        .unwrap();
    assert_eq!(load1(&store, "h").last(), Some(&(t0 + 130 * SEC, 22.0)));
}

/// More overlapping backfill streams than lanes: the extra one is refused as
/// retryable, the head is cut, and the retry is stored.
#[tokio::test(flavor = "multi_thread")]
async fn backfill_beyond_the_lanes_is_retried_after_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let t0 = now_nanos() - 600 * SEC;
    store
        .append("h", 1, &batch(1, t0 + 500 * SEC, 1))
        .await
        .unwrap();
    // Each run starts older than every lane's newest: one lane each.
    for run in 0..3u64 {
        let t = t0 + (400 - 100 * run as i64) * SEC;
        store.append("h", 10 + run, &batch(1, t, 1)).await.unwrap();
    }
    let refused = store.append("h", 20, &batch(1, t0 + 50 * SEC, 1)).await;
    assert!(
        matches!(refused, Err(StoreError::BackfillBusy { .. })),
        "{refused:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.counters().flushes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no cut after the refusal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = store.append("h", 20, &batch(1, t0 + 50 * SEC, 1)).await;
    assert_eq!(r.unwrap(), Appended::Stored);
    assert_eq!(load1(&store, "h").len(), 5);
}

/// Live batches sent before a backlog (seqs out of order within one run) are
/// all stored once; the settled prefix catches up when the gap fills, also
/// across a reopen.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_seqs_of_one_run_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_nanos() - 600 * SEC;
    let at = |seq: u64| t0 + seq as i64 * SEC;
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        for seq in 11..=20 {
            let r = store.append("h", 5, &batch(seq, at(seq), 1)).await;
            assert_eq!(r.unwrap(), Appended::Stored);
        }
        assert_eq!(store.durable_seq("h", 5), 0);
        assert!(store.holds("h", 5, 15));
        for seq in 1..=10 {
            let r = store.append("h", 5, &batch(seq, at(seq), 1)).await;
            assert_eq!(r.unwrap(), Appended::Stored);
            assert_eq!(store.durable_seq("h", 5), if seq < 10 { seq } else { 20 });
        }
        for seq in [1, 10, 11, 20] {
            let r = store.append("h", 5, &batch(seq, at(seq), 1)).await;
            assert_eq!(r.unwrap(), Appended::Duplicate, "seq {seq}");
        }
        assert_eq!(load1(&store, "h").len(), 20);
        // A gap the agent declares dropped is settled.
        store.append("h", 5, &batch(30, at(30), 1)).await.unwrap();
        assert_eq!(store.durable_seq("h", 5), 20);
        store.settle_below("h", 5, 30);
        assert_eq!(store.durable_seq("h", 5), 30);
    }
    // After a reopen the WAL's batches are held again; the declared gap is the
    // agent's to declare again with its next Hello.
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(store.durable_seq("h", 5), 20);
    assert!(store.holds("h", 5, 30));
    store.settle_below("h", 5, 30);
    assert_eq!(store.durable_seq("h", 5), 30);
    assert_eq!(load1(&store, "h").len(), 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_batches_are_stored_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_nanos() - 600 * SEC;
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        for seq in 1..=20 {
            store
                .append("h1", 1, &batch(seq, t0 + seq as i64 * SEC, 1))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
        for seq in 21..=30 {
            store
                .append("h1", 1, &batch(seq, t0 + seq as i64 * SEC, 1))
                .await
                .unwrap();
        }
        // Replay within the same process: all duplicates.
        for seq in 1..=30 {
            let r = store
                .append("h1", 1, &batch(seq, t0 + seq as i64 * SEC, 1))
                .await;
            assert_eq!(r.unwrap(), Appended::Duplicate, "seq {seq}");
        }
        assert_eq!(
            store.counters().batches_duplicate.load(Ordering::Relaxed),
            30
        );
    }
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(store.durable_seq("h1", 1), 30);
    assert_eq!(store.durable_seq("h1", 2), 0);
    for seq in 1..=30 {
        let r = store
            .append("h1", 1, &batch(seq, t0 + seq as i64 * SEC, 1))
            .await;
        assert_eq!(r.unwrap(), Appended::Duplicate);
    }
    // A new run of the same host starts its own sequence.
    let r = store.append("h1", 2, &batch(1, t0 + 31 * SEC, 1)).await;
    assert_eq!(r.unwrap(), Appended::Stored);
    assert_eq!(load1(&store, "h1").len(), 31);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), small_config()).unwrap());
    let t0 = now_nanos() - 600 * SEC;
    let mut tasks = Vec::new();
    for a in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let host = format!("host{a}");
            for seq in 1..=20u64 {
                store
                    .append(&host, 1, &batch(seq, t0 + seq as i64 * SEC, 3))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = store.counters();
    assert_eq!(c.batches_stored.load(Ordering::Relaxed), 640);
    let syncs = c.wal_syncs.load(Ordering::Relaxed);
    assert!(syncs < 640, "every append paid its own fsync: {syncs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_values_and_timestamps_are_refused_with_counters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let now = now_nanos();
    let mut b = batch(1, now, 1);
    b.cpu.as_mut().unwrap().load1 = f64::NAN;
    assert!(matches!(
        store.append("h", 1, &b).await,
        Err(StoreError::NonFinite { .. })
    ));
    let mut b = batch(1, now, 1);
    b.processes[0].cpu_ratio = f64::INFINITY;
    assert!(matches!(
        store.append("h", 1, &b).await,
        Err(StoreError::NonFinite { .. })
    ));
    let future = batch(1, now + 3600 * SEC, 1);
    assert!(matches!(
        store.append("h", 1, &future).await,
        Err(StoreError::BadTimestamp { .. })
    ));
    let past = batch(1, now - 30 * 24 * 3600 * SEC, 1);
    assert!(matches!(
        store.append("h", 1, &past).await,
        Err(StoreError::BadTimestamp { .. })
    ));
    assert!(matches!(
        store.append("", 1, &batch(1, now, 1)).await,
        Err(StoreError::BadHostId(_))
    ));
    let c = store.counters();
    assert_eq!(c.rejected_non_finite.load(Ordering::Relaxed), 2);
    assert_eq!(c.rejected_future.load(Ordering::Relaxed), 1);
    assert_eq!(c.rejected_past.load(Ordering::Relaxed), 1);
    // Nothing was stored and the store keeps serving.
    assert_eq!(store.durable_seq("h", 1), 0);
    assert_eq!(
        store.append("h", 1, &batch(1, now, 1)).await.unwrap(),
        Appended::Stored
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn label_flood_hits_the_series_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_series_per_host: 200,
        max_hosts: 2,
        ..small_config()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    let now = now_nanos() - 60 * SEC;
    // ~12 process series each: 1000 processes is far over 200.
    // What fits is stored (the host-wide series come first), the rest refused.
    let r = store.append("h", 1, &batch(1, now, 1000)).await;
    assert_eq!(r.unwrap(), Appended::Stored);
    let c = store.counters();
    assert_eq!(c.rejected_cardinality.load(Ordering::Relaxed), 1);
    let refused = c.series_refused.load(Ordering::Relaxed);
    assert!(refused > 1000, "{refused}");
    assert_eq!(store.durable_seq("h", 1), 1);
    assert_eq!(load1(&store, "h"), vec![(now, 1.0)]);
    let stored = store.find_series("h", "", &[], usize::MAX);
    assert_eq!(stored.len(), 200);
    // Series that fit keep their samples; the next batch adds to them.
    assert_eq!(
        store.append("h", 1, &batch(2, now + SEC, 2)).await.unwrap(),
        Appended::Stored
    );
    assert_eq!(load1(&store, "h").len(), 2);
    // Host limit.
    store.append("h2", 1, &batch(1, now, 1)).await.unwrap();
    assert!(matches!(
        store.append("h3", 1, &batch(1, now, 1)).await,
        Err(StoreError::TooManyHosts { limit: 2 })
    ));
    assert_eq!(store.counters().rejected_hosts.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_generations() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        retention: Duration::from_secs(5),
        retention_interval: Duration::from_millis(200),
        ..small_config()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    let now = now_nanos();
    // Old samples (still within the accepted age) go into one generation ...
    for seq in 1..=10 {
        store
            .append("h", 1, &batch(seq, now - 3600 * SEC + seq as i64 * SEC, 1))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    // ... recent ones into another.
    store.append("h", 1, &batch(11, now, 1)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(load1(&store, "h").len(), 11);
    // Ticks run the retention pass.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.counters().expired_generations.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pts = load1(&store, "h");
    assert_eq!(pts, vec![(now, 11.0)]);
}

/// Retention forgets a series whose chunk still sits in a kept generation; after
/// a restart its id must not go to a new series, or the new series would show
/// the old one's samples.
#[tokio::test(flavor = "multi_thread")]
async fn series_ids_are_not_reused_after_retention_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        retention: Duration::from_secs(5),
        retention_interval: Duration::from_millis(200),
        ..small_config()
    };
    let now = now_nanos();
    let rss_of = |store: &Store, pid: &str| {
        let m = [LabelMatch::Equal("pid".into(), pid.into())];
        store
            .find_series("h", "process_rss_bytes", &m, 10)
            .iter()
            .flat_map(|s| store.read_scalar("h", s.sid, i64::MIN, i64::MAX).unwrap())
            .collect::<Vec<_>>()
    };
    {
        let store = Store::open(dir.path(), cfg.clone()).unwrap();
        // pid 101 (the highest series ids) only in an old batch; the generation
        // stays because of the recent batch.
        store
            .append("h", 1, &batch(1, now - 3600 * SEC, 2))
            .await
            .unwrap();
        store.append("h", 1, &batch(2, now, 1)).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(rss_of(&store, "101").len(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rss_of(&store, "101").is_empty() {
            assert!(Instant::now() < deadline, "retention never forgot pid 101");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let store = Store::open(dir.path(), cfg).unwrap();
    store.append("h", 1, &batch(3, now + SEC, 3)).await.unwrap();
    assert_eq!(
        rss_of(&store, "101"),
        vec![(now + SEC, (1u64 << 20) as f64)]
    );
    assert_eq!(rss_of(&store, "102").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn time_based_cut_writes_chunks_and_drops_wal_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        chunk_duration: Duration::from_millis(300),
        ..Default::default()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    let t0 = now_nanos() - 60 * SEC;
    for seq in 1..=5 {
        store
            .append("h", 1, &batch(seq, t0 + seq as i64 * SEC, 1))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.counters().flushes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no cut happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.size().head_series, 0);
    assert_eq!(load1(&store, "h").len(), 5);
    assert!(wal::segments(&dir.path().join("wal")).unwrap().len() <= 2);
}

/// Env var naming the directory the child writer uses.
const CHILD_DIR: &str = "NODEWATCH_STORE_TEST_CHILD_DIR";

/// Not a test on its own: the body of the child process of
/// `acknowledged_batches_survive_sigkill` (does nothing unless that test runs it).
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let store = Arc::new(
        Store::open(
            Path::new(&dir),
            StoreConfig {
                chunk_duration: Duration::from_millis(500),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let t0 = now_nanos() - 3600 * SEC;
    // Four concurrent agents; each acknowledged seq is reported on stdout.
    let mut tasks = Vec::new();
    for a in 0..4u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=100_000u64 {
                let t = t0 + seq as i64 * SEC / 10;
                store
                    .append(&format!("host{a}"), 9, &batch(seq, t, 5))
                    .await
                    .unwrap();
                println!("acked host{a} {seq}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_batches_survive_sigkill() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "store::tests::sigkill_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut total = 0;
    // Kill mid-stream, after cuts have happened (chunk_duration 500 ms).
    while total < 3000 && started.elapsed() < Duration::from_secs(60) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("acked ") {
            let (host, seq) = rest.split_once(' ').unwrap();
            acked.insert(host.to_string(), seq.parse().unwrap());
            total += 1;
        }
        if started.elapsed() > Duration::from_millis(1500) && total > 400 {
            break;
        }
    }
    // SIGKILL: no destructor, no flush.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    // Acks printed before the kill but not read yet still count.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("acked ") {
            let (host, seq) = rest.split_once(' ').unwrap();
            let seq: u64 = seq.parse().unwrap();
            let e = acked.entry(host.to_string()).or_default();
            *e = (*e).max(seq);
        }
    }
    eprintln!("acknowledged before SIGKILL: {acked:?}");
    assert!(acked.len() == 4, "child acknowledged too little: {acked:?}");

    let store = Store::open(dir.path(), small_config()).unwrap();
    for (host, &last) in &acked {
        assert!(
            store.durable_seq(host, 9) >= last,
            "{host}: durable < acked {last}"
        );
        let pts = load1(&store, host);
        // Every acknowledged seq is there (load1 = seq), each once.
        let seqs: Vec<u64> = pts.iter().map(|p| p.1 as u64).collect();
        assert!(seqs.len() as u64 >= last, "{host}: {} < {last}", seqs.len());
        assert_eq!(seqs[..last as usize], (1..=last).collect::<Vec<_>>()[..]);
        // Replay of everything acknowledged adds nothing.
        let t0 = pts[0].0 - SEC / 10;
        for seq in 1..=last {
            let r = store
                .append(host, 9, &batch(seq, t0 + seq as i64 * SEC / 10, 5))
                .await;
            assert_eq!(r.unwrap(), Appended::Duplicate);
        }
        assert_eq!(load1(&store, host).len(), pts.len());
    }
}
