//! Streams batches to the collector over `Ingest.Stream`, reconnecting with
//! exponential backoff and jitter. Batches stay in the [`Outbox`] until the
//! collector acknowledges them as durable, so a collector outage loses nothing
//! as long as the outbox bound holds.

mod backoff;
mod session;

use std::sync::Arc;

use nodewatch_proto::pb;
use tokio::sync::watch;
use tracing::{debug, warn};

pub use self::backoff::Backoff;
use self::session::session;
use crate::outbox::Outbox;

/// Streams to one collector until `shutdown` turns true.
pub struct Client {
    /// Collector URI.
    pub uri: String,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Builds the Hello of each new stream (capabilities may change).
    pub hello: Box<dyn Fn() -> pb::Hello + Send + Sync>,
    /// Batches to send.
    pub outbox: Arc<dyn Outbox>,
}

impl Client {
    /// Runs sessions back to back until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                r = session(&self.uri, &*self.hello, &*self.outbox, &mut failures) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match result {
                Ok(()) => {}
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(collector = %self.uri, "collector unreachable: {e}; retrying with backoff, batches are kept meanwhile");
                    } else {
                        debug!(collector = %self.uri, failures, "still unreachable: {e}");
                    }
                }
            }
            let delay = self.backoff.delay(failures.max(1));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
