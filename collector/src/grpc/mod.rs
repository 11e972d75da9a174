//! The collector's gRPC face: Ingest, Query, `grpc.health.v1` and server
//! reflection (v1 and v1alpha), assembled into routes and served on a listener.
//! Only this module (and the binaries' wiring) knows tonic.

pub mod ingest;
pub mod query;
pub mod status;

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use nodewatch_proto::pb;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::info;

use crate::app::Collector;
use crate::store::Store;
use ingest::IngestService;
use query::QueryService;

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection descriptors could not be loaded.
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// Every service the collector serves: Ingest, Query, grpc.health.v1 and
/// server reflection (v1 and v1alpha) over all of them.
pub async fn routes(collector: &Collector) -> Result<Routes, ServeError> {
    let max = collector.config.max_message_bytes;
    let ingest = pb::ingest_server::IngestServer::new(IngestService::new(
        collector.pipeline.clone(),
        collector.registry.clone(),
        collector.stopping.subscribe(),
        ingest::StreamLimits {
            hello_timeout: collector.config.hello_timeout,
            idle_timeout: collector.config.stream_idle_timeout,
        },
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let query = pb::query_server::QueryServer::new(
        QueryService::new(
            collector.registry.clone(),
            collector.store.clone(),
            collector.stopping.subscribe(),
        )
        .with_alerts(collector.detector.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::ingest_server::IngestServer<IngestService>>()
        .await;
    health
        .set_serving::<pb::query_server::QueryServer<QueryService>>()
        .await;

    tokio::spawn(report_ingest_health(
        Arc::downgrade(&collector.store),
        health.clone(),
    ));

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(nodewatch_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;

    Ok(Routes::new(ingest)
        .add_service(query)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// How often the health of ingest follows the store's ability to write.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// Reports Ingest (and the server as a whole, service "") NOT_SERVING while
/// the store cannot write its WAL, SERVING again once it can; ends with the store.
async fn report_ingest_health(store: Weak<Store>, health: HealthReporter) {
    let mut serving = true;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let Some(store) = store.upgrade() else { return };
        let writable = store.writable();
        drop(store);
        if writable == serving {
            continue;
        }
        serving = writable;
        let status = if writable {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        if writable {
            health
                .set_serving::<pb::ingest_server::IngestServer<IngestService>>()
                .await;
        } else {
            health
                .set_not_serving::<pb::ingest_server::IngestServer<IngestService>>()
                .await;
        }
    }
}

/// Serves `collector` on `listener` until `shutdown` completes; then every
/// agent stream and host watch ends cleanly (after the append in flight) and
/// the server returns once they have.
pub async fn serve(
    collector: &Collector,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let routes = routes(collector).await?;
    let stopping = collector.stopping.clone();
    let mut stopped = stopping.subscribe();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopping.send(true);
    });
    let addr = listener.local_addr().ok();
    info!(
        listen = ?addr,
        data_dir = %collector.config.data_dir.display(),
        "collector serving Ingest, Query, grpc.health.v1 and reflection"
    );
    // Accepted sockets get TCP_NODELAY here (the builder's setting only applies
    // to listeners it binds itself): without it a unary answer waits ~40 ms for
    // a delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(collector.config.max_streams_per_connection))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(ServeError::Transport)
}
