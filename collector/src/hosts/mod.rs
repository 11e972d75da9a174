//! In-memory state of every known host: identity, connection, the latest
//! snapshot and a bounded window of recent batches for fresh queries.
//!
//! The registry is bounded: at most `max_hosts` hosts, and per host at most
//! `history` of batches (by age) capped at `max_history_batches`. Host names
//! resolve the same way here and in the store ([`resolve_host`]); the latest
//! parts of a host's batches are kept the same way too ([`LatestParts`]).

mod latest;
mod resolve;

pub use latest::LatestParts;
pub use resolve::{ResolveError, resolve_host};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewatch_proto::time::unix_nanos;

use nodewatch_proto::pb;

use crate::config;

/// Why the registry refused something.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The registry already tracks the configured maximum number of hosts.
    #[error("host limit reached: the collector already tracks {0} hosts (raise `max_hosts`)")]
    TooManyHosts(usize),
}

/// Limits of the in-memory host state.
#[derive(Debug, Clone)]
pub struct StateLimits {
    /// Most hosts tracked at once.
    pub max_hosts: usize,
    /// How far back recent batches are kept in memory.
    pub history: Duration,
    /// Most recent batches kept per host, whatever their age.
    pub max_history_batches: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_hosts: config::DEFAULT_MAX_HOSTS,
            history: config::DEFAULT_HISTORY,
            max_history_batches: config::DEFAULT_MAX_HISTORY_BATCHES,
        }
    }
}

/// Everything the collector keeps in memory about one host.
#[derive(Debug, Clone)]
pub struct HostState {
    /// The agent's latest Hello.
    pub hello: pb::Hello,
    /// When the latest batch arrived (collector clock).
    pub last_seen: SystemTime,
    /// Streams currently open for this host.
    pub open_streams: u32,
    /// Latest value of every batch part.
    pub latest: LatestParts,
    /// Recent batches, oldest first.
    pub recent: VecDeque<Arc<pb::Batch>>,
    /// Batches received since the collector started.
    pub batches_received: u64,
}

impl HostState {
    fn new(hello: pb::Hello) -> Self {
        Self {
            hello,
            last_seen: UNIX_EPOCH,
            open_streams: 0,
            latest: LatestParts::default(),
            recent: VecDeque::new(),
            batches_received: 0,
        }
    }

    /// Headline figures for `ListHosts` / `GetHost`.
    pub fn summary(&self) -> pb::HostSummary {
        let cpu = self.latest.cpu();
        let mem = self.latest.memory();
        let total = mem.map_or(0, |m| m.total_bytes);
        let available = mem.map_or(0, |m| m.available_bytes);
        pb::HostSummary {
            identity: self.hello.host.clone(),
            agent_version: self.hello.agent_version.clone(),
            labels: self.hello.labels.clone(),
            capabilities: self.hello.capabilities.clone(),
            last_seen_unix_nano: unix_nanos(self.last_seen),
            connected: self.open_streams > 0,
            sample_time_unix_nano: self.latest.time_unix_nano(),
            cpu_busy_ratio: cpu
                .and_then(|c| c.total.as_ref())
                .map_or(0.0, |t| t.busy_ratio),
            load1: cpu.map_or(0.0, |c| c.load1),
            memory_total_bytes: total,
            memory_available_bytes: available,
            memory_used_ratio: if total > 0 {
                1.0 - available as f64 / total as f64
            } else {
                0.0
            },
            batches_received: self.batches_received,
        }
    }
}

/// All hosts, shared by the ingest and query services.
#[derive(Debug, Default)]
pub struct HostRegistry {
    limits: StateLimits,
    hosts: RwLock<HashMap<String, HostState>>,
}

impl HostRegistry {
    /// An empty registry with the given limits.
    pub fn new(limits: StateLimits) -> Self {
        Self {
            limits,
            hosts: RwLock::new(HashMap::new()),
        }
    }

    /// Records a new stream for the host of `hello`, creating the host if needed.
    pub fn connect(&self, hello: &pb::Hello) -> Result<(), StateError> {
        let id = host_id(hello).to_string();
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        if !hosts.contains_key(&id) && hosts.len() >= self.limits.max_hosts {
            return Err(StateError::TooManyHosts(hosts.len()));
        }
        let host = hosts
            .entry(id)
            .or_insert_with(|| HostState::new(hello.clone()));
        host.hello = hello.clone();
        host.open_streams += 1;
        Ok(())
    }

    /// Records the end of a stream of `host_id`.
    pub fn disconnect(&self, host_id: &str) {
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        if let Some(host) = hosts.get_mut(host_id) {
            host.open_streams = host.open_streams.saturating_sub(1);
        }
    }

    /// Restores a host known from storage (not connected) at start-up.
    pub fn restore(&self, hello: pb::Hello, last_seen: SystemTime, latest: Option<pb::Batch>) {
        let id = host_id(&hello).to_string();
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        if hosts.len() >= self.limits.max_hosts {
            return;
        }
        let mut host = HostState::new(hello);
        host.last_seen = last_seen;
        if let Some(batch) = latest {
            host.latest.update(&Arc::new(batch));
        }
        hosts.insert(id, host);
    }

    /// Applies a stored batch of `host_id`: updates the latest snapshot and the recent window.
    pub fn apply(&self, host_id: &str, batch: pb::Batch, now: SystemTime) {
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        let Some(host) = hosts.get_mut(host_id) else {
            return;
        };
        host.last_seen = now;
        host.batches_received += 1;
        // A batch older than the newest (a backlog replayed behind live data)
        // is history: stored, but neither the latest figures nor the recent
        // window, which stays in time order.
        if batch.time_unix_nano < host.latest.time_unix_nano() {
            return;
        }
        let batch = Arc::new(batch);
        host.latest.update(&batch);
        host.recent.push_back(batch);
        let oldest_kept = host.latest.time_unix_nano()
            - i64::try_from(self.limits.history.as_nanos()).unwrap_or(i64::MAX);
        while host.recent.len() > self.limits.max_history_batches
            || host
                .recent
                .front()
                .is_some_and(|b| b.time_unix_nano < oldest_kept)
        {
            host.recent.pop_front();
        }
    }

    /// Summaries of every host, sorted by hostname then id.
    pub fn list(&self) -> Vec<pb::HostSummary> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = hosts.values().map(HostState::summary).collect();
        out.sort_by(|a, b| {
            let key = |s: &pb::HostSummary| {
                s.identity
                    .as_ref()
                    .map(|i| (i.hostname.clone(), i.host_id.clone()))
                    .unwrap_or_default()
            };
            key(a).cmp(&key(b))
        });
        out
    }

    /// Resolves a host id, hostname or unique prefix of either to a host id.
    pub fn resolve(&self, name: &str) -> Result<String, ResolveError> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        resolve_host(
            name,
            hosts.iter().map(|(id, h)| {
                let hostname = h.hello.host.as_ref().map_or("", |i| i.hostname.as_str());
                (id.as_str(), hostname)
            }),
        )
    }

    /// A copy of one host's state.
    pub fn get(&self, host_id: &str) -> Option<HostState> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        hosts.get(host_id).cloned()
    }

    /// Summary and latest snapshot of one host.
    pub fn snapshot(&self, host_id: &str) -> Option<(pb::HostSummary, pb::Batch)> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        hosts
            .get(host_id)
            .map(|h| (h.summary(), h.latest.merged().unwrap_or_default()))
    }

    /// Recent batches of a host with `time_unix_nano >= since_unix_nano`, oldest first.
    pub fn recent_batches(&self, host_id: &str, since_unix_nano: i64) -> Vec<Arc<pb::Batch>> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        hosts.get(host_id).map_or_else(Vec::new, |h| {
            h.recent
                .iter()
                .filter(|b| b.time_unix_nano >= since_unix_nano)
                .cloned()
                .collect()
        })
    }
}

fn host_id(hello: &pb::Hello) -> &str {
    hello.host.as_ref().map_or("", |h| h.host_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str, name: &str) -> pb::Hello {
        pb::Hello {
            host: Some(pb::HostIdentity {
                host_id: id.into(),
                hostname: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn batch(seq: u64, t: i64, rss: Option<u64>) -> pb::Batch {
        pb::Batch {
            seq,
            time_unix_nano: t,
            memory: Some(pb::MemoryStats {
                total_bytes: 100,
                available_bytes: 25,
                ..Default::default()
            }),
            processes: rss
                .map(|rss| {
                    vec![pb::ProcessStats {
                        pid: 1,
                        rss_bytes: rss,
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn latest_keeps_parts_from_older_batches() {
        let reg = HostRegistry::new(StateLimits::default());
        reg.connect(&hello("aa11", "web-1")).unwrap();
        reg.apply("aa11", batch(1, 10, Some(7)), SystemTime::now());
        reg.apply("aa11", batch(2, 20, None), SystemTime::now());
        let (summary, latest) = reg.snapshot("aa11").unwrap();
        assert_eq!(latest.seq, 2);
        assert_eq!(latest.processes[0].rss_bytes, 7);
        assert!((summary.memory_used_ratio - 0.75).abs() < 1e-9);
        assert!(summary.connected);
        assert_eq!(summary.batches_received, 2);
    }

    #[test]
    fn older_batches_are_history_not_latest() {
        let reg = HostRegistry::new(StateLimits::default());
        reg.connect(&hello("aa11", "web-1")).unwrap();
        reg.apply("aa11", batch(9, 90, Some(9)), SystemTime::now());
        // A backlog batch replayed behind live data.
        reg.apply("aa11", batch(3, 30, Some(3)), SystemTime::now());
        let (summary, latest) = reg.snapshot("aa11").unwrap();
        assert_eq!((latest.seq, latest.processes[0].rss_bytes), (9, 9));
        assert_eq!(summary.batches_received, 2);
        let recent: Vec<u64> = reg
            .recent_batches("aa11", 0)
            .iter()
            .map(|b| b.seq)
            .collect();
        assert_eq!(recent, vec![9]);
    }

    #[test]
    fn resolve_by_id_name_and_prefix() {
        let reg = HostRegistry::new(StateLimits::default());
        reg.connect(&hello("aa11", "web-1")).unwrap();
        reg.connect(&hello("aa22", "web-2")).unwrap();
        assert_eq!(reg.resolve("aa11").unwrap(), "aa11");
        assert_eq!(reg.resolve("web-2").unwrap(), "aa22");
        assert_eq!(reg.resolve("aa1").unwrap(), "aa11");
        assert!(matches!(
            reg.resolve("web"),
            Err(ResolveError::Ambiguous(_, 2))
        ));
        assert!(matches!(reg.resolve("db"), Err(ResolveError::NotFound(_))));
    }

    #[test]
    fn history_is_bounded_by_age_and_count() {
        let reg = HostRegistry::new(StateLimits {
            max_hosts: 1,
            history: Duration::from_nanos(100),
            max_history_batches: 5,
        });
        reg.connect(&hello("aa11", "web-1")).unwrap();
        for i in 1..=20 {
            reg.apply("aa11", batch(i, i as i64 * 10, None), SystemTime::now());
        }
        let recent = reg.recent_batches("aa11", 0);
        assert_eq!(recent.len(), 5);
        assert_eq!(recent.last().unwrap().seq, 20);
        assert_eq!(reg.recent_batches("aa11", 195).len(), 1);
        assert!(matches!(
            reg.connect(&hello("bb", "db")),
            Err(StateError::TooManyHosts(1))
        ));
    }
}
