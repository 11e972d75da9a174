//! Detection and alerting. Every `[detect] interval` the [`Detector`]
//! evaluates every rule for every host — from the host registry (latest
//! snapshot, recent batches) and, for long windows, from the store through
//! the query layer — and runs each (rule, host, subject) through the alert
//! lifecycle. Transitions are persisted (`alerts.redb`), logged one line each,
//! streamed to watchers and queued to the notifiers. Nothing here knows gRPC.
//!
//! - `rule.rs`: the [`Rule`] trait, severities, observations.
//! - `rules/`: the rules, one file per family.
//! - `fit.rs`: Theil–Sen slopes with a confidence band; series splitting.
//! - `lifecycle.rs`: pending -> firing -> resolved, hysteresis, `keep_firing_for`.
//! - `store.rs`: alerts across restarts.
//! - `notify/`: Alertmanager and webhooks, bounded queues, retries.

pub mod fit;
pub mod lifecycle;
pub mod notify;
pub mod rule;
pub mod rules;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewatch_proto::pb;
use nodewatch_proto::time::unix_nanos;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::config::{CollectorConfig, DetectConfig};
use crate::hosts::HostRegistry;
use crate::query::series::query_series;
use crate::store::Store;
use lifecycle::{AlertBook, Change, HostRef, Outcome, TrackedAlert};
use notify::Notifier;
use rule::{History, HostView, LabeledSeries, Rule};
use store::{AlertStore, AlertStoreError};

/// Transitions buffered for slow watchers before they miss some.
const WATCH_BUFFER: usize = 1024;

/// The store's history through the query layer.
struct StoreHistory<'a>(&'a Store);

impl History for StoreHistory<'_> {
    fn series(
        &self,
        host_id: &str,
        metric: &str,
        end: i64,
        window: Duration,
        points: u32,
    ) -> Vec<LabeledSeries> {
        let window_ns = nodewatch_proto::time::duration_nanos(window);
        let step = (window_ns / i64::from(points.max(1))).max(1);
        let req = pb::QuerySeriesRequest {
            host: host_id.to_string(),
            metric: metric.to_string(),
            start_unix_nano: end.saturating_sub(window_ns).max(1),
            end_unix_nano: end.max(1),
            step_nanos: step,
            aggregation: pb::Aggregation::Avg as i32,
            limit: crate::query::MAX_SERIES_LIMIT as u32,
            ..Default::default()
        };
        match query_series(self.0, &req) {
            Ok(r) => r
                .series
                .into_iter()
                .map(|s| {
                    (
                        s.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                        s.points
                            .into_iter()
                            .map(|p| (p.time_unix_nano, p.value))
                            .collect(),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Why the detector could not start.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The alert database failed.
    #[error(transparent)]
    Store(#[from] AlertStoreError),
}

/// The detectors, the alert book and where alerts go.
pub struct Detector {
    config: DetectConfig,
    rules: Vec<Box<dyn Rule>>,
    registry: Arc<HostRegistry>,
    store: Arc<Store>,
    book: Mutex<AlertBook>,
    alerts_db: AlertStore,
    events: broadcast::Sender<Change>,
    notifier: Mutex<Notifier>,
    started: SystemTime,
    /// Intervals without a batch after which a host's data is stale.
    silent_after: u32,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Opens the alert database in the data directory and restores its alerts.
    pub fn open(
        config: &CollectorConfig,
        registry: Arc<HostRegistry>,
        store: Arc<Store>,
    ) -> Result<Self, DetectError> {
        let alerts_db = AlertStore::open(&config.data_dir)?;
        let restored = alerts_db.load()?;
        let active = restored.iter().filter(|a| a.active()).count();
        if !restored.is_empty() {
            info!(alerts = restored.len(), active, "alerts restored");
        }
        Ok(Self {
            config: config.detect.clone(),
            rules: rules::build(&config.rules, config.detect.hysteresis),
            registry,
            store,
            book: Mutex::new(AlertBook::restore(restored)),
            alerts_db,
            events: broadcast::channel(WATCH_BUFFER).0,
            notifier: Mutex::new(Notifier::none()),
            started: SystemTime::now(),
            silent_after: config.rules.agent_silent.missed_intervals.max(1),
        })
    }

    /// Starts the receivers of `config` and the evaluation loop on the
    /// current tokio runtime; the loop ends when `stopping` turns true.
    pub fn spawn(self: &Arc<Self>, config: &CollectorConfig, mut stopping: watch::Receiver<bool>) {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = Notifier::start(&config.notify);
        if !self.config.enabled {
            info!("detectors disabled ([detect] enabled = false)");
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval(me.config.interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopping.wait_for(|s| *s) => break,
                }
                let d = me.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || d.tick(SystemTime::now())).await
                {
                    warn!(error = %e, "detector tick failed");
                }
            }
        });
    }

    /// One evaluation of every rule for every host at `now`: applies the
    /// lifecycle, persists, logs and notifies; returns the transitions.
    pub fn tick(&self, now: SystemTime) -> Vec<Change> {
        let now_ns = unix_nanos(now);
        let history = StoreHistory(&self.store);
        let mut evaluations = Vec::new();
        for summary in self.registry.list() {
            let Some(id) = summary.identity.as_ref().map(|i| i.host_id.clone()) else {
                continue;
            };
            let Some(state) = self.registry.get(&id) else {
                continue;
            };
            let latest = state.latest.merged().unwrap_or_default();
            let recent: Vec<Arc<pb::Batch>> = state.recent.iter().cloned().collect();
            let hostname = state
                .hello
                .host
                .as_ref()
                .map_or("", |h| h.hostname.as_str());
            let interval_ms = state
                .hello
                .capabilities
                .as_ref()
                .map_or(0, |c| c.interval_ms);
            let view = HostView {
                host_id: &id,
                hostname,
                labels: &state.hello.labels,
                latest: &latest,
                recent: &recent,
                last_seen: state.last_seen,
                interval: Duration::from_millis(u64::from(interval_ms)),
                now,
                started: self.started,
                history: &history,
            };
            // A host whose data stopped is judged by agent_silent alone: the
            // other rules keep their alerts as they are (stale data neither
            // raises nor resolves anything).
            let allowed = view.interval.max(Duration::from_secs(1)) * self.silent_after
                + self.config.interval;
            let fresh = now.duration_since(view.last_seen).unwrap_or_default() <= allowed;
            for (i, rule) in self.rules.iter().enumerate() {
                let common = rule.common();
                let applies = common.enabled
                    && common
                        .hosts
                        .iter()
                        .all(|(k, v)| view.labels.get(k) == Some(v));
                let eval = if applies && !fresh && rule.name() != "agent_silent" {
                    rule::Evaluation::default()
                } else if applies {
                    rule.evaluate(&view)
                } else {
                    rule::Evaluation {
                        observations: Vec::new(),
                        complete: true,
                    }
                };
                evaluations.push((i, id.clone(), hostname.to_string(), eval));
            }
        }
        let mut out = Outcome::default();
        let (changes, firing, put, removed) = {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            for (i, host_id, hostname, eval) in evaluations {
                let rule = &self.rules[i];
                let host = HostRef {
                    id: &host_id,
                    name: &hostname,
                };
                book.apply(rule.name(), rule.common(), host, eval, now_ns, &mut out);
            }
            let mut removed: Vec<String> = out.removed.iter().cloned().collect();
            removed.extend(book.purge(self.config.keep_resolved, now_ns));
            let put: Vec<TrackedAlert> = out
                .touched
                .iter()
                .filter_map(|id| book.get(id).cloned())
                .collect();
            let firing: Vec<pb::Alert> = book
                .iter()
                .filter(|a| a.alert.state == pb::AlertState::Firing as i32)
                .map(|a| a.alert.clone())
                .collect();
            (out.changes, firing, put, removed)
        };
        let refs: Vec<&TrackedAlert> = put.iter().collect();
        if let Err(e) = self.alerts_db.save(&refs, &removed) {
            warn!(error = %e, "cannot persist alerts");
        }
        for c in &changes {
            log_transition(c);
            let _ = self.events.send(c.clone());
        }
        self.notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .notify(&changes, &firing, now_ns);
        changes
    }

    /// Every alert the collector keeps (active and recently resolved).
    pub fn alerts(&self) -> Vec<pb::Alert> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.iter().map(|a| a.alert.clone()).collect()
    }

    /// Every alert with its timeline, by id.
    pub fn timelines(&self) -> HashMap<String, pb::GetAlertResponse> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.iter()
            .map(|a| {
                (
                    a.alert.id.clone(),
                    pb::GetAlertResponse {
                        alert: Some(a.alert.clone()),
                        timeline: a.timeline.clone(),
                    },
                )
            })
            .collect()
    }

    /// Every transition from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.events.subscribe()
    }

    /// Per receiver URL: queued, sent, failed attempts, dropped.
    pub fn notify_stats(&self) -> Vec<(String, [u64; 4])> {
        self.notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
    }
}

fn state_name(s: i32) -> &'static str {
    match pb::AlertState::try_from(s).unwrap_or_default() {
        pb::AlertState::Unspecified => "new",
        pb::AlertState::Pending => "pending",
        pb::AlertState::Firing => "firing",
        pb::AlertState::Resolved => "resolved",
        pb::AlertState::Inactive => "inactive",
    }
}

fn log_transition(c: &Change) {
    let a = &c.alert;
    let sev = rule::Severity::from_pb(pb::AlertSeverity::try_from(a.severity).unwrap_or_default())
        .map_or("none", rule::Severity::name);
    info!(
        alert = %a.id,
        rule = %a.rule,
        host = %a.hostname,
        severity = sev,
        from = state_name(c.transition.from),
        to = state_name(c.transition.to),
        "alert {}: {}",
        state_name(c.transition.to),
        a.summary
    );
}

/// Seconds since the epoch of an alert timestamp, for readers that need SystemTime.
pub fn system_time(unix_nano: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nano.max(0) as u64)
}
