//! Hosts as the registry knows them: the list, one host's summary and latest
//! snapshot, and the cadence of live updates.

use std::time::Duration;

use nodewatch_proto::pb;

use super::QueryError;
use crate::hosts::HostRegistry;

/// Every host with its headline figures, sorted by hostname then id.
pub fn list(registry: &HostRegistry) -> pb::ListHostsResponse {
    pb::ListHostsResponse {
        hosts: registry.list(),
    }
}

/// One host (id, hostname or unique prefix): summary and latest snapshot.
pub fn get(registry: &HostRegistry, host: &str) -> Result<pb::GetHostResponse, QueryError> {
    let id = registry.resolve(host)?;
    let (summary, latest) = registry.snapshot(&id).ok_or(QueryError::HostGone(id))?;
    Ok(pb::GetHostResponse {
        summary: Some(summary),
        latest: Some(latest),
    })
}

/// The interval of a watch: 0 means 1 s, at least 200 ms.
pub fn watch_interval(interval_ms: u32) -> Duration {
    let ms = match interval_ms {
        0 => 1000,
        ms => ms.max(200),
    };
    Duration::from_millis(u64::from(ms))
}
