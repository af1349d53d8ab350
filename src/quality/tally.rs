//! A part of a day's scores as live quality keeps it in Cassandra: per
//! model version, the confusion counts at its threshold (exact) and the
//! frauds and genuine transactions per fine score bin ([`super::bins`]).
//! Tallies add and subtract exactly, so a day's tally is kept as the sum of
//! its minutes' and a minute counted again replaces what it added
//! (docs/architecture.md, "Model quality"). Stored as a protobuf message
//! (prost): about 11 bytes a bin in use.

use std::collections::{BTreeMap, HashMap};

use super::bins::Histogram;
use super::measure::{psi_of_counts, Confusion, Measures, Reference};
use super::VersionInfo;

/// One version's counts over some transactions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub histogram: Histogram,
    pub confusion: Confusion,
}

/// A tally as stored: bins in ascending order, their keys as steps from
/// the previous one (small numbers, short varints).
#[derive(Clone, PartialEq, prost::Message)]
struct Stored {
    #[prost(uint32, repeated, tag = "1")]
    key_steps: Vec<u32>,
    #[prost(uint64, repeated, tag = "2")]
    frauds: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    genuine: Vec<u64>,
    #[prost(float, repeated, tag = "4")]
    low: Vec<f32>,
    #[prost(float, repeated, tag = "5")]
    high: Vec<f32>,
    #[prost(uint64, tag = "6")]
    tp: u64,
    #[prost(uint64, tag = "7")]
    fp: u64,
    #[prost(uint64, tag = "8")]
    tn: u64,
    #[prost(uint64, tag = "9")]
    fn_: u64,
}

impl Tally {
    /// Counts one scored transaction.
    pub fn add(&mut self, score: f32, predicted: bool, fraud: bool) {
        self.histogram.add(score, fraud);
        let c = &mut self.confusion;
        match (predicted, fraud) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, false) => c.tn += 1,
            (false, true) => c.fn_ += 1,
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.histogram.merge(&other.histogram);
        let (c, o) = (&mut self.confusion, &other.confusion);
        (c.tp, c.fp, c.tn, c.fn_) = (c.tp + o.tp, c.fp + o.fp, c.tn + o.tn, c.fn_ + o.fn_);
    }

    /// Takes out what `other` added (it was counted into this one before).
    pub fn subtract(&mut self, other: &Tally) {
        self.histogram.subtract(&other.histogram);
        let (c, o) = (&mut self.confusion, &other.confusion);
        c.tp = c.tp.saturating_sub(o.tp);
        c.fp = c.fp.saturating_sub(o.fp);
        c.tn = c.tn.saturating_sub(o.tn);
        c.fn_ = c.fn_.saturating_sub(o.fn_);
    }

    pub fn transactions(&self) -> u64 {
        let c = &self.confusion;
        c.tp + c.fp + c.tn + c.fn_
    }

    /// The day's measures from these counts: confusion, precision and recall
    /// exact; AP and ROC AUC from the bins with their error bounds; the PSI
    /// with each bin counted where its lowest score falls.
    pub fn measures(&self, reference: Option<&Reference>) -> Measures {
        let c = self.confusion;
        let (transactions, frauds) = (self.transactions(), c.tp + c.fn_);
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let ap = self.histogram.average_precision();
        let auc = self.histogram.roc_auc();
        let score_psi = reference.filter(|_| transactions > 0).map(|r| {
            let mut counts = vec![0u64; r.score_shares.len()];
            for (_, f, g, low, _) in self.histogram.bins() {
                counts[r.bin(f64::from(low))] += f + g;
            }
            psi_of_counts(&counts, r)
        });
        Measures {
            transactions,
            frauds,
            confusion: c,
            precision: ratio(c.tp, c.tp + c.fp),
            recall: ratio(c.tp, frauds),
            average_precision: ap.map(|e| e.value),
            average_precision_error: ap.map(|e| e.error),
            roc_auc: auc.map(|e| e.value),
            roc_auc_error: auc.map(|e| e.error),
            fraud_rate: ratio(frauds, transactions).unwrap_or(0.0),
            score_psi,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        let mut stored = Stored {
            tp: self.confusion.tp,
            fp: self.confusion.fp,
            tn: self.confusion.tn,
            fn_: self.confusion.fn_,
            ..Stored::default()
        };
        let mut previous = 0;
        for (key, frauds, genuine, low, high) in self.histogram.bins() {
            stored.key_steps.push(key - previous);
            previous = key;
            stored.frauds.push(frauds);
            stored.genuine.push(genuine);
            stored.low.push(low);
            stored.high.push(high);
        }
        stored.encode_to_vec()
    }

    /// A stored tally; an error names what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        use prost::Message;
        let s = Stored::decode(bytes).map_err(|e| format!("a stored quality tally does not decode: {e}"))?;
        let n = s.key_steps.len();
        if [s.frauds.len(), s.genuine.len(), s.low.len(), s.high.len()].iter().any(|&len| len != n) {
            return Err("a stored quality tally has columns of different lengths".into());
        }
        let mut key = 0u32;
        let mut bins = Vec::with_capacity(n);
        for i in 0..n {
            key = key.checked_add(s.key_steps[i]).ok_or("a stored quality tally's bins overflow")?;
            bins.push((key, s.frauds[i], s.genuine[i], s.low[i], s.high[i]));
        }
        Ok(Self {
            histogram: Histogram::from_bins(bins),
            confusion: Confusion { tp: s.tp, fp: s.fp, tn: s.tn, fn_: s.fn_ },
        })
    }
}

/// One stored score row as a tally counts it.
pub struct Scored<'a> {
    pub model_version: &'a str,
    pub fraud_score: f32,
    pub predicted: bool,
    pub shadow: Option<(&'a str, f32)>,
    pub fraud: bool,
}

/// Counts a row into the tallies of its champion and its shadow (whose
/// verdict is its score at its own threshold, 0.5 for a version unknown).
pub fn count(tallies: &mut BTreeMap<String, Tally>, row: Scored<'_>, versions: &HashMap<String, VersionInfo>) {
    let mut add = |version: &str, score: f32, predicted: bool| match tallies.get_mut(version) {
        Some(t) => t.add(score, predicted, row.fraud),
        None => tallies.entry(version.to_string()).or_default().add(score, predicted, row.fraud),
    };
    add(row.model_version, row.fraud_score, row.predicted);
    if let Some((version, score)) = row.shadow {
        let threshold = versions.get(version).map_or(0.5, |v| v.threshold);
        add(version, score, f64::from(score) >= threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::super::measure::{measure, Judged};
    use super::*;

    fn tally(rows: &[(f32, bool)]) -> Tally {
        let mut t = Tally::default();
        for &(score, fraud) in rows {
            t.add(score, score >= 0.5, fraud);
        }
        t
    }

    #[test]
    fn a_stored_tally_reads_back_equal_and_garbage_is_named() {
        let t = tally(&[(0.9, true), (0.1, false), (0.1, false), (0.0004, false), (0.97, false)]);
        let bytes = t.encode();
        assert_eq!(Tally::decode(&bytes).unwrap(), t);
        assert_eq!(Tally::decode(&Tally::default().encode()).unwrap(), Tally::default());
        assert!(Tally::decode(&[0xff, 0xff, 0xff]).unwrap_err().contains("does not decode"));
    }

    #[test]
    fn a_minute_counted_again_replaces_what_it_added() {
        let (a, b) = (tally(&[(0.9, true), (0.2, false)]), tally(&[(0.7, false), (0.3, true)]));
        let mut day = a.clone();
        day.merge(&b);
        // b's minute got a label: its new tally replaces the old one.
        let b2 = tally(&[(0.7, true), (0.3, true)]);
        day.subtract(&b);
        day.merge(&b2);
        let mut expected = a.clone();
        expected.merge(&b2);
        assert_eq!(day.confusion, expected.confusion);
        assert_eq!(day.histogram.frauds(), 3);
        assert_eq!(day.measures(None), expected.measures(None));
    }

    #[test]
    fn measures_of_a_tally_are_the_exact_ones_within_their_error() {
        let rows: Vec<(f32, bool)> =
            (0..5_000).map(|i| ((i as f32 * 0.618_034).fract(), i % 37 == 0 || (i % 7 == 0 && i % 3 == 0))).collect();
        let exact = measure(
            &rows.iter().map(|&(score, fraud)| Judged { score, predicted: score >= 0.5, fraud }).collect::<Vec<_>>(),
            None,
        );
        let m = tally(&rows).measures(None);
        assert_eq!((m.transactions, m.frauds, m.confusion), (exact.transactions, exact.frauds, exact.confusion));
        let (ap, ap_err) = (m.average_precision.unwrap(), m.average_precision_error.unwrap());
        assert!((ap - exact.average_precision.unwrap()).abs() <= ap_err + 1e-12);
        let (auc, auc_err) = (m.roc_auc.unwrap(), m.roc_auc_error.unwrap());
        assert!((auc - exact.roc_auc.unwrap()).abs() <= auc_err + 1e-12);
    }
}
