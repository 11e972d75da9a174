//! Notifications: one bounded queue and one delivery task per receiver, so a
//! slow or absent receiver never blocks the detectors (nor ingest, which
//! never waits on them at all). A failed POST is retried with doubling delays
//! up to `retry_max`, in order, until `max_retry_age`; a full queue drops the
//! new notification. Every receiver counts what it queued, sent, retried and
//! dropped (after prometheus `notifier/`).

pub mod alertmanager;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nodewatch_proto::pb;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::lifecycle::Change;
use super::rule::Severity;
use crate::config::{DeliveryConfig, NotifyConfig};

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL is not a valid http URL.
    #[error("invalid receiver url {0:?}")]
    BadUrl(String),
    /// The request could not be sent or answered.
    #[error("request failed: {0}")]
    Request(String),
    /// The receiver answered with a non-2xx status.
    #[error("receiver answered {0}")]
    Status(u16),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What one receiver did since the collector started.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Notifications queued.
    pub queued: AtomicU64,
    /// Notifications delivered.
    pub sent: AtomicU64,
    /// Failed attempts (each retried).
    pub failed_attempts: AtomicU64,
    /// Notifications dropped: queue full, or undelivered past `max_retry_age`.
    pub dropped: AtomicU64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

enum Kind {
    Alertmanager { resend: Duration },
    Webhook,
}

struct Receiver {
    url: String,
    kind: Kind,
    tx: mpsc::Sender<Delivery>,
    stats: Arc<ReceiverStats>,
    last_resend: std::sync::Mutex<Option<Instant>>,
}

struct Delivery {
    url: String,
    body: Vec<u8>,
    created: Instant,
}

/// Every configured receiver.
pub struct Notifier {
    receivers: Vec<Receiver>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("receivers", &self.receivers.len())
            .finish()
    }
}

impl Notifier {
    /// Starts one delivery task per receiver (on the current tokio runtime).
    pub fn start(cfg: &NotifyConfig) -> Self {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let mut receivers = Vec::new();
        let mut add = |url: &str, kind: Kind, delivery: DeliveryConfig| {
            let (tx, rx) = mpsc::channel(delivery.queue);
            let stats = Arc::new(ReceiverStats::default());
            tokio::spawn(deliver(
                client.clone(),
                rx,
                delivery,
                stats.clone(),
                url.to_string(),
            ));
            receivers.push(Receiver {
                url: url.to_string(),
                kind,
                tx,
                stats,
                last_resend: std::sync::Mutex::new(None),
            });
        };
        for am in &cfg.alertmanager {
            add(
                &am.url,
                Kind::Alertmanager {
                    resend: am.resend_interval,
                },
                am.delivery(),
            );
        }
        for wh in &cfg.webhook {
            add(&wh.url, Kind::Webhook, wh.delivery());
        }
        Self { receivers }
    }

    /// A notifier with no receivers.
    pub fn none() -> Self {
        Self {
            receivers: Vec::new(),
        }
    }

    /// Queues the notifications of one tick's transitions (firing, severity
    /// changes while firing, resolved; pending alerts are not notified), and
    /// re-posts the firing alerts to Alertmanagers whose `resend_interval` is due.
    pub fn notify(&self, changes: &[Change], firing: &[pb::Alert], now: i64) {
        let notified: Vec<&Change> = changes
            .iter()
            .filter(|c| {
                matches!(
                    pb::AlertState::try_from(c.transition.to),
                    Ok(pb::AlertState::Firing | pb::AlertState::Resolved)
                )
            })
            .collect();
        for r in &self.receivers {
            match r.kind {
                Kind::Alertmanager { resend } => {
                    let mut last = r.last_resend.lock().unwrap_or_else(|e| e.into_inner());
                    let due = last.is_none_or(|t| t.elapsed() >= resend);
                    let mut alerts: Vec<&pb::Alert> = notified.iter().map(|c| &c.alert).collect();
                    if due {
                        *last = Some(Instant::now());
                        for a in firing {
                            if !alerts.iter().any(|b| b.id == a.id) {
                                alerts.push(a);
                            }
                        }
                    }
                    if !alerts.is_empty() {
                        let body = alertmanager::payload(&alerts, resend, now);
                        self.queue(
                            r,
                            format!("{}/api/v2/alerts", r.url.trim_end_matches('/')),
                            body,
                        );
                    }
                }
                Kind::Webhook => {
                    for c in &notified {
                        self.queue(r, r.url.clone(), webhook::payload(c));
                    }
                }
            }
        }
    }

    fn queue(&self, r: &Receiver, url: String, body: Vec<u8>) {
        r.stats.queued.fetch_add(1, Ordering::Relaxed);
        let d = Delivery {
            url,
            body,
            created: Instant::now(),
        };
        if r.tx.try_send(d).is_err() {
            r.stats.dropped.fetch_add(1, Ordering::Relaxed);
            warn!(receiver = %r.url, "notification queue full: notification dropped");
        }
    }

    /// Per receiver URL: queued, sent, failed attempts, dropped.
    pub fn stats(&self) -> Vec<(String, [u64; 4])> {
        self.receivers
            .iter()
            .map(|r| {
                let s = &r.stats;
                (
                    r.url.clone(),
                    [
                        s.queued.load(Ordering::Relaxed),
                        s.sent.load(Ordering::Relaxed),
                        s.failed_attempts.load(Ordering::Relaxed),
                        s.dropped.load(Ordering::Relaxed),
                    ],
                )
            })
            .collect()
    }
}

async fn deliver(
    client: HttpClient,
    mut rx: mpsc::Receiver<Delivery>,
    cfg: DeliveryConfig,
    stats: Arc<ReceiverStats>,
    name: String,
) {
    while let Some(d) = rx.recv().await {
        let mut delay = cfg.retry_min;
        let mut failing = false;
        loop {
            match post(&client, &d.url, &d.body, cfg.timeout).await {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        info!(receiver = %name, "notifications delivered again");
                    }
                    break;
                }
                Err(e) => {
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        warn!(receiver = %name, error = %e, "notification failed; retrying");
                        failing = true;
                    }
                    if d.created.elapsed() >= cfg.max_retry_age {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        warn!(receiver = %name, "notification undelivered for {:?}: dropped", cfg.max_retry_age);
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(cfg.retry_max);
                }
            }
        }
    }
}

async fn post(
    client: &HttpClient,
    url: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(), NotifyError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| NotifyError::BadUrl(url.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(NotifyError::BadUrl(url.to_string()));
    }
    let req = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_vec())))
        .map_err(|e| NotifyError::Request(e.to_string()))?;
    let attempt = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| NotifyError::Request(nodewatch_proto::daemon::root_cause(&e)))?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(NotifyError::Status(status.as_u16()))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| NotifyError::Timeout(timeout))?
}

/// Lowercase severity name of an alert.
fn severity_name(a: &pb::Alert) -> &'static str {
    Severity::from_pb(pb::AlertSeverity::try_from(a.severity).unwrap_or_default())
        .map_or("none", Severity::name)
}

/// Alertmanager labels: `alertname` (= rule), `severity`, `host`, `hostname`
/// and the subject's fields that apply.
pub fn labels(a: &pb::Alert) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".into(), a.rule.clone());
    l.insert("severity".into(), severity_name(a).into());
    l.insert("host".into(), a.host_id.clone());
    l.insert("hostname".into(), a.hostname.clone());
    if let Some(s) = &a.subject {
        let mut put = |k: &str, v: String| {
            if !v.is_empty() && v != "0" {
                l.insert(k.to_string(), v);
            }
        };
        put("pid", s.pid.to_string());
        put("start_time_ticks", s.start_time_ticks.to_string());
        put("process", s.process.clone());
        put("cgroup", s.cgroup.clone());
        put("mount", s.mount.clone());
        put("device", s.device.clone());
        put("address", s.address.clone());
        put("port", s.port.to_string());
        put("destination", s.destination.clone());
        put("resource", s.resource.clone());
    }
    l
}

/// Alertmanager annotations: `summary`, `evidence` (one line), `time_to_impact`, `alert_id`.
pub fn annotations(a: &pb::Alert) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("summary".into(), a.summary.clone());
    m.insert("alert_id".into(), a.id.clone());
    if let Some(e) = &a.evidence {
        let mut parts = vec![
            format!("value={}", e.value),
            format!("threshold={}", e.threshold),
        ];
        if e.window_seconds > 0.0 {
            parts.push(format!("window={}s", e.window_seconds.round()));
        }
        for v in &e.values {
            parts.push(format!(
                "{}={}{}",
                v.name,
                v.value,
                if v.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", v.unit)
                }
            ));
        }
        m.insert("evidence".into(), parts.join(", "));
    }
    if let Some(t) = a.time_to_impact_seconds {
        m.insert("time_to_impact_seconds".into(), format!("{t:.0}"));
    }
    m
}

/// RFC 3339 of Unix nanoseconds.
fn rfc3339(unix_nano: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(unix_nano.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
