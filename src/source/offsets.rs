//! Which offsets may be committed: the end-to-end acknowledgement.
//!
//! Batches are dispatched in order and may finish out of order (sinks run
//! concurrently). Per partition, the tracker keeps the dispatched batches in
//! dispatch order; an offset becomes committable only when every batch up to
//! it has been acknowledged by every sink. A revoked partition is forgotten,
//! so a late acknowledgement from before a rebalance can never commit on
//! behalf of the partition's new owner.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Identity of a dispatched batch; increases with every dispatch.
pub type BatchId = u64;

/// The span of one partition inside a batch: offsets `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, Default)]
struct Partition {
    /// (batch, next offset after the batch's last record, acknowledged?)
    pending: VecDeque<(BatchId, i64, bool)>,
    /// Next offset to commit, once everything before it is stored.
    committable: Option<i64>,
    committed: Option<i64>,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
}

impl OffsetTracker {
    /// Partitions now owned (a rebalance's assignment).
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for p in partitions {
            self.partitions.entry(p).or_default();
        }
    }

    /// Drops revoked partitions: their pending batches no longer count.
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    pub fn is_assigned(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Registers a dispatched batch; spans of partitions not owned are
    /// refused (returned false).
    pub fn dispatch(&mut self, batch: BatchId, spans: &[Span]) -> bool {
        if spans.iter().any(|s| !self.is_assigned(s.partition)) {
            return false;
        }
        for s in spans {
            let p = self.partitions.get_mut(&s.partition).expect("checked above");
            p.pending.push_back((batch, s.last + 1, false));
        }
        true
    }

    /// Marks a batch stored by every sink. Returns false if none of its
    /// partitions are still owned (the acknowledgement is stale).
    pub fn ack(&mut self, batch: BatchId, spans: &[Span]) -> bool {
        let mut known = false;
        for s in spans {
            let Some(p) = self.partitions.get_mut(&s.partition) else { continue };
            let Some(entry) = p.pending.iter_mut().find(|e| e.0 == batch) else { continue };
            entry.2 = true;
            known = true;
            while let Some(&(_, next, true)) = p.pending.front() {
                p.committable = Some(next);
                p.pending.pop_front();
            }
        }
        known
    }

    /// Batches dispatched and not yet acknowledged, over the given partitions
    /// (all when None).
    pub fn pending(&self, partitions: Option<&[i32]>) -> usize {
        self.partitions
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
            .map(|(_, s)| s.pending.iter().filter(|e| !e.2).count())
            .sum()
    }

    /// Offsets that became committable since the last call (partition ->
    /// next offset to read), restricted to `partitions` when given.
    pub fn take_committable(&mut self, partitions: Option<&[i32]>) -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        for (&id, p) in &mut self.partitions {
            if partitions.is_some_and(|ps| !ps.contains(&id)) {
                continue;
            }
            if let Some(next) = p.committable {
                if p.committed != Some(next) {
                    out.insert(id, next);
                    p.committed = Some(next);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(partition: i32, first: i64, last: i64) -> Span {
        Span { partition, first, last }
    }

    #[test]
    fn commits_only_the_acknowledged_prefix() {
        let mut t = OffsetTracker::default();
        t.assign([0, 1]);
        assert!(t.dispatch(1, &[span(0, 0, 9), span(1, 0, 4)]));
        assert!(t.dispatch(2, &[span(0, 10, 19)]));
        assert!(t.dispatch(3, &[span(0, 20, 29), span(1, 5, 9)]));
        // Batch 2 finishes first: nothing of partition 0 is committable yet.
        assert!(t.ack(2, &[span(0, 10, 19)]));
        assert!(t.take_committable(None).is_empty());
        assert_eq!(t.pending(None), 4);
        assert!(t.ack(1, &[span(0, 0, 9), span(1, 0, 4)]));
        assert_eq!(t.take_committable(None), BTreeMap::from([(0, 20), (1, 5)]));
        // Nothing new: nothing to commit twice.
        assert!(t.take_committable(None).is_empty());
        assert!(t.ack(3, &[span(0, 20, 29), span(1, 5, 9)]));
        assert_eq!(t.take_committable(Some(&[1])), BTreeMap::from([(1, 10)]));
        assert_eq!(t.take_committable(None), BTreeMap::from([(0, 30)]));
        assert_eq!(t.pending(None), 0);
    }

    #[test]
    fn revoked_partitions_ignore_late_acknowledgements() {
        let mut t = OffsetTracker::default();
        t.assign([0]);
        assert!(t.dispatch(1, &[span(0, 0, 9)]));
        t.forget(&[0]);
        assert!(!t.ack(1, &[span(0, 0, 9)]));
        // Reassigned: the old batch is unknown, only new ones count.
        t.assign([0]);
        assert!(!t.ack(1, &[span(0, 0, 9)]));
        assert!(t.take_committable(None).is_empty());
        assert!(!t.dispatch(2, &[span(7, 0, 0)]), "partition 7 is not ours");
        assert!(t.dispatch(3, &[span(0, 0, 9)]));
        assert!(t.ack(3, &[span(0, 0, 9)]));
        assert_eq!(t.take_committable(None), BTreeMap::from([(0, 10)]));
    }

    #[test]
    fn pending_counts_by_partition() {
        let mut t = OffsetTracker::default();
        t.assign([0, 1, 2]);
        t.dispatch(1, &[span(0, 0, 0), span(1, 0, 0)]);
        t.dispatch(2, &[span(2, 0, 0)]);
        assert_eq!(t.pending(Some(&[0])), 1);
        assert_eq!(t.pending(Some(&[2])), 1);
        assert_eq!(t.pending(Some(&[0, 1, 2])), 3);
    }
}
