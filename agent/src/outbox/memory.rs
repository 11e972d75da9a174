//! The in-memory outbox: unacknowledged batches in a queue bounded by
//! encoded size; when full, the oldest batch is dropped and counted.

use std::collections::VecDeque;
use std::sync::Mutex;

use nodewatch_proto::pb;
use prost::Message as _;
use tokio::sync::Notify;

use super::{Outbox, OutboxStats};

#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<(pb::Batch, usize)>,
    bytes: usize,
    dropped: u64,
    acked: u64,
}

/// Unacknowledged batches in memory, oldest first, bounded by encoded bytes.
#[derive(Debug)]
pub struct MemoryOutbox {
    queue: Mutex<Queue>,
    capacity_bytes: usize,
    notify: Notify,
}

impl MemoryOutbox {
    /// An empty outbox holding at most `capacity_bytes` of encoded batches.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            capacity_bytes,
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Outbox for MemoryOutbox {
    fn push(&self, batch: pb::Batch) -> u64 {
        let size = batch.encoded_len();
        let mut dropped = 0;
        {
            let mut q = self.lock();
            while !q.batches.is_empty() && q.bytes + size > self.capacity_bytes {
                if let Some((_, s)) = q.batches.pop_front() {
                    q.bytes -= s;
                    q.dropped += 1;
                    dropped += 1;
                }
            }
            q.bytes += size;
            q.batches.push_back((batch, size));
        }
        self.notify.notify_waiters();
        dropped
    }

    fn ack(&self, seq: u64) {
        let mut q = self.lock();
        q.acked = q.acked.max(seq);
        while q.batches.front().is_some_and(|(b, _)| b.seq <= seq) {
            if let Some((_, s)) = q.batches.pop_front() {
                q.bytes -= s;
            }
        }
    }

    fn reject(&self, seq: u64) {
        let mut q = self.lock();
        if let Some(pos) = q.batches.iter().position(|(b, _)| b.seq == seq)
            && let Some((_, s)) = q.batches.remove(pos)
        {
            q.bytes -= s;
            q.dropped += 1;
        }
    }

    fn next_after(&self, after: u64) -> Option<pb::Batch> {
        let q = self.lock();
        q.batches
            .iter()
            .find(|(b, _)| b.seq > after)
            .map(|(b, _)| b.clone())
    }

    fn pushed(&self) -> &Notify {
        &self.notify
    }

    fn stats(&self) -> OutboxStats {
        let q = self.lock();
        OutboxStats {
            batches: q.batches.len(),
            bytes: q.bytes,
            dropped: q.dropped,
            acked: q.acked,
            newest: q.batches.back().map_or(q.acked, |(b, _)| b.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> pb::Batch {
        pb::Batch {
            seq,
            time_unix_nano: 1_700_000_000_000_000_000 + seq as i64,
            ..Default::default()
        }
    }

    #[test]
    fn ack_frees_and_next_after_skips_sent() {
        let outbox = MemoryOutbox::new(1 << 20);
        for seq in 1..=5 {
            outbox.push(batch(seq));
        }
        outbox.ack(2);
        assert_eq!(outbox.stats().batches, 3);
        assert_eq!(outbox.next_after(0).unwrap().seq, 3);
        assert_eq!(outbox.next_after(4).unwrap().seq, 5);
        assert!(outbox.next_after(5).is_none());
        outbox.reject(4);
        assert_eq!(outbox.next_after(3).unwrap().seq, 5);
    }

    #[test]
    fn full_outbox_drops_oldest_and_counts() {
        let size = batch(1).encoded_len();
        let outbox = MemoryOutbox::new(size * 3);
        for seq in 1..=5 {
            outbox.push(batch(seq));
        }
        let stats = outbox.stats();
        assert_eq!(stats.batches, 3);
        assert_eq!(stats.dropped, 2);
        assert_eq!(outbox.next_after(0).unwrap().seq, 3);
    }

    #[tokio::test]
    async fn wait_after_wakes_on_push() {
        let outbox = std::sync::Arc::new(MemoryOutbox::new(1 << 20));
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.wait_after(0).await.seq })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        outbox.push(batch(7));
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
