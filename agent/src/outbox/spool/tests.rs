//! The spool on real files in temporary directories, damage crafted by hand.

use std::path::Path;

use nodewatch_proto::pb;
use prost::Message as _;

use super::ledger::ledger_path;
use super::segment::{FRAME_HEADER_BYTES, segment_id};
use super::*;
use crate::outbox::Outbox;

const HOST: &str = "host-a";

fn batch(seq: u64) -> pb::Batch {
    pb::Batch {
        seq,
        time_unix_nano: 1_700_000_000_000_000_000 + seq as i64,
        processes: (0..20)
            .map(|p| pb::ProcessStats {
                pid: 100 + p,
                name: format!("proc-{seq}-{p}"),
                rss_bytes: 4096 * u64::from(p),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig::new(dir.join("spool"), 64 << 20)
}

/// The directory of `HOST`'s spool.
fn host_dir(config: &SpoolConfig) -> std::path::PathBuf {
    config.dir.join(format!("host-{HOST}"))
}

fn open(config: &SpoolConfig) -> (SpoolOutbox, SpoolStart) {
    SpoolOutbox::open(config.clone(), HOST).unwrap()
}

/// Every unsent batch from `after` on, as the client would read them.
fn drain(outbox: &SpoolOutbox, mut after: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(b) = outbox.next_after(after) {
        assert_eq!(b, batch(b.seq), "batch {} came back changed", b.seq);
        seqs.push(b.seq);
        after = b.seq;
    }
    seqs
}

/// Segment files of a spool directory, oldest first.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(segment_id)
                .is_some()
        })
        .collect();
    v.sort();
    v
}

/// Byte offset of record `index` (0-based) in a segment of back-to-back `batch` records.
fn record_offset(first_seq: u64, index: u64) -> u64 {
    (0..index)
        .map(|i| batch(first_seq + i).encoded_len() as u64 + FRAME_HEADER_BYTES)
        .sum()
}

/// Copies the files of a spool directory (what a crash would leave on disk).
fn snapshot(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn round_trip_from_memory_and_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let (outbox, start) = open(&config);
    assert_eq!(
        (start.next_seq, start.unacked, start.resumed),
        (1, 0, false)
    );
    for seq in 1..=5 {
        assert_eq!(outbox.push(batch(seq)), 0);
    }
    assert_eq!(drain(&outbox, 0), vec![1, 2, 3, 4, 5]);
    assert_eq!(drain(&outbox, 3), vec![4, 5]);
    let stats = outbox.stats();
    assert_eq!((stats.batches, stats.dropped), (5, 0));
    assert!(stats.bytes > 0);
    drop(outbox);
    let (outbox, again) = open(&config);
    assert_eq!(
        (again.run_id, again.next_seq, again.unacked),
        (start.run_id, 6, 5)
    );
    assert!(again.resumed);
    assert_eq!(drain(&outbox, 0), vec![1, 2, 3, 4, 5]);
}

#[test]
fn backlog_beyond_memory_is_read_from_disk_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.memory_bytes = 1; // only the newest batch stays in memory
    config.segment_bytes = 4096;
    let (outbox, _) = open(&config);
    for seq in 1..=60 {
        outbox.push(batch(seq));
    }
    assert!(segments(&host_dir(&config)).len() > 3);
    assert_eq!(drain(&outbox, 0), (1..=60).collect::<Vec<_>>());
    // A reconnect rewinds to the acknowledged seq.
    outbox.ack(20);
    assert_eq!(drain(&outbox, 0), (21..=60).collect::<Vec<_>>());
    assert_eq!(drain(&outbox, 45), (46..=60).collect::<Vec<_>>());
}

#[test]
fn rotation_and_ack_delete_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.segment_bytes = 4096;
    let (outbox, _) = open(&config);
    for seq in 1..=40 {
        outbox.push(batch(seq));
    }
    let before = segments(&host_dir(&config)).len();
    assert!(before >= 4, "{before} segments");
    for f in segments(&host_dir(&config)) {
        // A segment over the size holds one record only.
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len <= 4096 || len == batch(1).encoded_len() as u64 + 8);
    }
    outbox.ack(40);
    outbox.push(batch(41)); // deletion happens on the writer's side
    let after = segments(&host_dir(&config));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(outbox.stats().batches, 1);
    assert_eq!(drain(&outbox, 0), vec![41]);
    drop(outbox);
    let (outbox, start) = open(&config);
    assert_eq!(start.next_seq, 42);
    assert_eq!(drain(&outbox, 0), vec![41]);
    // Everything acknowledged and its segments gone: the seqs still go on.
    outbox.ack(41);
    outbox.sync().unwrap();
    drop(outbox);
    assert_eq!(open(&config).1.next_seq, 42);
}

#[test]
fn cap_drops_the_oldest_segment_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let one = batch(1).encoded_len() as u64 + FRAME_HEADER_BYTES;
    let mut config = config(tmp.path());
    config.max_bytes = one * 20;
    config.segment_bytes = one * 5;
    let (outbox, _) = open(&config);
    let mut dropped = 0;
    for seq in 1..=100 {
        dropped += outbox.push(batch(seq));
    }
    let stats = outbox.stats();
    assert!(stats.bytes as u64 <= config.max_bytes, "{stats:?}");
    assert_eq!(dropped, stats.dropped);
    let kept = drain(&outbox, 0);
    assert_eq!(kept.last(), Some(&100));
    assert_eq!(kept.len() as u64 + stats.dropped, 100, "{kept:?}");
    assert_eq!(kept.len(), stats.batches);
    // Whole segments go, oldest first: what is kept is one contiguous tail.
    assert_eq!(kept, (101 - kept.len() as u64..=100).collect::<Vec<_>>());
    drop(outbox);
    // The count survives a restart.
    let (outbox, _) = open(&config);
    assert_eq!(outbox.stats().dropped, stats.dropped);
}

#[test]
fn restart_after_a_crash_keeps_the_run_and_resends_unacked() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let (outbox, start) = open(&config);
    for seq in 1..=10 {
        outbox.push(batch(seq));
    }
    outbox.ack(4);
    // No sync, no clean close: only what a kill -9 leaves on disk.
    let crashed = SpoolConfig {
        dir: tmp.path().join("crashed"),
        ..config.clone()
    };
    snapshot(&host_dir(&config), &host_dir(&crashed));
    std::fs::remove_file(host_dir(&crashed).join("lock")).unwrap();
    let (copy, again) = open(&crashed);
    assert_eq!(again.run_id, start.run_id);
    assert_eq!(again.next_seq, 11);
    // The ack was not persisted yet: the collector's Welcome frees 1..=4 again.
    assert_eq!(drain(&copy, 0), (1..=10).collect::<Vec<_>>());
    copy.ack(4);
    assert_eq!(drain(&copy, 0), (5..=10).collect::<Vec<_>>());
    drop(copy);

    // A clean close persists the ack.
    outbox.sync().unwrap();
    drop(outbox);
    let (outbox, again) = open(&config);
    assert_eq!(
        (again.run_id, again.next_seq, again.unacked),
        (start.run_id, 11, 6)
    );
    assert_eq!(drain(&outbox, 0), (5..=10).collect::<Vec<_>>());
}

#[test]
fn truncated_segment_keeps_what_is_whole_and_appends_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let (outbox, start) = open(&config);
    for seq in 1..=5 {
        outbox.push(batch(seq));
    }
    drop(outbox);
    let seg = segments(&host_dir(&config)).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Torn in the middle of the last record's payload.
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(len - 7).unwrap();
    drop(file);
    let (outbox, again) = open(&config);
    assert_eq!((again.run_id, again.next_seq), (start.run_id, 5));
    assert_eq!(drain(&outbox, 0), vec![1, 2, 3, 4]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), record_offset(1, 4));
    outbox.push(batch(5));
    outbox.push(batch(6));
    drop(outbox);
    let (outbox, _) = open(&config);
    assert_eq!(drain(&outbox, 0), vec![1, 2, 3, 4, 5, 6]);

    // Torn inside a header, and a segment of nothing but a torn header.
    drop(outbox);
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(record_offset(1, 6) - batch(6).encoded_len() as u64 - 5)
        .unwrap();
    drop(file);
    let (outbox, again) = open(&config);
    assert_eq!(again.next_seq, 6);
    assert_eq!(drain(&outbox, 0), vec![1, 2, 3, 4, 5]);
}

#[test]
fn corrupted_records_are_skipped_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let (outbox, _) = open(&config);
    for seq in 1..=8 {
        outbox.push(batch(seq));
    }
    drop(outbox);
    let seg = segments(&host_dir(&config)).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flipped bits in the payload of record 3 (seq 3).
    let at = record_offset(1, 2) + FRAME_HEADER_BYTES + 30;
    bytes[at as usize] ^= 0x5a;
    // A length field of record 6 (seq 6) pointing far away.
    let at = record_offset(1, 5) as usize;
    bytes[at + 2] = 0x7f;
    std::fs::write(&seg, &bytes).unwrap();
    let (outbox, start) = open(&config);
    assert_eq!(start.next_seq, 9);
    assert_eq!(drain(&outbox, 0), vec![1, 2, 4, 5, 7, 8]);
    assert_eq!(
        outbox.stats().dropped,
        2,
        "damaged records count as dropped"
    );
    assert_eq!(outbox.stats().batches, 6);

    // Garbage of every kind in a segment never panics.
    drop(outbox);
    let mut junk = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20_000 {
        junk.push(rng.u8(..));
    }
    junk.extend_from_slice(&[0x08, 0x01, 0xff, 0xff, 0xff, 0x00]);
    std::fs::write(&seg, &junk).unwrap();
    let (outbox, _) = open(&config);
    let _ = drain(&outbox, 0);
    outbox.push(batch(100));
    assert_eq!(outbox.next_after(99).unwrap().seq, 100);
}

#[test]
fn damaged_ledger_starts_a_new_run_and_keeps_the_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let (outbox, start) = open(&config);
    for seq in 1..=5 {
        outbox.push(batch(seq));
    }
    outbox.ack(2);
    drop(outbox);
    let path = ledger_path(&host_dir(&config));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[14] ^= 0x01; // a bit of the run id
    std::fs::write(&path, &bytes).unwrap();
    let (outbox, again) = open(&config);
    assert!(!again.resumed);
    assert_ne!(again.run_id, start.run_id);
    assert_eq!(again.next_seq, 6);
    // Under the new run nothing is acknowledged: every spooled batch goes again.
    assert_eq!(drain(&outbox, 0), vec![1, 2, 3, 4, 5]);
    drop(outbox);
    // The new run id is what the next start resumes.
    let (_, third) = open(&config);
    assert_eq!((third.run_id, third.resumed), (again.run_id, true));

    // A ledger cut short, and a missing ledger, do the same.
    std::fs::write(&path, &bytes[..10]).unwrap();
    assert!(!open(&config).1.resumed);
    std::fs::remove_file(&path).unwrap();
    let (outbox, fourth) = open(&config);
    assert!(!fourth.resumed);
    assert_eq!(drain(&outbox, 0), vec![1, 2, 3, 4, 5]);
}

#[test]
fn another_host_id_starts_a_fresh_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let (outbox, start) = open(&config);
    outbox.push(batch(1));
    outbox.push(batch(2));
    drop(outbox);
    let (outbox, other) = SpoolOutbox::open(config.clone(), "host-b").unwrap();
    assert_ne!(other.run_id, start.run_id);
    assert_eq!((other.next_seq, other.unacked), (1, 0));
    assert!(outbox.next_after(0).is_none());
    assert_ne!(other.dir, host_dir(&config));
    drop(outbox);
    // host-a's spool is untouched.
    let (outbox, again) = open(&config);
    assert_eq!((again.run_id, again.dir), (start.run_id, host_dir(&config)));
    assert_eq!(drain(&outbox, 0), vec![1, 2]);
    drop(outbox);

    // A spool whose ledger names another host (copied by hand) is not sent as this one.
    let copied = config.dir.join("host-host-c");
    snapshot(&host_dir(&config), &copied);
    let (outbox, third) = SpoolOutbox::open(config.clone(), "host-c").unwrap();
    assert_ne!(third.run_id, start.run_id);
    assert_eq!((third.next_seq, third.unacked), (1, 0));
    assert!(outbox.next_after(0).is_none());
}

#[test]
fn rejected_batches_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.memory_bytes = 1;
    let (outbox, _) = open(&config);
    for seq in 1..=4 {
        outbox.push(batch(seq));
    }
    outbox.reject(2);
    outbox.reject(4);
    assert_eq!(drain(&outbox, 0), vec![1, 3]);
    let stats = outbox.stats();
    assert_eq!((stats.batches, stats.dropped), (2, 2));
}

#[test]
fn unusable_directories_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for dir in [file.clone(), file.join("below")] {
        let err = SpoolOutbox::open(SpoolConfig::new(dir.clone(), 1 << 20), HOST).unwrap_err();
        assert!(matches!(err, SpoolError::NotADirectory(_)), "{err:?}");
        assert!(err.to_string().contains(&dir.display().to_string()));
    }
    let config = config(tmp.path());
    let (_held, _) = open(&config);
    let err = SpoolOutbox::open(config.clone(), HOST).unwrap_err();
    assert!(matches!(err, SpoolError::Locked(_)), "{err}");
}

#[tokio::test]
async fn wait_after_wakes_on_push() {
    let tmp = tempfile::tempdir().unwrap();
    let (outbox, _) = open(&config(tmp.path()));
    let outbox = std::sync::Arc::new(outbox);
    let waiter = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.wait_after(0).await.seq })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    outbox.push(batch(1));
    assert_eq!(waiter.await.unwrap(), 1);
}
