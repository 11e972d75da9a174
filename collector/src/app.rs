//! Wiring: a configuration and an opened store become a running collector's
//! shared state (registry, ingest pipeline, store, detectors), which `grpc` serves.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::CollectorConfig;
use crate::detect::{DetectError, Detector};
use crate::hosts::{HostRegistry, StateLimits};
use crate::ingest::IngestPipeline;
use crate::ingest::validate::ValidationLimits;
use crate::store::{Store, StoreError};

/// Why the collector could not open its data.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The alert database could not be opened.
    #[error(transparent)]
    Detect(#[from] DetectError),
}

/// A running collector's shared state.
#[derive(Debug, Clone)]
pub struct Collector {
    /// Every known host.
    pub registry: Arc<HostRegistry>,
    /// The ingest path.
    pub pipeline: Arc<IngestPipeline>,
    /// The embedded store.
    pub store: Arc<Store>,
    /// The detectors and their alerts.
    pub detector: Arc<Detector>,
    /// The configuration it runs with.
    pub config: CollectorConfig,
    /// Turns true when the collector stops: streams end cleanly.
    pub stopping: Arc<watch::Sender<bool>>,
}

impl Collector {
    /// Opens the store and the alert database in `config.data_dir` and builds
    /// the collector around them; inside a tokio runtime the detectors start.
    pub fn open(config: CollectorConfig) -> Result<Self, OpenError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::Io {
            op: "create data directory",
            source,
        })?;
        let store = Store::open(&config.data_dir, config.store_config())?;
        Self::new(config, Arc::new(store))
    }

    /// Builds the collector around an opened store: hosts known to the store
    /// are restored into the registry, batches are stored durably and history
    /// queries answered from it; alerts are restored from `alerts.redb` and,
    /// inside a tokio runtime, the detectors and notifiers start.
    pub fn new(config: CollectorConfig, store: Arc<Store>) -> Result<Self, OpenError> {
        let registry = Arc::new(HostRegistry::new(StateLimits {
            max_hosts: config.max_hosts,
            history: config.history,
            ..StateLimits::default()
        }));
        for host in store.hosts() {
            if let Some(hello) = host.hello {
                let last_seen =
                    UNIX_EPOCH + Duration::from_nanos(host.last_seen_unix_nano.max(0) as u64);
                registry.restore(hello, last_seen, host.latest);
            }
        }
        let pipeline = Arc::new(IngestPipeline::new(
            registry.clone(),
            store.clone(),
            ValidationLimits {
                max_age: config.max_batch_age,
                max_future: config.max_clock_skew,
            },
        ));
        let stopping = Arc::new(watch::channel(false).0);
        let detector = Arc::new(Detector::open(&config, registry.clone(), store.clone())?);
        if tokio::runtime::Handle::try_current().is_ok() {
            detector.spawn(&config, stopping.subscribe());
        }
        Ok(Self {
            registry,
            pipeline,
            store,
            detector,
            config,
            stopping,
        })
    }
}
