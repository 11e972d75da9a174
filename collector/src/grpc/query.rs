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
use crate::detect::Detector;
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
    alerts: Option<Arc<Detector>>,
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
            alerts: None,
        }
    }

    /// Also answers the alert rpcs from `detector`.
    pub fn with_alerts(mut self, detector: Arc<Detector>) -> Self {
        self.alerts = Some(detector);
        self
    }

    fn detector(&self) -> Result<&Arc<Detector>, Status> {
        self.alerts
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this collector runs no detectors"))
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

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let detector = self.detector()?;
        let filter = query::alerts::AlertFilter::new(&self.registry, request.get_ref())
            .map_err(|e| status::query(&e))?;
        Ok(Response::new(query::alerts::list(
            detector.alerts(),
            &filter,
        )))
    }

    async fn get_alert(
        &self,
        request: Request<pb::GetAlertRequest>,
    ) -> Result<Response<pb::GetAlertResponse>, Status> {
        let detector = self.detector()?;
        match query::alerts::get(detector.timelines(), &request.get_ref().id) {
            Ok(a) => Ok(Response::new(a)),
            Err(query::alerts::AlertLookupError::NotFound(id)) => {
                Err(Status::not_found(format!("no alert {id:?}")))
            }
            Err(query::alerts::AlertLookupError::Invalid(e)) => Err(status::query(&e)),
        }
    }

    type WatchAlertsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchAlertsResponse, Status>> + Send>>;

    async fn watch_alerts(
        &self,
        request: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let detector = self.detector()?.clone();
        let req = request.into_inner().filter.unwrap_or_default();
        let filter =
            query::alerts::AlertFilter::new(&self.registry, &req).map_err(|e| status::query(&e))?;
        // Subscribe before the snapshot: no transition falls in between.
        let mut events = detector.subscribe();
        let initial = query::alerts::list(detector.alerts(), &filter).alerts;
        let mut stopping = self.stopping.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for alert in initial {
                let msg = pb::WatchAlertsResponse {
                    alert: Some(alert),
                    transition: None,
                    initial: true,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            // Transitions pass the filter on everything but the state, so a
            // watcher of firing alerts also sees them resolve.
            let mut any_state = filter.clone();
            any_state.any_state();
            loop {
                let change = tokio::select! {
                    c = events.recv() => c,
                    _ = stopping.wait_for(|stop| *stop) => break,
                };
                let change = match change {
                    Ok(c) => c,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "watcher fell behind by {n} transitions; watch again"
                            ))))
                            .await;
                        break;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if !any_state.matches(&change.alert) {
                    continue;
                }
                let msg = pb::WatchAlertsResponse {
                    alert: Some(change.alert),
                    transition: Some(change.transition),
                    initial: false,
                };
                match tokio::time::timeout(WATCH_SEND_TIMEOUT, tx.send(Ok(msg))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
