//! The `Query` service: answers questions about hosts.

use std::sync::Arc;

use nodewatch_proto::pb;
use tonic::{Request, Response, Status};

use crate::state::{HostRegistry, ResolveError};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct QueryService {
    registry: Arc<HostRegistry>,
    /// History store for series queries (absent: those answer UNAVAILABLE).
    store: Option<Arc<crate::store::Store>>,
}

impl QueryService {
    /// A service answering from `registry`.
    pub fn new(registry: Arc<HostRegistry>) -> Self {
        Self {
            registry,
            store: None,
        }
    }

    /// Answers series queries from `store`.
    pub fn with_store(mut self, store: Option<Arc<crate::store::Store>>) -> Self {
        self.store = store;
        self
    }

    /// Resolves a host argument to a host id, as a gRPC status on failure.
    pub fn resolve(&self, host: &str) -> Result<String, Status> {
        resolve(&self.registry, host)
    }
}

/// How long a watch update may wait for a slow client before it is dropped.
const WATCH_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The interval of a watch: 0 means 1 s, at least 200 ms.
pub fn watch_interval(interval_ms: u32) -> std::time::Duration {
    let ms = match interval_ms {
        0 => 1000,
        ms => ms.max(200),
    };
    std::time::Duration::from_millis(u64::from(ms))
}

/// Resolves a host id, hostname or unique prefix, mapping failures to statuses.
pub fn resolve(registry: &HostRegistry, host: &str) -> Result<String, Status> {
    if host.is_empty() {
        return Err(Status::invalid_argument("host must not be empty"));
    }
    registry.resolve(host).map_err(|e| match e {
        ResolveError::NotFound(_) => Status::not_found(e.to_string()),
        ResolveError::Ambiguous(..) => Status::invalid_argument(e.to_string()),
    })
}

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    async fn list_hosts(
        &self,
        _request: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        Ok(Response::new(pb::ListHostsResponse {
            hosts: self.registry.list(),
        }))
    }

    type WatchHostsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::ListHostsResponse, Status>> + Send>,
    >;

    async fn watch_hosts(
        &self,
        request: Request<pb::WatchHostsRequest>,
    ) -> Result<Response<Self::WatchHostsStream>, Status> {
        let interval = watch_interval(request.get_ref().interval_ms);
        let registry = self.registry.clone();
        // Small per-client queue: a client that does not read is dropped.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                let update = pb::ListHostsResponse {
                    hosts: registry.list(),
                };
                match tokio::time::timeout(WATCH_SEND_TIMEOUT, tx.send(Ok(update))).await {
                    Ok(Ok(())) => {}
                    // Gone, or not reading for too long: stop serving it.
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_host(
        &self,
        request: Request<pb::GetHostRequest>,
    ) -> Result<Response<pb::GetHostResponse>, Status> {
        let id = self.resolve(&request.get_ref().host)?;
        let (summary, latest) = self
            .registry
            .snapshot(&id)
            .ok_or_else(|| Status::not_found(format!("host {id} is gone")))?;
        Ok(Response::new(pb::GetHostResponse {
            summary: Some(summary),
            latest: Some(latest),
        }))
    }

    async fn get_syscall_latency(
        &self,
        request: Request<pb::GetSyscallLatencyRequest>,
    ) -> Result<Response<pb::GetSyscallLatencyResponse>, Status> {
        crate::latency::get_syscall_latency(&self.registry, request.get_ref()).map(Response::new)
    }

    async fn top_processes(
        &self,
        request: Request<pb::TopProcessesRequest>,
    ) -> Result<Response<pb::TopProcessesResponse>, Status> {
        crate::top::top_processes(&self.registry, request.get_ref()).map(Response::new)
    }
    async fn query_series(
        &self,
        request: Request<pb::QuerySeriesRequest>,
    ) -> Result<Response<pb::QuerySeriesResponse>, Status> {
        let store = self.history()?;
        let req = request.into_inner();
        blocking(move || crate::series_query::query_series(&store, &req)).await
    }

    async fn query_histogram(
        &self,
        request: Request<pb::QueryHistogramRequest>,
    ) -> Result<Response<pb::QueryHistogramResponse>, Status> {
        let store = self.history()?;
        let req = request.into_inner();
        blocking(move || crate::series_query::query_histogram(&store, &req)).await
    }

    async fn list_metrics(
        &self,
        request: Request<pb::ListMetricsRequest>,
    ) -> Result<Response<pb::ListMetricsResponse>, Status> {
        let store = self.history()?;
        let req = request.into_inner();
        blocking(move || crate::series_query::list_metrics(&store, &req)).await
    }

    async fn get_store_stats(
        &self,
        _request: Request<pb::GetStoreStatsRequest>,
    ) -> Result<Response<pb::GetStoreStatsResponse>, Status> {
        let store = self.history()?;
        blocking(move || Ok(crate::series_query::store_stats(&store))).await
    }
}

impl QueryService {
    fn history(&self) -> Result<Arc<crate::store::Store>, Status> {
        self.store
            .clone()
            .ok_or_else(|| Status::unavailable("this collector runs without a store"))
    }
}

/// Runs a store read off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<Response<T>, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("query task failed: {e}")))?
        .map(Response::new)
}
