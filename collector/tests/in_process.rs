//! End to end in one process: the collector's services over an in-memory
//! duplex transport (no ports), driven by the generated clients.

mod support;

use std::time::Duration;

use hyper_util::rt::TokioIo;
use nodewatch_collector::app::Collector;
use nodewatch_collector::config::CollectorConfig;
use nodewatch_collector::grpc;
use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use nodewatch_proto::time::now_nanos;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Server};

/// Serves a fresh collector (its store in a temporary directory) over duplex
/// pipes; returns it, a channel to it and the directory (removed on drop).
async fn start() -> (Collector, Channel, tempfile::TempDir) {
    start_with(CollectorConfig::default()).await
}

/// As [`start`], with `config` (its data directory replaced by a temporary one).
async fn start_with(config: CollectorConfig) -> (Collector, Channel, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = CollectorConfig {
        data_dir: dir.path().to_path_buf(),
        ..config
    };
    let collector = Collector::open(config).unwrap();
    let routes = grpc::routes(&collector).await.unwrap();
    let (conn_tx, conn_rx) = mpsc::channel::<tokio::io::DuplexStream>(4);
    tokio::spawn(async move {
        let incoming = ReceiverStream::new(conn_rx).map(Ok::<_, std::io::Error>);
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    let channel = Endpoint::from_static("http://in-process")
        .connect_with_connector(tower::service_fn(move |_| {
            let conn_tx = conn_tx.clone();
            async move {
                let (client, server) = tokio::io::duplex(1 << 20);
                conn_tx
                    .send(server)
                    .await
                    .map_err(|_| std::io::Error::other("server gone"))?;
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        }))
        .await
        .unwrap();
    (collector, channel, dir)
}

use tokio_stream::StreamExt as _;

fn hello(host_id: &str, run_id: u64) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(AgentKind::Hello(support::hello(host_id, run_id))),
    }
}

fn batch(seq: u64, available: u64) -> pb::AgentMessage {
    let mut b = support::batch(seq, now_nanos());
    if let Some(m) = b.memory.as_mut() {
        m.available_bytes = available;
    }
    pb::AgentMessage {
        kind: Some(AgentKind::Batch(b)),
    }
}

/// Opens an Ingest stream, sends `messages`, returns what came back (until the
/// stream ends or `expect` replies arrived) and the final status if any.
async fn exchange(
    channel: Channel,
    messages: Vec<pb::AgentMessage>,
    expect: usize,
) -> (Vec<CollectorKind>, Option<tonic::Status>) {
    let (tx, rx) = mpsc::channel(16);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let mut client = pb::ingest_client::IngestClient::new(channel);
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut replies = Vec::new();
    let mut status = None;
    while replies.len() < expect {
        match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
            Ok(Ok(Some(m))) => replies.push(m.kind.unwrap()),
            Ok(Ok(None)) => break,
            Ok(Err(s)) => {
                status = Some(s);
                break;
            }
            Err(_) => panic!("no reply within 5 s"),
        }
    }
    drop(tx);
    (replies, status)
}

#[tokio::test]
async fn hello_batches_acks_and_queries() {
    let (_collector, channel, _dir) = start().await;
    let (replies, status) = exchange(
        channel.clone(),
        vec![hello("host-a", 7), batch(1, 400), batch(2, 250)],
        3,
    )
    .await;
    assert!(status.is_none(), "{status:?}");
    assert!(matches!(&replies[0], CollectorKind::Welcome(w) if w.durable_seq == 0));
    assert!(matches!(&replies[1], CollectorKind::Ack(a) if a.seq == 1));
    assert!(matches!(&replies[2], CollectorKind::Ack(a) if a.seq == 2));

    let mut query = pb::query_client::QueryClient::new(channel.clone());
    let hosts = query
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].identity.as_ref().unwrap().host_id, "host-a");
    assert_eq!(hosts[0].memory_available_bytes, 250);
    assert!((hosts[0].memory_used_ratio - 0.75).abs() < 1e-9);

    let host = query
        .get_host(pb::GetHostRequest {
            host: "host-a.example".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(host.latest.unwrap().seq, 2);
    let missing = query
        .get_host(pb::GetHostRequest {
            host: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn replayed_batches_are_stored_once() {
    let (collector, channel, _dir) = start().await;
    exchange(
        channel.clone(),
        vec![hello("host-b", 1), batch(1, 10), batch(2, 10)],
        3,
    )
    .await;
    // Reconnect with the same run: Welcome says 2 are durable; resending 1..=3 stores only 3.
    let (replies, _) = exchange(
        channel.clone(),
        vec![hello("host-b", 1), batch(1, 10), batch(2, 10), batch(3, 10)],
        4,
    )
    .await;
    assert!(matches!(&replies[0], CollectorKind::Welcome(w) if w.durable_seq == 2));
    assert!(matches!(&replies[3], CollectorKind::Ack(a) if a.seq == 3));
    let host = collector.registry.get("host-b").unwrap();
    assert_eq!(host.batches_received, 3);
    // A new run id restarts the sequence space.
    let (replies, _) = exchange(channel, vec![hello("host-b", 2), batch(1, 10)], 2).await;
    assert!(matches!(&replies[0], CollectorKind::Welcome(w) if w.durable_seq == 0));
    assert_eq!(
        collector.registry.get("host-b").unwrap().batches_received,
        4
    );
}

#[tokio::test]
async fn protocol_violations_get_clear_statuses() {
    let (collector, channel, _dir) = start().await;
    // A Batch before Hello.
    let (_, status) = exchange(channel.clone(), vec![batch(1, 1)], 1).await;
    let status = status.expect("stream must fail");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("expected Hello"),
        "{}",
        status.message()
    );

    // A repeated Hello.
    let (replies, status) = exchange(
        channel.clone(),
        vec![hello("host-c", 1), hello("host-c", 1)],
        2,
    )
    .await;
    assert!(matches!(&replies[0], CollectorKind::Welcome(_)));
    let status = status.expect("stream must fail");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("Hello already received"));

    // An empty message, a bad host id, a NaN value, a zero seq, a far-future time.
    let (_, status) = exchange(channel.clone(), vec![pb::AgentMessage { kind: None }], 1).await;
    assert_eq!(status.unwrap().code(), tonic::Code::InvalidArgument);
    let (_, status) = exchange(channel.clone(), vec![hello("../etc", 1)], 1).await;
    assert_eq!(status.unwrap().code(), tonic::Code::InvalidArgument);
    let mut nan = batch(1, 1);
    if let Some(AgentKind::Batch(b)) = &mut nan.kind {
        b.cpu = Some(pb::CpuStats {
            load1: f64::NAN,
            ..Default::default()
        });
    }
    let (_, status) = exchange(channel.clone(), vec![hello("host-d", 1), nan], 2).await;
    let status = status.unwrap();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("not a finite number"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get(nodewatch_proto::REJECTED_SEQ_METADATA)
            .unwrap(),
        "1"
    );
    let (_, status) = exchange(channel.clone(), vec![hello("host-d", 1), batch(0, 1)], 2).await;
    assert_eq!(status.unwrap().code(), tonic::Code::InvalidArgument);
    let mut future = batch(1, 1);
    if let Some(AgentKind::Batch(b)) = &mut future.kind {
        b.time_unix_nano += 24 * 3600 * 1_000_000_000;
    }
    let (_, status) = exchange(channel.clone(), vec![hello("host-d", 1), future], 2).await;
    assert_eq!(status.unwrap().code(), tonic::Code::InvalidArgument);

    // The collector keeps serving: a well-behaved agent still gets through.
    let (replies, status) = exchange(channel, vec![hello("host-e", 1), batch(1, 5)], 2).await;
    assert!(status.is_none());
    assert!(matches!(&replies[1], CollectorKind::Ack(a) if a.seq == 1));
    let counters = &collector.pipeline.counters;
    assert!(
        counters
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 7
    );
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let (_collector, channel, _dir) = start().await;
    let mut big = batch(1, 1);
    if let Some(AgentKind::Batch(b)) = &mut big.kind {
        b.processes = (0..200_000)
            .map(|pid| pb::ProcessStats {
                pid,
                cmdline: "x".repeat(100),
                ..Default::default()
            })
            .collect();
    }
    let (_, status) = exchange(channel, vec![hello("host-f", 1), big], 2).await;
    let status = status.expect("oversized batch must fail");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (_collector, channel, _dir) = start().await;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "nodewatch.v1.Ingest",
        "nodewatch.v1.Query",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn silent_streams_are_closed() {
    let (_collector, channel, _dir) = start_with(CollectorConfig {
        hello_timeout: Duration::from_millis(300),
        stream_idle_timeout: Duration::from_millis(600),
        ..CollectorConfig::default()
    })
    .await;
    // No Hello at all.
    let started = std::time::Instant::now();
    let (replies, status) = exchange(channel.clone(), vec![], 1).await;
    assert!(replies.is_empty());
    let status = status.expect("stream without Hello not closed");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("no Hello"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Hello, a batch, then silence.
    let (replies, status) = exchange(channel, vec![hello("quiet", 1), batch(1, 5)], 3).await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    let status = status.expect("idle stream not closed");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("no message for"), "{status:?}");
}

/// Live data before the backlog: batches of one run out of order are all
/// stored; each Ack names its batch, and the settled seq catches up when the
/// gap fills. A Hello's first_seq settles what the agent dropped.
#[tokio::test]
async fn out_of_order_batches_and_declared_gaps() {
    let (_collector, channel, _dir) = start().await;
    let mut first = support::hello("gappy", 3);
    first.first_seq = 5;
    let hello = pb::AgentMessage {
        kind: Some(AgentKind::Hello(first)),
    };
    let (replies, status) = exchange(
        channel,
        vec![hello, batch(8, 1), batch(5, 1), batch(6, 1), batch(7, 1)],
        5,
    )
    .await;
    assert!(status.is_none(), "{status:?}");
    assert!(matches!(&replies[0], CollectorKind::Welcome(w) if w.durable_seq == 4));
    let acks: Vec<(u64, u64)> = replies[1..]
        .iter()
        .map(|r| match r {
            CollectorKind::Ack(a) => (a.seq, a.batch_seq),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(acks, vec![(4, 8), (5, 5), (6, 6), (8, 7)]);
}

/// A batch refused for good (the agent drops it) does not hold back the
/// settled seq: the next stream's Welcome and Acks move past it.
#[tokio::test]
async fn a_refused_batch_does_not_stall_the_settled_seq() {
    let (_collector, channel, _dir) = start().await;
    let mut nan = batch(2, 1);
    if let Some(AgentKind::Batch(b)) = &mut nan.kind {
        b.memory = Some(pb::MemoryStats {
            total_bytes: 1,
            ..Default::default()
        });
        b.cpu.as_mut().unwrap().load1 = f64::NAN;
    }
    let (replies, status) = exchange(
        channel.clone(),
        vec![hello("host-r", 9), batch(1, 1), nan],
        3,
    )
    .await;
    assert_eq!(replies.len(), 2);
    assert_eq!(status.unwrap().code(), tonic::Code::InvalidArgument);
    let (replies, status) = exchange(channel, vec![hello("host-r", 9), batch(3, 1)], 2).await;
    assert!(status.is_none(), "{status:?}");
    assert!(matches!(&replies[0], CollectorKind::Welcome(w) if w.durable_seq == 2));
    assert!(matches!(&replies[1], CollectorKind::Ack(a) if a.seq == 3 && a.batch_seq == 3));
}
