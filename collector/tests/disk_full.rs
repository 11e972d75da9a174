//! The collector's data directory on a small tmpfs that fills up: ingest
//! answers UNAVAILABLE and health says NOT_SERVING while the disk is full;
//! once space is freed ingest resumes by itself and nothing acknowledged is lost.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use nodewatch_proto::time::now_nanos;
use support::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SEC: i64 = 1_000_000_000;
const HOST: &str = "diskfull0123456789abcdef";

/// Writes `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    // Bounded: a tmpfs of a few MiB fills within a few hundred chunks.
    for _ in 0..100_000 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

async fn health(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let r = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

async fn wait_health(addr: std::net::SocketAddr, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(addr, "nodewatch.v1.Ingest").await != want {
        assert!(Instant::now() < deadline, "health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health(addr, "").await, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_refuses_then_resumes_without_losing_acknowledged_batches() {
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = match Tmpfs::mount(&data, "8m") {
        Ok(t) => t,
        Err(e) => {
            println!("skipping: cannot mount a tmpfs ({e})");
            return;
        }
    };
    let addr = free_addr();
    let _collector = collector(addr, dir.path(), &[]);
    wait_health(addr, ServingStatus::Serving).await;

    let t0 = now_nanos() - 600 * SEC;
    let mut s = open_stream(addr, hello(HOST, 1)).await;
    let mut seq = 0;
    let mut acked = 0;
    for _ in 0..20 {
        seq += 1;
        acked = s.send(batch(seq, t0 + seq as i64 * SEC)).await.unwrap();
    }
    assert_eq!(acked, 20);

    // Fill the disk: the next batches are refused as UNAVAILABLE, not acknowledged.
    let filler = data.join("filler");
    assert!(fill(&filler) > 0);
    let mut refused = None;
    for _ in 0..50 {
        seq += 1;
        match s.send(batch(seq, t0 + seq as i64 * SEC)).await {
            Ok(a) => acked = a,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("a full disk never refused a batch");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    wait_health(addr, ServingStatus::NotServing).await;
    drop(s);

    // Space freed: a new stream resumes where the collector's durable seq says,
    // and the agent's resend is stored.
    std::fs::remove_file(&filler).unwrap();
    let mut s = open_stream(addr, hello(HOST, 1)).await;
    assert_eq!(s.durable_seq, acked);
    let last = seq + 10;
    for seq in acked + 1..=last {
        assert_eq!(
            s.send(batch(seq, t0 + seq as i64 * SEC)).await.unwrap(),
            seq
        );
    }
    wait_health(addr, ServingStatus::Serving).await;
    let pts = load1(addr, HOST).await;
    let seqs: Vec<u64> = pts.iter().map(|p| p.1 as u64).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    let stats = query(addr)
        .await
        .get_store_stats(nodewatch_proto::pb::GetStoreStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.wal_write_errors >= 1, "{stats:?}");
    assert!(stats.writable);
}
