//! `nodewatch.v1.Query`: a thin adapter over [`crate::query`]. Store reads run
//! on tokio's blocking pool; errors become statuses in [`super::status`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use nodewatch_proto::pb;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::status;
use crate::hosts::HostRegistry;
use crate::query::{self, QueryError};
use crate::store::Store;

/// How long a watch update may wait for a slow client before it is dropped.
const WATCH_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// `nodewatch.v1.Query` over the registry (recent data) and the store (history).
#[derive(Debug, Clone)]
pub struct QueryService {
    registry: Arc<HostRegistry>,
    store: Arc<Store>,
    stopping: watch::Receiver<bool>,
}

impl QueryService {
    /// A service answering from `registry` and `store`; host watches end when
    /// `stopping` turns true.
    pub fn new(
        registry: Arc<HostRegistry>,
        store: Arc<Store>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            registry,
            store,
            stopping,
        }
    }

    /// Runs a store read off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, QueryError> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| QueryError::Task(e.to_string()))
            .and_then(|r| r)
            .map(Response::new)
            .map_err(|e| status::query(&e))
    }
}

fn answer<T>(result: Result<T, QueryError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|e| status::query(&e))
}

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    async fn list_hosts(
        &self,
        _request: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        Ok(Response::new(query::hosts::list(&self.registry)))
    }

    type WatchHostsStream =
        Pin<Box<dyn Stream<Item = Result<pb::ListHostsResponse, Status>> + Send>>;

    async fn watch_hosts(
        &self,
        request: Request<pb::WatchHostsRequest>,
    ) -> Result<Response<Self::WatchHostsStream>, Status> {
        let interval = query::hosts::watch_interval(request.get_ref().interval_ms);
        let registry = self.registry.clone();
        let mut stopping = self.stopping.clone();
        // Small per-client queue: a client that does not read is dropped.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopping.wait_for(|stop| *stop) => break,
                }
                let update = query::hosts::list(&registry);
                match tokio::time::timeout(WATCH_SEND_TIMEOUT, tx.send(Ok(update))).await {
                    Ok(Ok(())) => {}
                    // Gone, or not reading for too long: stop serving it.
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_host(
        &self,
        request: Request<pb::GetHostRequest>,
    ) -> Result<Response<pb::GetHostResponse>, Status> {
        answer(query::hosts::get(&self.registry, &request.get_ref().host))
    }

    async fn get_syscall_latency(
        &self,
        request: Request<pb::GetSyscallLatencyRequest>,
    ) -> Result<Response<pb::GetSyscallLatencyResponse>, Status> {
        answer(query::latency::get_syscall_latency(
            &self.registry,
            request.get_ref(),
        ))
    }

    async fn top_processes(
        &self,
        request: Request<pb::TopProcessesRequest>,
    ) -> Result<Response<pb::TopProcessesResponse>, Status> {
        answer(query::top::top_processes(&self.registry, request.get_ref()))
    }

    async fn query_series(
        &self,
        request: Request<pb::QuerySeriesRequest>,
    ) -> Result<Response<pb::QuerySeriesResponse>, Status> {
        let req = request.into_inner();
        self.blocking(move |store| query::series::query_series(store, &req))
            .await
    }

    async fn query_histogram(
        &self,
        request: Request<pb::QueryHistogramRequest>,
    ) -> Result<Response<pb::QueryHistogramResponse>, Status> {
        let req = request.into_inner();
        self.blocking(move |store| query::histogram::query_histogram(store, &req))
            .await
    }

    async fn list_metrics(
        &self,
        request: Request<pb::ListMetricsRequest>,
    ) -> Result<Response<pb::ListMetricsResponse>, Status> {
        let req = request.into_inner();
        self.blocking(move |store| query::series::list_metrics(store, &req))
            .await
    }

    async fn get_store_stats(
        &self,
        _request: Request<pb::GetStoreStatsRequest>,
    ) -> Result<Response<pb::GetStoreStatsResponse>, Status> {
        self.blocking(|store| Ok(query::series::store_stats(store)))
            .await
    }
}
