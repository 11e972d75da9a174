//! What the spool remembers of each segment without reading it: its size and
//! the seqs it holds, as runs of consecutive seqs (one run per segment unless
//! damage or a rejected batch left a gap), so memory does not grow with the
//! number of batches.

/// Seqs held by one segment, ascending, as runs `[first, last]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SeqRuns {
    runs: Vec<(u64, u64)>,
}

impl SeqRuns {
    /// Adds `seq`, which must be above every seq already held.
    pub fn push(&mut self, seq: u64) {
        match self.runs.last_mut() {
            Some((_, last)) if seq == *last + 1 => *last = seq,
            _ => self.runs.push((seq, seq)),
        }
    }

    /// Highest seq held.
    pub fn last(&self) -> Option<u64> {
        self.runs.last().map(|r| r.1)
    }

    /// Seqs held above `seq`.
    pub fn count_above(&self, seq: u64) -> u64 {
        self.runs
            .iter()
            .map(|&(a, b)| if seq >= b { 0 } else { b - a.max(seq + 1) + 1 })
            .sum()
    }
}

/// One segment file as the spool knows it.
#[derive(Debug, Clone)]
pub(super) struct SegmentSummary {
    /// Segment number (its file name).
    pub id: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Seqs of its intact records.
    pub seqs: SeqRuns,
}

impl SegmentSummary {
    /// An empty segment.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            bytes: 0,
            seqs: SeqRuns::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_count_above() {
        let mut r = SeqRuns::default();
        for s in [3, 4, 5, 8, 9] {
            r.push(s);
        }
        assert_eq!(r.last(), Some(9));
        assert_eq!(r.count_above(0), 5);
        assert_eq!(r.count_above(4), 3);
        assert_eq!(r.count_above(6), 2);
        assert_eq!(r.count_above(9), 0);
    }
}
