//! Wiring: a configuration and an opened store become a running collector's
//! shared state (registry, ingest pipeline, store), which `grpc` serves.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::CollectorConfig;
use crate::hosts::{HostRegistry, StateLimits};
use crate::ingest::IngestPipeline;
use crate::ingest::validate::ValidationLimits;
use crate::store::{Store, StoreError};

/// A running collector's shared state.
#[derive(Debug, Clone)]
pub struct Collector {
    /// Every known host.
    pub registry: Arc<HostRegistry>,
    /// The ingest path.
    pub pipeline: Arc<IngestPipeline>,
    /// The embedded store.
    pub store: Arc<Store>,
    /// The configuration it runs with.
    pub config: CollectorConfig,
    /// Turns true when the collector stops: streams end cleanly.
    pub stopping: Arc<watch::Sender<bool>>,
}

impl Collector {
    /// Opens the store in `config.data_dir` and builds the collector around it.
    pub fn open(config: CollectorConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::Io {
            op: "create data directory",
            source,
        })?;
        let store = Store::open(&config.data_dir, config.store_config())?;
        Ok(Self::new(config, Arc::new(store)))
    }

    /// Builds the collector around an opened store: hosts known to the store
    /// are restored into the registry, batches are stored durably and history
    /// queries answered from it.
    pub fn new(config: CollectorConfig, store: Arc<Store>) -> Self {
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
        Self {
            registry,
            pipeline,
            store,
            config,
            stopping: Arc::new(watch::channel(false).0),
        }
    }
}
