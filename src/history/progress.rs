//! How far the labels stream has been applied, and the bounded wait of a
//! batch of transactions for it (docs/architecture.md, "History": labels in
//! event time).
//!
//! A transaction on day `D` reads merchant tiles up to day `D - 8`, the
//! newest of which became final at the start of `D`: every label reported
//! before that instant must be applied first, however fast each topic is
//! consumed (a backlog after an outage, a replay, a producer far slower
//! than the transactions'). Labels come in report order within a partition
//! (a sender sends them as they are reported), so this is a watermark with
//! an idleness rule, as stream processors keep one:
//!
//! - a partition is caught up to `T` once it has applied a label reported at
//!   or after `T`;
//! - or once it is *idle*: at its end and silent for `idle`. At its end
//!   means the consumer read librdkafka's end of it and found nothing of it
//!   queued behind that end ([`Seen::End`], confirmed again every poll).
//!   The end alone proves nothing: librdkafka reports it when its fetch
//!   reaches it, and the partition's later labels may already wait in the
//!   consumer's queue behind another partition's backlog (seconds of it
//!   when the labels come faster than they are stored), or a producer may
//!   not have written yet. So a partition is idle once it has been
//!   confirmed at its end for `idle` after it was last read (or assigned),
//!   and lately (a consumer that stopped confirming, busy or gone, proves
//!   nothing about now). A labels topic that does not exist counts as idle
//!   once it has been missing for `idle`.
//!
//! A value that is not a label is heard (the partition is not idle) but
//! proves nothing about report times.
//!
//! A batch waits for that at most `max_wait`. Then the labels stream is
//! *stalled*: batches go on without waiting (counted, logged, in /metrics)
//! until the stream catches up with the time the stalled batch needed, so a
//! dead labels topic costs one wait, not one per batch.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a waiter looks again without news: idleness comes with time.
const RECHECK: Duration = Duration::from_millis(50);

/// One labels partition's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// The newest report time (Unix seconds) applied from it.
    through: Option<i64>,
    /// When it was last confirmed at its end, if nothing was read since.
    at_end: Option<Instant>,
    /// When something was last read from it (or it was assigned).
    heard: Instant,
}

impl Mark {
    fn new(now: Instant) -> Self {
        Self { through: None, at_end: None, heard: now }
    }

    /// At its end since `idle` after it was last heard, confirmed within
    /// the last `idle`.
    fn idle(&self, now: Instant, idle: Duration) -> bool {
        self.at_end.is_some_and(|at| {
            at.saturating_duration_since(self.heard) >= idle && now.saturating_duration_since(at) < idle
        })
    }

    fn delivered(&self, at: i64, now: Instant, idle: Duration) -> bool {
        self.through.is_some_and(|t| t >= at) || self.idle(now, idle)
    }
}

#[derive(Debug, Default)]
struct State {
    /// None until the consumer knows its partitions; empty when the topic
    /// does not exist.
    partitions: Option<BTreeMap<i32, Mark>>,
    /// Since when the topic has been missing.
    missing_since: Option<Instant>,
    /// The time a batch needed when the wait gave up, until the stream
    /// has caught up with it.
    stalled_at: Option<i64>,
    /// A stall ended and nobody has been told yet.
    recovered: bool,
    /// When anything was last read from any partition.
    last_heard: Option<Instant>,
    stopped: bool,
}

impl State {
    fn delivered(&self, at: i64, now: Instant, idle: Duration) -> bool {
        match &self.partitions {
            None => false,
            Some(p) if p.is_empty() => self.missing_since.is_some_and(|since| now.duration_since(since) >= idle),
            Some(p) => p.values().all(|m| m.delivered(at, now, idle)),
        }
    }

    /// Clears a stall the stream has caught up with.
    fn recover(&mut self, now: Instant, idle: Duration) {
        if let Some(at) = self.stalled_at {
            if self.delivered(at, now, idle) {
                self.stalled_at = None;
                self.recovered = true;
            }
        }
    }
}

/// What the labels consumer saw, in the order it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A label reported at this time, applied and stored.
    Label { partition: i32, reported_at: i64 },
    /// A value that is not a label (sent to the DLQ): the partition is not
    /// idle, but nothing is known of report times.
    Unreadable { partition: i32 },
    /// Messages read from it and not applied yet (told before they are
    /// stored): not idle meanwhile.
    Reading { partition: i32 },
    /// The partition's end read (librdkafka's end of it) and nothing of it
    /// queued behind that end, at this instant.
    End { partition: i32, at: Instant },
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
    idle: Duration,
}

impl LabelsProgress {
    /// Batches wait at most `max_wait` for labels (zero = never); a
    /// partition read to its end and silent for `idle` has nothing earlier
    /// to deliver.
    pub fn new(max_wait: Duration, idle: Duration) -> Self {
        Self { state: Mutex::default(), changed: Condvar::new(), max_wait, idle }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The consumer's partitions now (empty: the topic does not exist).
    /// Partitions kept keep their progress; new ones start from nothing and
    /// are heard now, so they are waited for at least `idle`.
    pub fn assigned(&self, partitions: &[i32]) {
        self.assigned_at(partitions, Instant::now());
    }

    fn assigned_at(&self, partitions: &[i32], now: Instant) {
        let mut state = self.lock();
        let old = state.partitions.take().unwrap_or_default();
        state.partitions =
            Some(partitions.iter().map(|p| (*p, old.get(p).copied().unwrap_or(Mark::new(now)))).collect());
        if partitions.is_empty() {
            state.missing_since.get_or_insert(now);
        } else {
            state.missing_since = None;
        }
        self.changed(state, now);
    }

    /// Labels applied and stored, unreadable values and partition ends, in
    /// the order they were read.
    pub fn applied(&self, seen: &[Seen]) {
        self.applied_at(seen, Instant::now());
    }

    fn applied_at(&self, seen: &[Seen], now: Instant) {
        let mut state = self.lock();
        let quiet = state.last_heard.is_none_or(|at| now.duration_since(at) >= self.idle);
        let Some(partitions) = state.partitions.as_mut() else {
            return;
        };
        let read =
            seen.iter().any(|s| matches!(s, Seen::Label { .. } | Seen::Unreadable { .. } | Seen::Reading { .. }));
        if read && quiet {
            // The first labels after the whole topic was silent: the other
            // partitions' silence meant nothing (nobody was writing), so
            // they are waited for again, for their first labels of a burst.
            for mark in partitions.values_mut() {
                mark.heard = now;
            }
        }
        for s in seen {
            match *s {
                Seen::Label { partition, reported_at } => {
                    let mark = partitions.entry(partition).or_insert(Mark::new(now));
                    mark.through = Some(mark.through.map_or(reported_at, |t| t.max(reported_at)));
                    mark.at_end = None;
                    mark.heard = now;
                }
                Seen::Unreadable { partition } | Seen::Reading { partition } => {
                    let mark = partitions.entry(partition).or_insert(Mark::new(now));
                    mark.at_end = None;
                    mark.heard = now;
                }
                Seen::End { partition, at } => partitions.entry(partition).or_insert(Mark::new(now)).at_end = Some(at),
            }
        }
        if read {
            state.last_heard = Some(now);
        }
        self.changed(state, now);
    }

    /// True once if a stall ended since the last call (for the log and
    /// /metrics).
    pub fn take_recovered(&self) -> bool {
        let mut state = self.lock();
        state.recover(Instant::now(), self.idle);
        std::mem::take(&mut state.recovered)
    }

    /// Wakes every waiter for good: the consumer is gone.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    fn changed(&self, mut state: MutexGuard<'_, State>, now: Instant) {
        state.recover(now, self.idle);
        drop(state);
        self.changed.notify_all();
    }

    /// The latest time `T` such that every label reported before `T` has
    /// been applied here (i64::MAX: nothing to wait for: waiting is off, the
    /// stream stalled, or every partition idle; i64::MIN: nothing known
    /// yet). Other instances read it (`source/peers.rs`): a tile this
    /// instance's labels may still mark is not read before it is past.
    pub fn applied_through(&self) -> i64 {
        if self.max_wait.is_zero() {
            return i64::MAX;
        }
        let now = Instant::now();
        let mut state = self.lock();
        state.recover(now, self.idle);
        if state.stalled_at.is_some() || state.stopped {
            return i64::MAX;
        }
        match &state.partitions {
            None => i64::MIN,
            Some(p) if p.is_empty() && state.missing_since.is_some_and(|s| now.duration_since(s) >= self.idle) => {
                i64::MAX
            }
            Some(p) if p.is_empty() => i64::MIN,
            Some(p) => p
                .values()
                .map(|m| {
                    if m.idle(now, self.idle) {
                        i64::MAX
                    } else {
                        // A label reported at T applied: every one before T
                        // (others of the same second may still come).
                        m.through.unwrap_or(i64::MIN)
                    }
                })
                .min()
                .unwrap_or(i64::MAX),
        }
    }

    /// The latest time `T` such that every label reported before `T` and
    /// published in report order has been applied here, whether or not
    /// anything waits: the least newest report applied over the labels
    /// partitions (one that never held a label and is idle counts as
    /// i64::MAX); i64::MIN when nothing is known. Unlike
    /// [`Self::applied_through`], an idle or stalled stream does not make it
    /// i64::MAX: the instances that take this one's partitions over look
    /// again for their pending labels reported since
    /// (`History::forget_cards`), and a label this one never read must be
    /// among them.
    pub fn applied_in_order(&self) -> i64 {
        let now = Instant::now();
        let state = self.lock();
        match &state.partitions {
            Some(p) if !p.is_empty() => p
                .values()
                .map(|m| match m.through {
                    Some(t) => t,
                    None if m.idle(now, self.idle) => i64::MAX,
                    None => i64::MIN,
                })
                .min()
                .unwrap_or(i64::MIN),
            _ => i64::MIN,
        }
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
            let now = Instant::now();
            state.recover(now, self.idle);
            if state.delivered(at, now, self.idle) {
                return Ok(Waited::Delivered { waited: started.elapsed() });
            }
            if state.stopped {
                return Err(Stopped);
            }
            if state.stalled_at.is_some() {
                return Ok(Waited::WhileStalled);
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                state.stalled_at = Some(at);
                return Ok(Waited::Stalled);
            }
            // Woken by news, or soon anyway: a partition may turn idle.
            state = self.changed.wait_timeout(state, left.min(RECHECK)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(5);

    fn label(partition: i32, reported_at: i64) -> Seen {
        Seen::Label { partition, reported_at }
    }

    #[test]
    fn the_progress_published_to_other_instances_is_the_least_partitions() {
        let progress = LabelsProgress::new(WAIT, IDLE);
        assert_eq!(progress.applied_through(), i64::MIN, "partitions not known yet");
        progress.assigned(&[0, 1]);
        assert_eq!(progress.applied_through(), i64::MIN);
        progress.applied(&[label(0, 99), label(1, 150)]);
        assert_eq!(progress.applied_through(), 99);
        assert!(progress.lock().delivered(99, Instant::now(), IDLE), "the same rule as the wait");
        progress.applied(&[label(0, 200)]);
        assert_eq!(progress.applied_through(), 150);
        assert_eq!(LabelsProgress::new(Duration::ZERO, IDLE).applied_through(), i64::MAX, "waiting off");
    }

    #[test]
    fn a_batch_waits_until_every_partition_passed_its_time() {
        let progress = Arc::new(LabelsProgress::new(WAIT, IDLE));
        progress.assigned(&[0, 1]);
        let waiter = {
            let progress = progress.clone();
            std::thread::spawn(move || progress.wait_for(100))
        };
        progress.applied(&[label(0, 99), label(1, 150)]);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!waiter.is_finished(), "partition 0 has not passed 100");
        progress.applied(&[label(0, 100)]);
        assert!(matches!(waiter.join().unwrap(), Ok(Waited::Delivered { .. })));
    }

    fn end(partition: i32, at: Instant) -> Seen {
        Seen::End { partition, at }
    }

    #[test]
    fn an_end_read_long_ago_proves_nothing_about_labels_queued_behind_it() {
        // The failure this rule fixes: partition 0's end was read, then its
        // next labels waited seconds in the consumer's queue behind
        // partition 1's backlog. Only ends confirmed with nothing queued
        // behind them count, and only lately.
        let start = Instant::now();
        let progress = LabelsProgress::new(WAIT, IDLE);
        progress.assigned_at(&[0], start);
        progress.applied_at(&[end(0, start)], start);
        assert!(!progress.lock().delivered(1_000, start + IDLE * 2, IDLE), "never confirmed since");
        progress.applied_at(&[end(0, start + IDLE)], start + IDLE);
        assert!(progress.lock().delivered(1_000, start + IDLE, IDLE), "confirmed at its end for the idle time");
        assert!(!progress.lock().delivered(1_000, start + IDLE * 2, IDLE), "not confirmed lately");
        // Read again, then confirmed at its (new) end: idle once it stays so.
        progress.applied_at(&[label(0, 500), end(0, start + IDLE * 3)], start + IDLE * 3);
        assert!(!progress.lock().delivered(1_000, start + IDLE * 3, IDLE));
        progress.applied_at(&[end(0, start + IDLE * 4)], start + IDLE * 4);
        assert!(progress.lock().delivered(1_000, start + IDLE * 4, IDLE));
    }

    #[test]
    fn labels_read_but_not_stored_yet_keep_their_partition_from_idle() {
        let start = Instant::now();
        let progress = LabelsProgress::new(WAIT, IDLE);
        progress.assigned_at(&[0], start);
        progress.applied_at(&[end(0, start + IDLE)], start + IDLE);
        assert!(progress.lock().delivered(1_000, start + IDLE, IDLE), "idle");
        // A label read; its batch is being stored.
        progress.applied_at(&[Seen::Reading { partition: 0 }], start + IDLE);
        assert!(!progress.lock().delivered(1_000, start + IDLE * 3 / 2, IDLE), "not idle while it is stored");
        progress.applied_at(&[label(0, 1_000)], start + IDLE * 2);
        assert!(progress.lock().delivered(1_000, start + IDLE * 2, IDLE), "applied: caught up");
    }

    #[test]
    fn a_confirmation_counts_from_when_it_was_made_not_when_it_was_told() {
        // A slow batch: the end was confirmed before the batch was stored.
        // Told later, it still proves only the silence until it was made.
        let start = Instant::now();
        let progress = LabelsProgress::new(WAIT, IDLE);
        progress.assigned_at(&[0], start);
        progress.applied_at(&[label(0, 10)], start);
        progress.applied_at(&[end(0, start + IDLE / 10)], start + IDLE * 2);
        assert!(!progress.lock().delivered(1_000, start + IDLE * 2, IDLE));
    }

    #[test]
    fn an_end_proves_nothing_until_the_partition_has_been_silent_for_the_idle_time() {
        let start = Instant::now();
        let progress = LabelsProgress::new(WAIT, IDLE);
        progress.assigned_at(&[0, 1], start);
        progress.applied_at(&[label(0, 10), end(0, start), end(1, start)], start);
        // A producer still writing: the end only says it has not written yet.
        progress.applied_at(&[end(0, start + IDLE / 2), end(1, start + IDLE / 2)], start + IDLE / 2);
        assert!(!progress.lock().delivered(1_000, start + IDLE / 2, IDLE));
        progress.applied_at(&[end(0, start + IDLE), end(1, start + IDLE)], start + IDLE);
        assert!(progress.lock().delivered(1_000, start + IDLE, IDLE), "silent at the end for the idle time");
        // Read again: not idle any more, whatever the end said before.
        progress.applied_at(&[label(0, 20)], start + IDLE);
        assert!(!progress.lock().delivered(1_000, start + IDLE + IDLE / 2, IDLE));
        // Silent but not at its end (a backlog being read): not idle.
        let later = start + IDLE * 10;
        progress.applied_at(&[label(1, 5)], start + IDLE);
        progress.applied_at(&[end(0, later)], later);
        assert!(!progress.lock().delivered(1_000, later, IDLE), "partition 1 has not been read to its end");
        // An unreadable value is heard, but proves no report time.
        progress.applied_at(&[Seen::Unreadable { partition: 1 }, end(1, later)], later);
        assert!(!progress.lock().delivered(1_000, later, IDLE));
        progress.applied_at(&[end(0, later + IDLE), end(1, later + IDLE)], later + IDLE);
        assert!(progress.lock().delivered(1_000, later + IDLE, IDLE));
    }

    #[test]
    fn new_partitions_and_a_missing_topic_are_waited_for_the_idle_time() {
        let start = Instant::now();
        let progress = LabelsProgress::new(WAIT, IDLE);
        assert!(!progress.lock().delivered(0, start, IDLE), "partitions not known yet");
        progress.assigned_at(&[], start);
        assert!(!progress.lock().delivered(0, start + IDLE / 2, IDLE), "missing for less than the idle time");
        assert!(progress.lock().delivered(i64::MAX, start + IDLE, IDLE), "missing for the idle time");
        // The topic appears: its partitions are new, heard when assigned.
        progress.assigned_at(&[0], start + IDLE);
        progress.applied_at(&[end(0, start + IDLE * 3 / 2)], start + IDLE * 3 / 2);
        assert!(!progress.lock().delivered(0, start + IDLE * 3 / 2, IDLE));
        progress.applied_at(&[end(0, start + IDLE * 2)], start + IDLE * 2);
        assert!(progress.lock().delivered(0, start + IDLE * 2, IDLE));
    }

    #[test]
    fn the_first_labels_after_a_silence_of_the_whole_topic_wait_for_the_other_partitions() {
        let start = Instant::now();
        let progress = LabelsProgress::new(WAIT, IDLE);
        progress.assigned_at(&[0, 1], start);
        let later = start + IDLE * 10;
        progress.applied_at(&[end(0, later), end(1, later)], later);
        assert!(progress.lock().delivered(1_000, later, IDLE), "both idle");
        // A replay begins: partition 0's first labels; 1 may have some too.
        progress.applied_at(&[label(0, 2_000), end(0, later)], later);
        assert!(!progress.lock().delivered(1_000, later, IDLE), "partition 1 is waited for again");
        progress.applied_at(&[end(1, later + IDLE)], later + IDLE);
        assert!(progress.lock().delivered(1_000, later + IDLE, IDLE), "unless it stays silent");
    }

    #[test]
    fn a_stall_costs_one_wait_and_ends_when_the_stream_catches_up() {
        let progress = LabelsProgress::new(Duration::from_millis(20), IDLE);
        progress.assigned(&[0]);
        progress.applied(&[label(0, 10)]);
        assert_eq!(progress.wait_for(100), Ok(Waited::Stalled));
        assert_eq!(progress.wait_for(50), Ok(Waited::WhileStalled));
        progress.applied(&[label(0, 99)]);
        assert!(!progress.take_recovered(), "not caught up with 100 yet");
        progress.applied(&[label(0, 100)]);
        assert!(progress.take_recovered(), "caught up: the stall ends");
        assert!(!progress.take_recovered(), "told once");
        assert_eq!(progress.wait_for(200), Ok(Waited::Stalled), "waits again after a stall ended");
    }

    #[test]
    fn a_waiter_is_released_when_the_partitions_turn_idle() {
        let progress = Arc::new(LabelsProgress::new(WAIT, Duration::from_millis(100)));
        progress.assigned(&[0]);
        progress.applied(&[label(0, 10), end(0, Instant::now())]);
        let started = Instant::now();
        // The consumer confirms the end at every poll.
        let confirming = {
            let progress = progress.clone();
            std::thread::spawn(move || {
                for _ in 0..40 {
                    std::thread::sleep(Duration::from_millis(10));
                    progress.applied(&[end(0, Instant::now())]);
                }
            })
        };
        assert!(matches!(progress.wait_for(1_000), Ok(Waited::Delivered { .. })));
        assert!(started.elapsed() >= Duration::from_millis(90), "waited for the silence");
        confirming.join().unwrap();
    }

    #[test]
    fn waiting_can_be_off_and_stops_with_the_consumer() {
        assert_eq!(LabelsProgress::new(Duration::ZERO, IDLE).wait_for(5), Ok(Waited::Off));
        let progress = Arc::new(LabelsProgress::new(WAIT, IDLE));
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
        let progress = LabelsProgress::new(Duration::from_millis(20), IDLE);
        progress.assigned(&[0]);
        progress.applied(&[label(0, 100)]);
        progress.assigned(&[0, 1]);
        assert_eq!(progress.wait_for(100), Ok(Waited::Stalled), "partition 1 is new");
        progress.applied(&[label(1, 100)]);
        assert!(matches!(progress.wait_for(100), Ok(Waited::Delivered { .. })));
    }
}
