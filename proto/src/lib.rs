//! The `nodewatch.v1` wire contract and what both of its ends share.
//!
//! Generated code lives in [`pb`]; [`FILE_DESCRIPTOR_SET`] is the encoded
//! descriptor set of every `.proto` file, served through gRPC reflection.
//! Beside it: the histogram layout and its math ([`hist`]), time on the wire
//! ([`time`]), the ingest metadata keys, and the process plumbing of the two
//! daemons ([`daemon`]). The agent, the collector and the CLI all depend on this
//! crate and on nothing of each other.

pub mod daemon;
pub mod hist;
pub mod time;

/// Generated messages and services of package `nodewatch.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("nodewatch.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of the `nodewatch.v1` package,
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nodewatch_descriptor.bin"));

/// Default collector address (gRPC, plaintext, loopback).
pub const DEFAULT_COLLECTOR_ADDR: &str = "127.0.0.1:7077";

/// Largest message (encoded) the collector accepts and the agent sends, bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Limits of a `Hello` that the collector enforces and the agent checks at
/// start-up (so a bad host id or label set is a clear start-up error, not an
/// endless retry).
pub mod hello_limits {
    /// Longest host id, bytes; characters are `[0-9A-Za-z._-]`.
    pub const MAX_HOST_ID_BYTES: usize = 64;
    /// Most labels.
    pub const MAX_LABELS: usize = 64;
    /// Longest string field (hostname, kernel, OS, label key or value), bytes.
    pub const MAX_STRING_BYTES: usize = 256;
    /// Most sampler statuses in the capabilities.
    pub const MAX_FEATURES: usize = 64;
    /// Longest feature status reason, bytes.
    pub const MAX_REASON_BYTES: usize = 1024;

    /// Whether `id` is a valid host id.
    pub fn valid_host_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_HOST_ID_BYTES
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }
}

/// gRPC metadata key on a final refusal of one batch (`INVALID_ARGUMENT`,
/// `RESOURCE_EXHAUSTED`): the refused batch's seq. The agent drops exactly
/// that batch instead of resending it forever.
pub const REJECTED_SEQ_METADATA: &str = "nodewatch-rejected-seq";

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn descriptor_set_holds_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(|s| s.name().to_string()))
            .collect();
        assert!(services.contains(&"Ingest".to_string()), "{services:?}");
        assert!(services.contains(&"Query".to_string()), "{services:?}");
    }

    #[test]
    fn descriptor_set_keeps_comments() {
        // grpcurl `describe` shows comments only when source info is kept.
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let with_info = fds
            .file
            .iter()
            .filter(|f| f.source_code_info.is_some())
            .count();
        assert_eq!(with_info, fds.file.len());
    }
}
