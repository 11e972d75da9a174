//! One round of load: every simulated agent streams its share of batches to
//! the collector over gRPC, or posts the same samples to Prometheus.

#[allow(unused_imports)]
use super::*;

pub(super) struct Totals {
    pub(super) scalars: AtomicU64,
    pub(super) histograms: AtomicU64,
    pub(super) bytes: AtomicU64,
}

/// An open ingest stream of one simulated agent.
pub(super) struct AgentStream {
    pub(super) tx: mpsc::Sender<pb::AgentMessage>,
    pub(super) rx: tonic::Streaming<pb::CollectorMessage>,
}

pub(super) async fn open_agent(addr: SocketAddr, a: u32) -> anyhow::Result<AgentStream> {
    let mut client = pb::ingest_client::IngestClient::connect(format!("http://{addr}")).await?;
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage {
        kind: Some(AgentKind::Hello(pb::Hello {
            host: Some(pb::HostIdentity {
                host_id: host_id(a),
                hostname: format!("bench-{a}"),
                ..Default::default()
            }),
            agent_version: "bench".into(),
            run_id: 1,
            ..Default::default()
        })),
    })
    .await?;
    let mut rx = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    match rx.message().await? {
        Some(pb::CollectorMessage {
            kind: Some(CollectorKind::Welcome(_)),
        }) => Ok(AgentStream { tx, rx }),
        other => bail!("expected Welcome, got {other:?}"),
    }
}

/// Sends batches `seqs` of every agent to a collector (pipelined, acks awaited).
pub(super) async fn round_collector(
    streams: Vec<AgentStream>,
    sims: &mut [HostSim],
    seqs: std::ops::RangeInclusive<u64>,
    t0: i64,
    totals: Arc<Totals>,
) -> anyhow::Result<Vec<AgentStream>> {
    let mut tasks = Vec::new();
    let last = *seqs.end();
    for (a, (mut s, sim)) in streams.into_iter().zip(sims.iter_mut()).enumerate() {
        // Generate first (not measured against the target), then send.
        let batches: Vec<pb::Batch> = seqs
            .clone()
            .map(|seq| sim.batch(seq, t0 + seq as i64 * SEC + a as i64 * 1_000_000))
            .collect();
        let totals = totals.clone();
        tasks.push(tokio::spawn(async move {
            let tx = s.tx.clone();
            let sender = tokio::spawn(async move {
                for b in batches {
                    let mut c = CountSink::default();
                    map_batch(&b, &mut c);
                    totals.scalars.fetch_add(c.scalars, Ordering::Relaxed);
                    totals.histograms.fetch_add(c.histograms, Ordering::Relaxed);
                    totals
                        .bytes
                        .fetch_add(b.encoded_len() as u64, Ordering::Relaxed);
                    if tx
                        .send(pb::AgentMessage {
                            kind: Some(AgentKind::Batch(b)),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            loop {
                match s.rx.message().await? {
                    Some(pb::CollectorMessage {
                        kind: Some(CollectorKind::Ack(ack)),
                    }) if ack.seq >= last => break,
                    Some(_) => {}
                    None => bail!("stream closed before the last ack"),
                }
            }
            sender.await?;
            anyhow::Ok(s)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Sends the same batches as remote-write requests (one request per batch).
pub(super) fn round_prometheus(
    addr: SocketAddr,
    sims: &mut [HostSim],
    seqs: std::ops::RangeInclusive<u64>,
    t0: i64,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (a, sim) in sims.iter_mut().enumerate() {
            let seqs = seqs.clone();
            let bodies: Vec<Vec<u8>> = seqs
                .map(|seq| {
                    let b = sim.batch(seq, t0 + seq as i64 * SEC + a as i64 * 1_000_000);
                    let host = host_id(a as u32);
                    let mut sink = PromSink {
                        host: &host,
                        t_ms: b.time_unix_nano / 1_000_000,
                        out: Vec::new(),
                    };
                    map_batch(&b, &mut sink);
                    let req = WriteRequest {
                        timeseries: sink.out,
                    };
                    snap::raw::Encoder::new()
                        .compress_vec(&req.encode_to_vec())
                        .unwrap_or_default()
                })
                .collect();
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut w = RemoteWriter { addr, conn: None };
                for body in bodies {
                    w.post(&body)?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        }
        Ok(())
    })
}
