//! The one place where the collector's errors become gRPC statuses.

use tonic::{Code, Status};

use crate::hosts::{ResolveError, StateError};
use crate::ingest::IngestError;
use crate::query::QueryError;
use crate::store::StoreError;

/// The status of a store error: bad values, timestamps and host ids are the
/// caller's (`INVALID_ARGUMENT`), limits are `RESOURCE_EXHAUSTED`, I/O and
/// database trouble is `UNAVAILABLE` (retry), undecodable data is `DATA_LOSS`.
pub fn store(e: &StoreError) -> Status {
    match e {
        StoreError::NonFinite { .. }
        | StoreError::BadTimestamp { .. }
        | StoreError::BadHostId(_) => Status::invalid_argument(e.to_string()),
        StoreError::TooManyHosts { .. } => Status::resource_exhausted(e.to_string()),
        StoreError::Corrupt(_) => Status::data_loss(e.to_string()),
        StoreError::Io { .. }
        | StoreError::Db { .. }
        | StoreError::Unavailable
        | StoreError::BackfillBusy { .. } => Status::unavailable(e.to_string()),
    }
}

/// The status of a host argument that names no host (`NOT_FOUND`) or several
/// or none at all (`INVALID_ARGUMENT`).
pub fn resolve(e: &ResolveError) -> Status {
    match e {
        ResolveError::NotFound(_) => Status::not_found(e.to_string()),
        ResolveError::Empty | ResolveError::Ambiguous(..) => {
            Status::invalid_argument(e.to_string())
        }
    }
}

/// The status of a failed query.
pub fn query(e: &QueryError) -> Status {
    match e {
        QueryError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        QueryError::Host(e) => resolve(e),
        QueryError::HostGone(_) => Status::not_found(e.to_string()),
        QueryError::Store(e) => store(e),
        QueryError::Task(_) => Status::internal(e.to_string()),
    }
}

/// The status of a host the registry refused.
pub fn state(e: &StateError) -> Status {
    match e {
        StateError::TooManyHosts(_) => Status::resource_exhausted(e.to_string()),
    }
}

/// The status of a refused batch. A refusal of the batch's content
/// (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`) is final and carries the batch's
/// seq in [`nodewatch_proto::REJECTED_SEQ_METADATA`], so the agent drops exactly
/// that batch; I/O trouble must be retried by the agent, never dropped.
pub fn ingest(e: &IngestError) -> Status {
    let (seq, mut status) = match e {
        IngestError::Invalid { seq, .. } => (*seq, Status::invalid_argument(e.to_string())),
        IngestError::Store { seq, source } => (*seq, store(source)),
    };
    if matches!(
        status.code(),
        Code::InvalidArgument | Code::ResourceExhausted
    ) && let Ok(value) = seq.to_string().parse()
    {
        status
            .metadata_mut()
            .insert(nodewatch_proto::REJECTED_SEQ_METADATA, value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let cases = [
            (StoreError::NonFinite { field: "x" }, Code::InvalidArgument),
            (StoreError::BackfillBusy { lanes: 3 }, Code::Unavailable),
            (
                StoreError::TooManyHosts { limit: 1 },
                Code::ResourceExhausted,
            ),
            (StoreError::Corrupt("x"), Code::DataLoss),
            (StoreError::Unavailable, Code::Unavailable),
        ];
        for (e, code) in cases {
            assert_eq!(store(&e).code(), code, "{e}");
        }
        assert_eq!(
            query(&QueryError::Host(ResolveError::NotFound("x".into()))).code(),
            Code::NotFound
        );
        assert_eq!(
            query(&QueryError::Host(ResolveError::Ambiguous("x".into(), 2))).code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn only_final_refusals_name_the_rejected_seq() {
        let seq_of = |s: &Status| {
            s.metadata()
                .get(nodewatch_proto::REJECTED_SEQ_METADATA)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let limit = ingest(&IngestError::Store {
            seq: 7,
            source: StoreError::TooManyHosts { limit: 1 },
        });
        assert_eq!(limit.code(), Code::ResourceExhausted);
        assert_eq!(seq_of(&limit).as_deref(), Some("7"));
        let io = ingest(&IngestError::Store {
            seq: 8,
            source: StoreError::Unavailable,
        });
        assert_eq!(io.code(), Code::Unavailable);
        assert_eq!(seq_of(&io), None);
    }
}
