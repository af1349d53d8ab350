//! Turns: history updates in the order batches were dispatched.
//!
//! The Kafka pipeline scores two batches at once, but a card's features
//! depend on every earlier transaction of the card, so batches must update
//! the history in the order they were read. A [`Turn`] is taken when a batch
//! is dispatched (in order) and waited for just before the history step; the
//! model runs after it, still two at once. A turn that is dropped unused (a
//! batch abandoned at shutdown) passes, so no later batch waits forever;
//! waiting again after finishing (a retried batch) returns at once.
//!
//! Merchant tiles are read from the store, where a batch's transactions
//! land only when the batch is stored, after its history step. In a sparse
//! stream or a backlog, batches still being stored can hold transactions
//! of a day whose tile a later batch is about to read, so a turn also
//! records, once its rows are in the history, the oldest day they hold
//! ([`Turn::recorded`]) until the batch is stored ([`Turn::stored`]), and
//! a batch reads tiles only after the earlier batches holding their days
//! are stored ([`Turn::wait_stored`]). Live, batches in flight hold today
//! only, and nothing waits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};

/// Hands out turns and lets them pass in order.
#[derive(Debug, Default)]
pub struct Sequencer {
    state: Mutex<State>,
    passed: Condvar,
    /// Signalled when a batch is stored.
    stored: Condvar,
}

#[derive(Debug, Default)]
struct State {
    issued: u64,
    /// Every turn before this one has finished.
    next: u64,
    /// Finished turns after `next`.
    finished: BTreeSet<u64>,
    /// Turns recorded in the history but not stored: the oldest UTC day
    /// (days since the epoch) of their rows.
    unstored: BTreeMap<u64, i64>,
}

impl Sequencer {
    pub fn turn(self: &Arc<Self>) -> Turn {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = state.issued;
        state.issued += 1;
        Turn { sequencer: self.clone(), n }
    }
}

/// One batch's place in the order.
#[derive(Debug)]
pub struct Turn {
    sequencer: Arc<Sequencer>,
    n: u64,
}

impl Turn {
    /// Blocks until every earlier turn has finished.
    pub fn wait(&self) {
        let s = &self.sequencer;
        let mut state = s.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.next < self.n {
            state = s.passed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The batch's rows, the oldest on `day`, are in the history; its
    /// tiles' rows are not stored yet.
    pub fn recorded(&self, day: i64) {
        let s = &self.sequencer;
        s.state.lock().unwrap_or_else(|p| p.into_inner()).unstored.insert(self.n, day);
    }

    /// The batch is stored, or will not be (abandoned, or re-read later).
    pub fn stored(&self) {
        let s = &self.sequencer;
        if s.state.lock().unwrap_or_else(|p| p.into_inner()).unstored.remove(&self.n).is_some() {
            s.stored.notify_all();
        }
    }

    /// Blocks until no earlier batch with rows on `day` or before is
    /// waiting to be stored.
    pub fn wait_stored(&self, day: i64) {
        let s = &self.sequencer;
        let mut state = s.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.unstored.range(..self.n).any(|(_, oldest)| *oldest <= day) {
            state = s.stored.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Lets later turns pass (again: idempotent).
    pub fn finish(&self) {
        let s = &self.sequencer;
        let mut state = s.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.n < state.next {
            return;
        }
        state.finished.insert(self.n);
        while state.finished.first() == Some(&state.next) {
            state.finished.pop_first();
            state.next += 1;
        }
        s.passed.notify_all();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.finish();
        self.stored();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_pass_in_the_order_they_were_taken() {
        let seq = Arc::new(Sequencer::default());
        let turns: Vec<Turn> = (0..8).map(|_| seq.turn()).collect();
        let order = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = turns
            .into_iter()
            .enumerate()
            .rev()
            .map(|(i, turn)| {
                let order = order.clone();
                std::thread::spawn(move || {
                    turn.wait();
                    order.lock().unwrap().push(i);
                    turn.finish();
                    turn.wait(); // a retry: passes at once
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn tiles_wait_for_earlier_batches_holding_their_days_to_be_stored() {
        let seq = Arc::new(Sequencer::default());
        let (first, second, third) = (seq.turn(), seq.turn(), seq.turn());
        first.recorded(10);
        second.recorded(20);
        first.finish();
        second.finish();
        third.wait_stored(9); // nothing earlier holds day 9 or before
        let waiter = std::thread::spawn(move || {
            third.wait_stored(15);
            third
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(!waiter.is_finished(), "the first batch holds day 10");
        first.stored();
        let third = waiter.join().unwrap();
        third.wait_stored(15);
        drop(second); // dropped unstored (abandoned): no longer waited for
        third.wait_stored(25);
    }

    #[test]
    fn a_dropped_turn_lets_the_next_pass() {
        let seq = Arc::new(Sequencer::default());
        let (first, second) = (seq.turn(), seq.turn());
        drop(first);
        second.wait();
    }
}
