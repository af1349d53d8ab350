//! How far the labels stream has been applied, and the bounded wait of a
//! batch of transactions for it (docs/architecture.md, "History": labels in
//! event time).
//!
//! A transaction on day `D` reads merchant tiles up to day `D - 8`, the
//! newest of which became final at the start of `D`: every label reported
//! before that instant must be applied first, however fast each topic is
//! consumed (a backlog after an outage, a replay). Labels come in report
//! order within a partition (a sender sends them as they are reported), so
//! a partition has delivered all of them once it has applied a label
//! reported at or after that instant, or has been read to its end.
//!
//! A batch waits for that at most `max_wait`. Then the labels stream is
//! *stalled*: batches go on without waiting (counted, logged, in /metrics)
//! until the stream catches up with the time the stalled batch needed, so a
//! dead labels topic costs one wait, not one per batch.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One labels partition's progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// The newest report time (Unix seconds) applied from it.
    through: Option<i64>,
    /// Read to its end (nothing more to apply, for now).
    at_end: bool,
}

#[derive(Debug, Default)]
struct State {
    /// None until the consumer knows its partitions; empty when the topic
    /// does not exist (no labels to wait for).
    partitions: Option<BTreeMap<i32, Mark>>,
    /// The time a batch needed when the wait gave up, until the stream
    /// has caught up with it.
    stalled_at: Option<i64>,
    stopped: bool,
}

impl State {
    fn delivered(&self, at: i64) -> bool {
        self.partitions.as_ref().is_some_and(|p| p.values().all(|m| m.at_end || m.through.is_some_and(|t| t >= at)))
    }

    /// Clears a stall the stream has caught up with; true if it did.
    fn recover(&mut self) -> bool {
        match self.stalled_at {
            Some(at) if self.delivered(at) => {
                self.stalled_at = None;
                true
            }
            _ => false,
        }
    }
}

/// What the labels consumer saw, in the order it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A label (or a bad value) reported at this time, applied and stored.
    Label { partition: i32, reported_at: i64 },
    /// The partition's end.
    End { partition: i32 },
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The labels were there (after `waited`, zero when at once).
    Delivered { waited: Duration },
    /// Not there after the longest wait: the stream is now stalled.
    Stalled,
    /// The stream was stalled already: no wait.
    WhileStalled,
    /// Waiting is off (`max_wait` zero).
    Off,
}

/// The labels consumer stopped (shutdown): nothing more will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the labels consumer stopped")]
pub struct Stopped;

/// Shared by the labels consumer (which reports) and the history (which
/// waits).
#[derive(Debug)]
pub struct LabelsProgress {
    state: Mutex<State>,
    changed: Condvar,
    max_wait: Duration,
}

impl LabelsProgress {
    /// Batches wait at most `max_wait` for labels; zero = never.
    pub fn new(max_wait: Duration) -> Self {
        Self { state: Mutex::default(), changed: Condvar::new(), max_wait }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The consumer's partitions now (empty: the topic does not exist).
    /// Partitions kept keep their progress; new ones start from nothing.
    /// True if a stall ended.
    pub fn assigned(&self, partitions: &[i32]) -> bool {
        let mut state = self.lock();
        let old = state.partitions.take().unwrap_or_default();
        state.partitions = Some(partitions.iter().map(|p| (*p, old.get(p).copied().unwrap_or_default())).collect());
        self.changed(state)
    }

    /// Labels applied and stored, and partition ends, in the order they
    /// were read. True if a stall ended.
    pub fn applied(&self, seen: &[Seen]) -> bool {
        let mut state = self.lock();
        let Some(partitions) = state.partitions.as_mut() else {
            return false;
        };
        for s in seen {
            match *s {
                Seen::Label { partition, reported_at } => {
                    let mark = partitions.entry(partition).or_default();
                    mark.through = Some(mark.through.map_or(reported_at, |t| t.max(reported_at)));
                    mark.at_end = false;
                }
                Seen::End { partition } => partitions.entry(partition).or_default().at_end = true,
            }
        }
        self.changed(state)
    }

    /// Wakes every waiter for good: the consumer is gone.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    fn changed(&self, mut state: MutexGuard<'_, State>) -> bool {
        let recovered = state.recover();
        drop(state);
        self.changed.notify_all();
        recovered
    }

    /// Blocks until every labels partition has delivered the labels
    /// reported before `at` (Unix seconds), at most `max_wait`.
    pub fn wait_for(&self, at: i64) -> Result<Waited, Stopped> {
        if self.max_wait.is_zero() {
            return Ok(Waited::Off);
        }
        let started = Instant::now();
        let deadline = started + self.max_wait;
        let mut state = self.lock();
        loop {
            if state.delivered(at) {
                return Ok(Waited::Delivered { waited: started.elapsed() });
            }
            if state.stopped {
                return Err(Stopped);
            }
            if state.stalled_at.is_some() {
                return Ok(Waited::WhileStalled);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.stalled_at = Some(at);
                return Ok(Waited::Stalled);
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn label(partition: i32, reported_at: i64) -> Seen {
        Seen::Label { partition, reported_at }
    }

    #[test]
    fn a_batch_waits_until_every_partition_passed_its_time_or_ended() {
        let progress = Arc::new(LabelsProgress::new(WAIT));
        progress.assigned(&[0, 1]);
        let waiter = {
            let progress = progress.clone();
            std::thread::spawn(move || progress.wait_for(100))
        };
        progress.applied(&[label(0, 99), label(1, 150)]);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "partition 0 has not passed 100");
        progress.applied(&[label(0, 100)]);
        assert!(matches!(waiter.join().unwrap(), Ok(Waited::Delivered { .. })));

        // A partition read to its end has nothing more to give; a label
        // after the end means it has more.
        progress.applied(&[Seen::End { partition: 0 }, Seen::End { partition: 1 }]);
        assert!(matches!(progress.wait_for(1_000), Ok(Waited::Delivered { .. })));
        let quick = LabelsProgress::new(Duration::from_millis(20));
        quick.assigned(&[0]);
        quick.applied(&[Seen::End { partition: 0 }, label(0, 200)]);
        assert_eq!(quick.wait_for(1_000), Ok(Waited::Stalled), "a label after the end: not at the end any more");
    }

    #[test]
    fn unknown_partitions_wait_and_an_absent_topic_does_not() {
        let progress = LabelsProgress::new(Duration::from_millis(20));
        assert_eq!(progress.wait_for(0), Ok(Waited::Stalled), "partitions not known yet");
        let progress = LabelsProgress::new(WAIT);
        progress.assigned(&[]);
        assert!(matches!(progress.wait_for(i64::MAX), Ok(Waited::Delivered { .. })));
    }

    #[test]
    fn a_stall_costs_one_wait_and_ends_when_the_stream_catches_up() {
        let progress = LabelsProgress::new(Duration::from_millis(20));
        progress.assigned(&[0]);
        progress.applied(&[label(0, 10)]);
        assert_eq!(progress.wait_for(100), Ok(Waited::Stalled));
        assert_eq!(progress.wait_for(50), Ok(Waited::WhileStalled));
        assert!(!progress.applied(&[label(0, 99)]), "not caught up with 100 yet");
        assert!(progress.applied(&[label(0, 100)]), "caught up: the stall ends");
        assert_eq!(progress.wait_for(200), Ok(Waited::Stalled), "waits again after a stall ended");
    }

    #[test]
    fn waiting_can_be_off_and_stops_with_the_consumer() {
        assert_eq!(LabelsProgress::new(Duration::ZERO).wait_for(5), Ok(Waited::Off));
        let progress = Arc::new(LabelsProgress::new(WAIT));
        let waiter = {
            let progress = progress.clone();
            std::thread::spawn(move || progress.wait_for(5))
        };
        std::thread::sleep(Duration::from_millis(20));
        progress.stop();
        assert_eq!(waiter.join().unwrap(), Err(Stopped));
    }

    #[test]
    fn a_reassignment_keeps_the_progress_of_partitions_kept() {
        let progress = LabelsProgress::new(Duration::from_millis(20));
        progress.assigned(&[0]);
        progress.applied(&[label(0, 100)]);
        progress.assigned(&[0, 1]);
        assert_eq!(progress.wait_for(100), Ok(Waited::Stalled), "partition 1 is new");
        progress.applied(&[Seen::End { partition: 1 }]);
        assert!(matches!(progress.wait_for(100), Ok(Waited::Delivered { .. })));
    }
}
