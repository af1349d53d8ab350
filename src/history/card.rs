//! One card's recent transactions and the card features of a new one
//! (the `card` rows of [`super::definitions`]).
//!
//! Events are kept sorted by `(unix_time, trans_num)`, so the answer never
//! depends on arrival order: a transaction's windows hold the card's
//! transactions with `unix_time` in `[t - W, t)` (others in the same second
//! are not earlier), and its "previous" transaction is the last event
//! before `t` in that order (ties in the second: the greatest `trans_num`).
//! Spark computes the same with range windows ending at `-1`
//! (`fraudflight_spark/history.py`).

use std::collections::VecDeque;
use std::sync::Arc;

use super::definitions::DAY;
use crate::features::haversine_km;

/// A confirmed outcome of one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub is_fraud: bool,
    /// Unix seconds.
    pub reported_at: i64,
    /// Who decided, when an analyst did (the outcome's `label_by`).
    pub by: Option<Arc<str>>,
}

impl Label {
    /// A label without a decider (tests, chargebacks).
    pub fn new(is_fraud: bool, reported_at: i64) -> Self {
        Self { is_fraud, reported_at, by: None }
    }

    /// Its place among the reports of one transaction ([`version`]).
    pub fn version(&self) -> i64 {
        version(self.reported_at, self.is_fraud, self.by.as_deref())
    }

    /// Its order among the reports of one transaction: [`Self::version`],
    /// then, where two deciders' versions tie (their hashes share a
    /// second's microseconds), the larger name, as Cassandra keeps the
    /// larger value of cells written with one timestamp.
    pub fn order(&self) -> (i64, &str) {
        (self.version(), self.by.as_deref().unwrap_or_default())
    }
}

/// The reports of one transaction whose transaction is not held yet (a
/// label before its transaction), oldest first. All are kept, not only the
/// newest: which one counts in merchant risk depends on the transaction's
/// day (the newest reported before its tile is final), unknown until it
/// arrives. A late reversal must not erase an on-time fraud.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reports {
    labels: Vec<Label>,
    /// One came from this process only (Flight, HTTP without Kafka), not
    /// from the labels stream every instance reads: the owner of its
    /// transaction may never have seen it.
    pub local: bool,
}

/// Reports kept per transaction, at most (the oldest go first).
const MAX_REPORTS: usize = 8;

impl Reports {
    pub fn add(&mut self, label: Label) {
        let at = self.labels.partition_point(|l| l.order() < label.order());
        if self.labels.get(at).is_some_and(|l| l.order() == label.order()) {
            return;
        }
        self.labels.insert(at, label);
        if self.labels.len() > MAX_REPORTS {
            self.labels.remove(0);
        }
    }

    /// Every report, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.labels.iter()
    }

    /// The newest report: what the outcome shows.
    pub fn newest(&self) -> Option<&Label> {
        self.labels.last()
    }

    /// The newest report made before the tile of a transaction on `day`
    /// became final: what merchant risk counts.
    pub fn newest_on_time(&self, day: i64, delay_days: i64) -> Option<&Label> {
        self.labels.iter().rev().find(|l| super::merchant::on_time(l, day, delay_days))
    }
}

/// The place of a report among those of one transaction, the newest
/// winning: Unix microseconds of `reported_at`, and within its second, a
/// fraud before a genuine, then an order of deciders the same in every
/// process. It is the Cassandra write timestamp of every label cell, so
/// memory and Cassandra pick the same winner of reports made in the same
/// second, whatever order they arrive in (they used to take the last one
/// each received).
pub fn version(reported_at: i64, is_fraud: bool, by: Option<&str>) -> i64 {
    // FNV-1a: stable across processes and releases (std's hasher is not).
    let decider = by.filter(|b| !b.is_empty()).map_or(0, |b| {
        let hash = b.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, c| (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3));
        (hash % 499_999) as i64 + 1
    });
    let within = if is_fraud { 500_000 } else { 0 } + decider;
    reported_at.saturating_mul(1_000_000).saturating_add(within)
}

/// One stored transaction of the card.
#[derive(Debug, Clone)]
pub struct Event {
    pub unix_time: i64,
    pub trans_num: Box<str>,
    /// `round(amt * 100)`: sums in integer cents are exact in any order.
    pub cents: i64,
    pub merch_lat: f64,
    pub merch_long: f64,
    pub merchant: Option<Arc<str>>,
    /// The newest label received for it, if any (what the outcome shows).
    pub label: Option<Label>,
    /// The newest label reported before its merchant tile was final (what
    /// merchant risk counts, [`super::merchant::counts`]).
    pub tile: Option<Label>,
}

/// The transaction being scored, as the card features need it.
#[derive(Debug, Clone, Copy)]
pub struct Current {
    pub unix_time: i64,
    pub amt: f64,
    pub merch_lat: f64,
    pub merch_long: f64,
}

/// Count and cent sum of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub count: i64,
    pub cents: i64,
}

impl Window {
    /// Mean amount in currency units; 0 when empty.
    pub fn mean(self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            // Same operations, in the same order, as Spark: double division.
            self.cents as f64 / self.count as f64 / 100.0
        }
    }
}

/// The card side of a transaction's history features.
#[derive(Debug, Clone, PartialEq)]
pub struct CardFeatures {
    /// One per card window, in the order of the windows asked for.
    pub windows: Vec<Window>,
    /// `(seconds since, km from)` the previous transaction, if any.
    pub previous: Option<(i64, f64)>,
}

/// Cents of an amount, as both sides round it (half away from zero).
pub fn cents(amt: f64) -> i64 {
    (amt * 100.0).round() as i64
}

/// The events of one card, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Card {
    events: VecDeque<Event>,
}

impl Card {
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    pub fn into_events(self) -> impl Iterator<Item = Event> {
        self.events.into_iter()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Index of the first event at or after `(unix_time, trans_num)`.
    fn position(&self, unix_time: i64, trans_num: &str) -> usize {
        self.events.partition_point(|e| (e.unix_time, &*e.trans_num) < (unix_time, trans_num))
    }

    /// The card features of `current`; `windows` in days, ascending.
    pub fn features(&self, current: &Current, windows: &[i64]) -> CardFeatures {
        // Events before this second are the earlier ones.
        let end = self.events.partition_point(|e| e.unix_time < current.unix_time);
        let mut out = vec![Window::default(); windows.len()];
        let mut running = Window::default();
        let mut w = 0;
        for e in self.events.range(..end).rev() {
            while w < windows.len() && e.unix_time < current.unix_time - windows[w] * DAY {
                out[w] = running;
                w += 1;
            }
            if w == windows.len() {
                break;
            }
            running.count += 1;
            running.cents += e.cents;
        }
        for slot in &mut out[w..] {
            *slot = running;
        }
        let previous = end.checked_sub(1).map(|i| {
            let p = &self.events[i];
            (
                current.unix_time - p.unix_time,
                haversine_km(p.merch_lat, p.merch_long, current.merch_lat, current.merch_long),
            )
        });
        CardFeatures { windows: out, previous }
    }

    /// Adds an event in order; false (and nothing changes) when the card
    /// already holds that `(unix_time, trans_num)`: a record delivered twice
    /// counts once.
    pub fn insert(&mut self, event: Event) -> bool {
        let at = self.position(event.unix_time, &event.trans_num);
        if self.events.get(at).is_some_and(|e| e.unix_time == event.unix_time && e.trans_num == event.trans_num) {
            return false;
        }
        // Grow by one: most cards hold a few events, and the default
        // growth (to 4, then doubling) tripled the cache's memory.
        self.events.reserve_exact(1);
        self.events.insert(at, event);
        true
    }

    /// The event of a transaction, by its number.
    pub fn find(&self, trans_num: &str) -> Option<&Event> {
        self.events.iter().rev().find(|e| &*e.trans_num == trans_num)
    }

    /// The event of a transaction, by its number, to change.
    pub fn find_mut(&mut self, trans_num: &str) -> Option<&mut Event> {
        self.events.iter_mut().rev().find(|e| &*e.trans_num == trans_num)
    }

    /// Drops events before `cutoff`, but never the newest: it is the next
    /// transaction's "previous" however old. The cutoff is the longest
    /// window before the transaction just recorded, not before the card's
    /// newest event: after a crash, a card reloaded from the store holds
    /// events later than the records re-read after it, and those need the
    /// weeks before themselves.
    pub fn prune_before(&mut self, cutoff: i64) {
        while self.events.len() > 1 && self.events[0].unix_time < cutoff {
            self.events.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciders_whose_versions_tie_are_ordered_by_name_as_cassandra_does() {
        let by = |name: &str| Label { is_fraud: true, reported_at: 2_000, by: Some(name.into()) };
        let (small, large) = (by("analyst4998"), by("analyst5640"));
        assert_eq!(small.version(), large.version(), "the two names' hashes collide");
        assert!(small.order() < large.order());
        for arrivals in [[small.clone(), large.clone()], [large.clone(), small.clone()]] {
            let mut reports = Reports::default();
            for l in arrivals {
                reports.add(l);
            }
            assert_eq!(reports.newest(), Some(&large), "kept both, the larger name newest");
        }
    }

    fn event(t: i64, n: &str, amt: f64) -> Event {
        Event {
            unix_time: t,
            trans_num: n.into(),
            cents: cents(amt),
            merch_lat: 40.0,
            merch_long: -75.0 + t as f64 * 1e-6,
            merchant: None,
            label: None,
            tile: None,
        }
    }

    /// The definition, written as plainly as possible: filter, count, sum.
    fn reference(events: &[Event], cur: &Current, windows: &[i64]) -> CardFeatures {
        let earlier: Vec<&Event> = events.iter().filter(|e| e.unix_time < cur.unix_time).collect();
        let windows = windows
            .iter()
            .map(|w| {
                let inside: Vec<&&Event> = earlier.iter().filter(|e| e.unix_time >= cur.unix_time - w * DAY).collect();
                Window { count: inside.len() as i64, cents: inside.iter().map(|e| e.cents).sum() }
            })
            .collect();
        let previous =
            earlier.iter().max_by(|a, b| (a.unix_time, &a.trans_num).cmp(&(b.unix_time, &b.trans_num))).map(|p| {
                (cur.unix_time - p.unix_time, haversine_km(p.merch_lat, p.merch_long, cur.merch_lat, cur.merch_long))
            });
        CardFeatures { windows, previous }
    }

    #[test]
    fn windows_hold_earlier_seconds_only_and_equal_the_plain_definition() {
        // Pseudo-random times with many same-second ties and window edges.
        let mut card = Card::default();
        let mut all = Vec::new();
        let mut x: u64 = 7;
        for i in 0..400 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let t = 1_600_000_000 + ((x >> 33) % (40 * DAY as u64)) as i64 / 600 * 600;
            let e = event(t, &format!("tx{:04}", (x >> 20) % 1000), 1.0 + i as f64 * 0.37);
            let cur = Current { unix_time: t, amt: 9.99, merch_lat: 41.0, merch_long: -74.0 };
            let sorted = {
                let mut v: Vec<Event> = card.events().cloned().collect();
                v.sort_by(|a, b| (a.unix_time, &a.trans_num).cmp(&(b.unix_time, &b.trans_num)));
                v
            };
            assert_eq!(card.features(&cur, &[1, 7, 30]), reference(&sorted, &cur, &[1, 7, 30]), "event {i}");
            if card.insert(e.clone()) {
                all.push(e);
            }
        }
        assert_eq!(card.len(), all.len());
        let times: Vec<i64> = card.events().map(|e| e.unix_time).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "events stay in time order");
    }

    #[test]
    fn a_window_starts_at_exactly_t_minus_w() {
        let mut card = Card::default();
        let t = 1_700_000_000;
        card.insert(event(t - DAY, "a", 10.0)); // in [t - 1d, t)
        card.insert(event(t - DAY - 1, "b", 20.0)); // one second too old for 1d
        card.insert(event(t, "c", 40.0)); // same second: not earlier
        let f = card.features(&Current { unix_time: t, amt: 5.0, merch_lat: 40.0, merch_long: -75.0 }, &[1, 7]);
        assert_eq!(f.windows, vec![Window { count: 1, cents: 1000 }, Window { count: 2, cents: 3000 }]);
        assert_eq!(f.previous.unwrap().0, DAY, "previous is `a`, not the same-second `c`");
    }

    #[test]
    fn a_duplicate_counts_once_and_pruning_keeps_the_newest() {
        let mut card = Card::default();
        assert!(card.insert(event(100, "a", 1.0)));
        assert!(!card.insert(event(100, "a", 1.0)));
        assert!(card.insert(event(100 + 90 * DAY, "b", 1.0)));
        assert!(card.insert(event(100 + 40 * DAY, "c", 1.0)));
        // Re-reading "c" (a record after a crash, the card reloaded with "b"
        // already stored): what "c" and the records after it need stays.
        card.prune_before(100 + 40 * DAY - 30 * DAY);
        assert_eq!(card.events().map(|e| &*e.trans_num).collect::<Vec<_>>(), ["c", "b"]);
        card.prune_before(100 + 90 * DAY - 30 * DAY);
        assert_eq!(card.events().map(|e| &*e.trans_num).collect::<Vec<_>>(), ["b"]);
        card.prune_before(100 + 200 * DAY);
        assert_eq!(card.len(), 1, "the newest event stays whatever its age");
    }

    #[test]
    fn means_divide_integer_cents() {
        assert_eq!(cents(0.1 + 0.2), 30);
        assert_eq!(cents(19.99), 1999, "19.99 * 100 is 1998.9999999999998 in double");
        assert_eq!(Window { count: 3, cents: 1000 }.mean(), 1000.0 / 3.0 / 100.0);
        assert_eq!(Window::default().mean(), 0.0);
    }
}
