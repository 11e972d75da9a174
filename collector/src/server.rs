//! Assembles the collector's gRPC services and serves them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nodewatch_proto::pb;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tracing::info;

use crate::config::CollectorConfig;
use crate::ingest::{IngestPipeline, IngestService};
use crate::query::QueryService;
use crate::state::{HostRegistry, StateLimits};
use crate::validate::ValidationLimits;

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

/// A running collector's shared state.
#[derive(Debug, Clone)]
pub struct Collector {
    /// Every known host.
    pub registry: Arc<HostRegistry>,
    /// The ingest path.
    pub pipeline: Arc<IngestPipeline>,
    /// The embedded store, when the collector keeps history on disk.
    pub store: Option<Arc<crate::store::Store>>,
    config: CollectorConfig,
}

impl Collector {
    /// Builds the collector's state from its configuration.
    pub fn new(config: CollectorConfig) -> Self {
        let registry = Arc::new(HostRegistry::new(StateLimits {
            max_hosts: config.max_hosts,
            history: config.history,
            ..StateLimits::default()
        }));
        let pipeline = Arc::new(IngestPipeline::new(
            registry.clone(),
            ValidationLimits {
                max_age: config.max_batch_age,
                max_future: config.max_clock_skew,
            },
        ));
        Self {
            registry,
            pipeline,
            store: None,
            config,
        }
    }

    /// Builds the collector around an opened store: hosts known to the store are
    /// restored, batches are stored durably and history queries answered from it.
    pub fn with_store(config: CollectorConfig, store: Arc<crate::store::Store>) -> Self {
        let mut collector = Self::new(config);
        for host in store.hosts() {
            if let Some(hello) = host.hello {
                let last_seen = std::time::UNIX_EPOCH
                    + Duration::from_nanos(host.last_seen_unix_nano.max(0) as u64);
                collector.registry.restore(hello, last_seen, host.latest);
            }
        }
        let pipeline = Arc::try_unwrap(collector.pipeline)
            .unwrap_or_else(|_| unreachable!("the pipeline was just created"));
        collector.pipeline = Arc::new(pipeline.with_store(store.clone()));
        collector.store = Some(store);
        collector
    }

    /// Every service the collector serves: Ingest, Query, grpc.health.v1 and
    /// server reflection (v1 and v1alpha) over all of them.
    pub async fn routes(&self) -> Result<Routes, ServeError> {
        let max = self.config.max_message_bytes;
        let ingest = pb::ingest_server::IngestServer::new(IngestService::new(
            self.pipeline.clone(),
            self.registry.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let query = pb::query_server::QueryServer::new(
            QueryService::new(self.registry.clone()).with_store(self.store.clone()),
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

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let routes = self.routes().await?;
        let addr = listener.local_addr().ok();
        info!(
            listen = ?addr,
            data_dir = %self.config.data_dir.display(),
            "collector serving Ingest, Query, grpc.health.v1 and reflection"
        );
        // Accepted sockets get TCP_NODELAY here (the builder's setting only applies
        // to listeners it binds itself): without it a unary answer waits ~40 ms for
        // a delayed ACK.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(ServeError::Transport)
    }
}
