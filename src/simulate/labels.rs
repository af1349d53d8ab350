//! Fraud labels as a bank receives them: each fraudulent transaction is
//! reported (a chargeback, an analyst's decision) some time after it was
//! made, and the reports come out in the order they are made, interleaved
//! with the stream (`fraudflight simulate --labels`, docs/architecture.md,
//! "History").
//!
//! Delays: three in four within a week (1 hour to 6 days, in time for
//! merchant risk), the rest 6 to 20 days (late). Drawn from their own
//! seeded generator, so the transactions of a seed are the same with or
//! without labels.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::record::Transaction;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// A fraud reported at `reported_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Report {
    pub reported_at: i64,
    pub trans_num: String,
    pub cc_num: String,
}

impl Report {
    /// The label's JSON value on `<topic>.labels`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "trans_num": self.trans_num,
            "cc_num": self.cc_num,
            "is_fraud": 1,
            "reported_at": self.reported_at,
        })
        .to_string()
    }
}

/// Reports the frauds of a time-ordered stream.
pub struct Reporter {
    rng: Xoshiro256PlusPlus,
    waiting: BinaryHeap<Reverse<Report>>,
}

impl Reporter {
    pub fn new(seed: u64) -> Self {
        Self { rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x001a_be15), waiting: BinaryHeap::new() }
    }

    /// The reports made before `t` (to send before it), then queues the
    /// report of `t` if it is a fraud.
    pub fn observe(&mut self, t: &Transaction) -> Vec<Report> {
        let now = t.unix_time.unwrap_or(i64::MIN);
        let due = self.due(now);
        if t.is_fraud == Some(1) {
            let delay = if self.rng.random_bool(0.75) {
                self.rng.random_range(HOUR..6 * DAY)
            } else {
                self.rng.random_range(6 * DAY..20 * DAY)
            };
            let reported_at = now.saturating_add(delay);
            self.waiting.push(Reverse(Report {
                reported_at,
                trans_num: t.trans_num.clone(),
                cc_num: t.cc_num.clone(),
            }));
        }
        due
    }

    /// Reports made before `now`, oldest first.
    fn due(&mut self, now: i64) -> Vec<Report> {
        let mut out = Vec::new();
        while self.waiting.peek().is_some_and(|Reverse(r)| r.reported_at < now) {
            out.push(self.waiting.pop().expect("peeked").0);
        }
        out
    }

    /// Every report still waiting (the stream ended), oldest first.
    pub fn rest(&mut self) -> Vec<Report> {
        self.due(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{FraudModel, SimConfig, Simulator};

    #[test]
    fn every_fraud_is_reported_once_after_it_in_report_order() {
        let config = SimConfig { seed: 5, customers: 300, fraud: FraudModel::Handbook, ..SimConfig::default() };
        let stream: Vec<Transaction> = Simulator::new(config).take(40_000).collect();
        let mut reporter = Reporter::new(5);
        let mut reports = Vec::new();
        for t in &stream {
            for r in reporter.observe(t) {
                assert!(r.reported_at < t.unix_time.unwrap(), "sent before a later transaction only");
                reports.push(r);
            }
        }
        reports.extend(reporter.rest());
        let frauds: Vec<&Transaction> = stream.iter().filter(|t| t.is_fraud == Some(1)).collect();
        assert!(frauds.len() > 100, "{} frauds", frauds.len());
        assert_eq!(reports.len(), frauds.len());
        assert!(reports.windows(2).all(|w| w[0].reported_at <= w[1].reported_at), "in report order");
        let made: std::collections::HashMap<&str, i64> =
            frauds.iter().map(|t| (t.trans_num.as_str(), t.unix_time.unwrap())).collect();
        let delays: Vec<i64> = reports.iter().map(|r| r.reported_at - made[r.trans_num.as_str()]).collect();
        assert!(delays.iter().all(|d| (HOUR..20 * DAY).contains(d)));
        let within_a_week = delays.iter().filter(|d| **d < 6 * DAY).count() as f64 / delays.len() as f64;
        assert!((0.65..0.85).contains(&within_a_week), "{within_a_week}");
    }
}
