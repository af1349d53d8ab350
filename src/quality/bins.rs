//! A day's scores as counts of frauds and genuine transactions in fine
//! score bins: what live quality can keep, add to and combine across
//! instances in bounded memory, whatever the day's volume
//! (docs/architecture.md, "Model quality"). Average precision and ROC AUC
//! are computed from the counts, each with an error bound that holds for
//! any order of the scores inside a bin, so the exact values (scikit-learn's,
//! [`super::measure`]) are within the stated error.
//!
//! A bin is 2^-11 of a score's distance to the nearer end, 0 or 1 (the top
//! bits of that distance as an `f32`): fine where fraud models put most
//! transactions, near 0, and where they put the frauds, near 1. Scores
//! that are equal fall in one bin, so ties stay ties, as scikit-learn
//! treats them; a bin remembers its lowest and highest score, and one that
//! held a single score (tree models repeat scores) adds no error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Mantissa bits dropped from the distance to the nearer end (23 - 11).
const DROPPED_BITS: u32 = 12;

/// The bin of a score, ascending with the score (NaN counts as 0).
pub fn bin(score: f32) -> u32 {
    let s = if score.is_nan() { 0.0 } else { score.clamp(0.0, 1.0) };
    if s < 0.5 {
        s.to_bits() >> DROPPED_BITS
    } else {
        // Above the low half's keys, descending with the distance to 1.
        let low_half_end = 0.5f32.to_bits() >> DROPPED_BITS;
        2 * low_half_end - ((1.0 - s).to_bits() >> DROPPED_BITS)
    }
}

/// Frauds and genuine transactions per score bin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    bins: BTreeMap<u32, Bin>,
}

/// One bin's counts and the range of scores it was given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Bin {
    frauds: u64,
    genuine: u64,
    low: f32,
    high: f32,
}

impl Bin {
    /// Its scores were all one score: its order inside is the exact one.
    fn one_score(&self) -> bool {
        self.low == self.high
    }
}

/// A measure from binned counts and how far the exact one can be from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    /// The exact value (any order of the scores inside each bin) is within
    /// `value +- error`.
    pub error: f64,
}

impl Histogram {
    pub fn add(&mut self, score: f32, fraud: bool) {
        let s = if score.is_nan() { 0.0 } else { score.clamp(0.0, 1.0) };
        let entry = self.bins.entry(bin(s)).or_insert(Bin { frauds: 0, genuine: 0, low: s, high: s });
        (entry.low, entry.high) = (entry.low.min(s), entry.high.max(s));
        if fraud {
            entry.frauds += 1;
        } else {
            entry.genuine += 1;
        }
    }

    /// Takes one transaction out (a label moved it to the other class; its
    /// bin's score range stays, which only widens the bound).
    pub fn remove(&mut self, score: f32, fraud: bool) {
        let key = bin(score);
        let Some(entry) = self.bins.get_mut(&key) else { return };
        let side = if fraud { &mut entry.frauds } else { &mut entry.genuine };
        *side = side.saturating_sub(1);
        if entry.frauds == 0 && entry.genuine == 0 {
            self.bins.remove(&key);
        }
    }

    /// Adds another histogram's counts (another instance's, another part of
    /// the day): counts add exactly.
    pub fn merge(&mut self, other: &Histogram) {
        for (&key, b) in &other.bins {
            let entry = self.bins.entry(key).or_insert(Bin { frauds: 0, genuine: 0, low: b.low, high: b.high });
            entry.frauds += b.frauds;
            entry.genuine += b.genuine;
            (entry.low, entry.high) = (entry.low.min(b.low), entry.high.max(b.high));
        }
    }

    /// Takes another histogram's counts out (a part of the day counted
    /// before, now counted again): the inverse of [`Self::merge`] for the
    /// counts; score ranges stay as wide as they were, which only widens
    /// the bound.
    pub fn subtract(&mut self, other: &Histogram) {
        for (key, b) in &other.bins {
            let Some(entry) = self.bins.get_mut(key) else { continue };
            entry.frauds = entry.frauds.saturating_sub(b.frauds);
            entry.genuine = entry.genuine.saturating_sub(b.genuine);
            if entry.frauds == 0 && entry.genuine == 0 {
                self.bins.remove(key);
            }
        }
    }

    /// Every bin in ascending order: (key, frauds, genuine, lowest score,
    /// highest score), as [`Self::from_bins`] takes them back.
    pub fn bins(&self) -> impl Iterator<Item = (u32, u64, u64, f32, f32)> + '_ {
        self.bins.iter().map(|(&key, b)| (key, b.frauds, b.genuine, b.low, b.high))
    }

    /// A histogram from [`Self::bins`]; empty bins are left out.
    pub fn from_bins(bins: impl IntoIterator<Item = (u32, u64, u64, f32, f32)>) -> Self {
        Self {
            bins: bins
                .into_iter()
                .filter(|&(_, frauds, genuine, _, _)| frauds + genuine > 0)
                .map(|(key, frauds, genuine, low, high)| (key, Bin { frauds, genuine, low, high }))
                .collect(),
        }
    }

    pub fn frauds(&self) -> u64 {
        self.bins.values().map(|b| b.frauds).sum()
    }

    pub fn genuine(&self) -> u64 {
        self.bins.values().map(|b| b.genuine).sum()
    }

    /// Bins in use (the memory this histogram holds).
    pub fn len(&self) -> usize {
        self.bins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// Average precision with each bin one threshold (as scikit-learn
    /// treats equal scores). The error bound is the range a bin's frauds
    /// can add, whatever the scores inside it: at most, all of them tied
    /// ahead of its genuine transactions; at least, all behind them, each
    /// at a score of its own. None without frauds.
    pub fn average_precision(&self) -> Option<Estimate> {
        let positives = self.frauds();
        if positives == 0 {
            return None;
        }
        let p = positives as f64;
        let (mut tp, mut seen) = (0u64, 0u64);
        let (mut value, mut low, mut high) = (0.0, 0.0, 0.0);
        for b in self.bins.values().rev() {
            let (frauds, genuine) = (b.frauds, b.genuine);
            if frauds > 0 {
                let (f, g) = (frauds as f64, genuine as f64);
                let at_end = f / p * ((tp + frauds) as f64 / (seen + frauds + genuine) as f64);
                value += at_end;
                if b.one_score() {
                    (low, high) = (low + at_end, high + at_end);
                } else {
                    // Tied ahead: each fraud at (tp + f) / (seen + f). Behind,
                    // apart: the k-th at (tp + k) / (seen + g + k), k = 1..f.
                    high += f * (tp as f64 + f) / (seen as f64 + f) / p;
                    low += precision_sum(tp as f64, seen as f64 + g, f) / p;
                }
            }
            tp += frauds;
            seen += frauds + genuine;
        }
        Some(Estimate { value, error: (high - value).max(value - low).max(0.0) })
    }

    /// ROC AUC, ties inside a bin counting half; a bin's frauds and genuine
    /// transactions in any order move it by at most half their pairs (none
    /// when the bin held one score). None unless both classes are present.
    pub fn roc_auc(&self) -> Option<Estimate> {
        let (positives, negatives) = (self.frauds() as f64, self.genuine() as f64);
        if positives == 0.0 || negatives == 0.0 {
            return None;
        }
        let (mut frauds_above, mut wins, mut tied) = (0.0, 0.0, 0.0);
        for b in self.bins.values().rev() {
            let (f, g) = (b.frauds as f64, b.genuine as f64);
            wins += g * (frauds_above + f / 2.0);
            if !b.one_score() {
                tied += f * g;
            }
            frauds_above += f;
        }
        let pairs = positives * negatives;
        Some(Estimate { value: wins / pairs, error: tied / (2.0 * pairs) })
    }
}

/// The sum over k = 1..f of (a + k) / (b + k), for b >= a >= 0:
/// f - (b - a) * (H(b + f) - H(b)), with H the harmonic numbers extended to
/// reals, so a bin of a million frauds costs what a bin of one does.
fn precision_sum(a: f64, b: f64, f: f64) -> f64 {
    f - (b - a) * (harmonic(b + f) - harmonic(b))
}

/// H(x) = digamma(x + 1) + Euler's constant: exact sums below 16, the
/// asymptotic series (error under 1e-12) above.
fn harmonic(x: f64) -> f64 {
    const EULER: f64 = 0.577_215_664_901_532_9;
    if x < 16.0 {
        // H(x) = H(x + 1) - 1 / (x + 1), stepping up to the series' range.
        let steps = (16.0 - x).ceil();
        let mut h = harmonic(x + steps);
        for i in (1..=steps as u32).rev() {
            h -= 1.0 / (x + f64::from(i));
        }
        return h;
    }
    let y = x + 1.0;
    let y2 = y * y;
    y.ln() - 1.0 / (2.0 * y) - 1.0 / (12.0 * y2) + 1.0 / (120.0 * y2 * y2) - 1.0 / (252.0 * y2 * y2 * y2) + EULER
}

#[cfg(test)]
mod tests {
    use super::super::measure::{measure, Judged};
    use super::*;

    /// A deterministic generator (no dependency for a test's noise).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `n` rows of a fraud model's scores: genuine ones near 0, frauds
    /// spread towards 1, a share of them rounded (trees repeat scores).
    fn day(n: usize, seed: u64) -> Vec<Judged> {
        let mut rng = Lcg(seed);
        (0..n)
            .map(|_| {
                let fraud = rng.next() < 0.01;
                let raw = if fraud { 1.0 - rng.next().powi(3) } else { rng.next().powi(6) };
                let score = if rng.next() < 0.3 { (raw * 1000.0).round() / 1000.0 } else { raw } as f32;
                Judged { score, predicted: score >= 0.5, fraud }
            })
            .collect()
    }

    fn binned(rows: &[Judged]) -> Histogram {
        let mut h = Histogram::default();
        for r in rows {
            h.add(r.score, r.fraud);
        }
        h
    }

    #[test]
    fn bins_ascend_with_the_score_and_keep_ties() {
        let scores = [0.0f32, 1e-9, 1e-6, 1e-3, 0.1, 0.4999, 0.5, 0.5001, 0.9, 0.999, 0.999_999, 1.0];
        let bins: Vec<u32> = scores.iter().map(|&s| bin(s)).collect();
        assert!(bins.windows(2).all(|w| w[0] < w[1]), "{bins:?}");
        assert_eq!(bin(0.25), bin(0.25));
        assert_eq!(bin(f32::NAN), bin(0.0));
        assert_eq!(bin(2.0), bin(1.0));
    }

    #[test]
    fn harmonic_numbers_are_exact_enough() {
        let mut h = 0.0;
        for n in 1..=2_000u32 {
            h += 1.0 / f64::from(n);
            assert!((harmonic(f64::from(n)) - h).abs() < 1e-11, "H({n})");
        }
        assert!(harmonic(0.0).abs() < 1e-12);
        // A bin's precisions, summed one by one.
        let direct: f64 = (1..=500).map(|k| (7.0 + f64::from(k)) / (40.0 + f64::from(k))).sum();
        assert!((precision_sum(7.0, 40.0, 500.0) - direct).abs() < 1e-9);
    }

    #[test]
    fn distinct_scores_in_distinct_bins_give_the_exact_measures() {
        // Scores far apart: every bin holds one score, the binned measures
        // are the exact ones (ties included) and the bounds are zero.
        let rows: Vec<Judged> = [(0.9, true), (0.8, false), (0.6, true), (0.3, true), (0.1, false), (0.1, false)]
            .iter()
            .map(|&(score, fraud)| Judged { score, predicted: score >= 0.5, fraud })
            .collect();
        let exact = measure(&rows, None);
        let h = binned(&rows);
        let (ap, auc) = (h.average_precision().unwrap(), h.roc_auc().unwrap());
        assert!((ap.value - exact.average_precision.unwrap()).abs() < 1e-12);
        assert!((auc.value - exact.roc_auc.unwrap()).abs() < 1e-12);
        assert_eq!(auc.error, 0.0, "no bin holds both classes");
    }

    #[test]
    fn a_million_rows_binned_are_within_the_stated_error_of_the_exact_measures() {
        let rows = day(1_000_000, 7);
        let exact = measure(&rows, None);
        let h = binned(&rows);
        assert_eq!((h.frauds(), h.genuine()), (exact.frauds, exact.transactions - exact.frauds));
        let (ap, auc) = (h.average_precision().unwrap(), h.roc_auc().unwrap());
        let (exact_ap, exact_auc) = (exact.average_precision.unwrap(), exact.roc_auc.unwrap());
        assert!((ap.value - exact_ap).abs() <= ap.error + 1e-12, "AP {} +- {} vs {exact_ap}", ap.value, ap.error);
        assert!(
            (auc.value - exact_auc).abs() <= auc.error + 1e-12,
            "AUC {} +- {} vs {exact_auc}",
            auc.value,
            auc.error
        );
        // And the error is small: what the docs state.
        assert!(ap.error < 1e-3 && auc.error < 1e-4, "AP +- {}, AUC +- {}", ap.error, auc.error);
        assert!(h.len() < 100_000, "{} bins", h.len());
    }

    #[test]
    fn parts_merge_exactly_and_labels_move_counts() {
        let rows = day(20_000, 11);
        let (first, second) = rows.split_at(7_000);
        let mut merged = binned(first);
        merged.merge(&binned(second));
        assert_eq!(merged, binned(&rows), "two instances' parts add up to the whole");
        // A fraud label on a row counted genuine moves it between classes.
        let moved = rows.iter().position(|r| !r.fraud).unwrap();
        let mut relabelled = rows.clone();
        relabelled[moved].fraud = true;
        merged.remove(rows[moved].score, false);
        merged.add(rows[moved].score, true);
        assert_eq!(merged, binned(&relabelled));
    }
}
