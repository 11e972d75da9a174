//! Batches as they go on the wire: never larger than the collector accepts.

use nodewatch_proto::pb;
use prost::Message as _;

/// Room left for the message wrapper and framing below the collector's limit.
const WRAPPER_BYTES: usize = 64 * 1024;

/// Splits a batch whose encoding would pass `max_message_bytes`: the
/// per-process part, the one that grows with the host, moves into as many
/// extra batches (same sample time, processes only) as it needs. Everything
/// else stays in the first batch. A batch that fits is returned as it is.
/// (Each part gets its own seq from the caller; a split process list is
/// marked incomplete in every part.)
pub fn split_for_wire(mut batch: pb::Batch, max_message_bytes: usize) -> Vec<pb::Batch> {
    let limit = max_message_bytes.saturating_sub(WRAPPER_BYTES).max(1);
    if batch.encoded_len() <= limit || batch.processes.is_empty() {
        return vec![batch];
    }
    let processes = std::mem::take(&mut batch.processes);
    batch.processes_complete = false;
    let time = batch.time_unix_nano;
    let mut parts = vec![batch];
    let mut part = pb::Batch {
        time_unix_nano: time,
        ..Default::default()
    };
    let mut size = part.encoded_len();
    for p in processes {
        // Field tag (1 byte) + length varint (<= 5) + the message.
        let len = p.encoded_len() + 6;
        if !part.processes.is_empty() && size + len > limit {
            parts.push(std::mem::replace(
                &mut part,
                pb::Batch {
                    time_unix_nano: time,
                    ..Default::default()
                },
            ));
            size = part.encoded_len();
        }
        size += len;
        part.processes.push(p);
    }
    if !part.processes.is_empty() {
        parts.push(part);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32) -> pb::ProcessStats {
        pb::ProcessStats {
            pid,
            name: format!("worker-{pid}"),
            cmdline: "x".repeat(200),
            cgroup: "system.slice/app.service".into(),
            rss_bytes: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn oversized_batches_split_into_parts_within_the_limit() {
        let batch = pb::Batch {
            time_unix_nano: 42,
            memory: Some(pb::MemoryStats {
                total_bytes: 1,
                ..Default::default()
            }),
            processes: (0..20_000).map(process).collect(),
            processes_complete: true,
            ..Default::default()
        };
        let limit = 1 << 20;
        assert!(batch.encoded_len() > 4 * limit);
        let parts = split_for_wire(batch, limit);
        assert!(parts.len() >= 5, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.encoded_len() <= limit));
        assert!(
            parts
                .iter()
                .all(|p| p.time_unix_nano == 42 && !p.processes_complete)
        );
        assert!(parts[0].memory.is_some() && parts[1..].iter().all(|p| p.memory.is_none()));
        let pids: Vec<u32> = parts
            .iter()
            .flat_map(|p| p.processes.iter().map(|x| x.pid))
            .collect();
        assert_eq!(pids, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn batches_that_fit_are_untouched() {
        let batch = pb::Batch {
            seq: 3,
            processes: (0..10).map(process).collect(),
            processes_complete: true,
            ..Default::default()
        };
        let parts = split_for_wire(batch.clone(), 1 << 24);
        assert_eq!(parts, vec![batch]);
    }
}
