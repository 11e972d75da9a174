//! The query layer: every question a reader asks of the collector — the gRPC
//! `Query` service, the CLI through it, and later detectors, exporters and the
//! web API — answered from the host registry (recent, in memory) and the store
//! (history). It takes and returns plain data (the `nodewatch.v1` messages,
//! which every reader shares) and fails with [`QueryError`]; it knows nothing of
//! gRPC: only `grpc/` turns a `QueryError` into a status.

pub mod alerts;
pub mod histogram;
pub mod hosts;
pub mod latency;
pub mod series;
pub mod top;

use std::time::Duration;

use nodewatch_proto::pb;

use crate::hosts::ResolveError;
use crate::metrics::parse_key;
use crate::store::{LabelMatch, StoreError};

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is malformed or asks for too much.
    #[error("{0}")]
    InvalidArgument(String),
    /// The host argument names no host, or several.
    #[error(transparent)]
    Host(#[from] ResolveError),
    /// The host resolved but was gone when its data was read.
    #[error("host {0} is gone")]
    HostGone(String),
    /// The store failed to read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking read task failed (panicked or was cancelled).
    #[error("query task failed: {0}")]
    Task(String),
}

impl QueryError {
    /// An invalid-argument error with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

/// Default range when a request leaves the start open.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(3600);
/// Default number of series per response.
pub const DEFAULT_SERIES_LIMIT: usize = 100;
/// Largest series limit a request may ask for.
pub const MAX_SERIES_LIMIT: usize = 10_000;
/// Most points per series: raw ranges above it must use a step.
pub const MAX_POINTS: usize = 20_000;

/// Effective `[start, end]` of a request: `end = 0` is now, `start = 0` is
/// [`DEFAULT_RANGE`] before the end.
fn range(start: i64, end: i64, now: i64) -> Result<(i64, i64), QueryError> {
    let end = if end == 0 { now } else { end };
    let start = if start == 0 {
        end.saturating_sub(DEFAULT_RANGE.as_nanos() as i64)
    } else {
        start
    };
    if start > end {
        return Err(QueryError::invalid(format!(
            "start {start} is after end {end}"
        )));
    }
    Ok((start, end))
}

/// Label matchers of a request as the store's.
fn matchers(m: &[pb::LabelMatcher]) -> Result<Vec<LabelMatch>, QueryError> {
    m.iter()
        .map(|m| {
            if m.name.is_empty() {
                return Err(QueryError::invalid("label matcher without a name"));
            }
            let (n, v) = (m.name.clone(), m.value.clone());
            Ok(match pb::MatchOp::try_from(m.op).unwrap_or_default() {
                pb::MatchOp::Unspecified | pb::MatchOp::Equal => LabelMatch::Equal(n, v),
                pb::MatchOp::NotEqual => LabelMatch::NotEqual(n, v),
                pb::MatchOp::Prefix => LabelMatch::Prefix(n, v),
            })
        })
        .collect()
}

/// Series limit of a request: 0 is the default, larger asks are capped.
fn limit(l: u32) -> usize {
    if l == 0 {
        DEFAULT_SERIES_LIMIT
    } else {
        (l as usize).min(MAX_SERIES_LIMIT)
    }
}

/// Metric name and labels of a series key, as wire labels.
fn labels_of(key: &str) -> (String, Vec<pb::Label>) {
    let (metric, labels) = parse_key(key);
    (
        metric.to_string(),
        labels
            .into_iter()
            .map(|(k, v)| pb::Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    )
}

/// A step must not be negative nor cut the range into more than [`MAX_POINTS`].
fn check_step(start: i64, end: i64, step: i64) -> Result<(), QueryError> {
    if step < 0 {
        return Err(QueryError::invalid("step must not be negative"));
    }
    if step > 0 && (end - start) / step > MAX_POINTS as i64 {
        return Err(QueryError::invalid(format!(
            "range / step gives more than {MAX_POINTS} points; use a larger step"
        )));
    }
    Ok(())
}
