//! What the store keeps in redb: the tables, their keys and values, and the
//! encoding of a host record and of a series record.

use nodewatch_proto::pb;
use redb::TableDefinition;

use super::SeriesKind;

/// Series id reserved for a host's time column in the chunk table.
pub(super) const TIMES_SID: u32 = u32::MAX;

/// Chunk keys carry the lane in the host number's top bits: the main lane is
/// the host number itself, backfill lane `k` is `no | k << LANE_SHIFT`.
const LANE_SHIFT: u32 = 24;
/// Host numbers stay below this so that lanes fit in the key.
pub(super) const MAX_HOST_NO: u32 = 1 << LANE_SHIFT;

/// The host part of a chunk key for `lane` (0 = main) of host `no`.
pub(super) fn lane_key(no: u32, lane: usize) -> u32 {
    no | ((lane as u32) << LANE_SHIFT)
}

/// host id -> encoded [`HostRecord`].
pub(super) const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
/// (host no, series id) -> kind byte | last sample time i64 LE | key.
pub(super) const SERIES: TableDefinition<(u32, u32), &[u8]> = TableDefinition::new("series");
/// (generation, host no, series id) -> chunk; series id u32::MAX is the time column.
pub(super) const CHUNKS: TableDefinition<(u64, u32, u32), &[u8]> = TableDefinition::new("chunks");
/// (generation, host no) -> backfill lanes the host has in that generation
/// (absent: none).
pub(super) const BACKFILL: TableDefinition<(u64, u32), u32> = TableDefinition::new("backfill");
/// generation -> (first, last) sample time in it.
pub(super) const GENERATIONS: TableDefinition<u64, (i64, i64)> =
    TableDefinition::new("generations");
/// (host no, run id) -> highest durable seq.
pub(super) const RUNS: TableDefinition<(u32, u64), u64> = TableDefinition::new("runs");
/// Store-wide counters: "flushed_generation", "next_host_no".
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A host's persisted record.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HostRecord {
    /// Host number used in chunk keys.
    #[prost(uint32, tag = "1")]
    pub(super) no: u32,
    /// Last Hello.
    #[prost(message, optional, tag = "2")]
    pub(super) hello: Option<pb::Hello>,
    /// Last batch arrival, Unix nanoseconds.
    #[prost(int64, tag = "3")]
    pub(super) last_seen_unix_nano: i64,
    /// Latest parts.
    #[prost(message, optional, tag = "4")]
    pub(super) latest: Option<pb::Batch>,
    /// Series ids handed out so far: ids below it are never given to another
    /// series, even after retention forgot theirs (older chunks may still hold them).
    #[prost(uint32, tag = "5")]
    pub(super) next_series_id: u32,
}

/// Encodes a series record: kind byte | last sample time i64 LE | key.
pub(super) fn encode_series(kind: SeriesKind, last_time: i64, key: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + key.len());
    v.push(u8::from(kind == SeriesKind::Histogram));
    v.extend_from_slice(&last_time.to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    v
}

/// Decodes a series record into (kind, last sample time, key); `None` when too short.
pub(super) fn decode_series(v: &[u8]) -> Option<(SeriesKind, i64, String)> {
    if v.len() < 9 {
        return None;
    }
    let kind = if v[0] == 1 {
        SeriesKind::Histogram
    } else {
        SeriesKind::Scalar
    };
    let last_time = i64::from_le_bytes(v[1..9].try_into().ok()?);
    Some((
        kind,
        last_time,
        String::from_utf8_lossy(&v[9..]).into_owned(),
    ))
}
