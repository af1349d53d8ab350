//! The measures of a model's quality over one day of scored transactions:
//! the confusion matrix at the model's threshold, precision, recall,
//! average precision and ROC AUC, and how far the day's scores drifted
//! from the training data's (population stability index). Pure functions.
//!
//! Average precision and ROC AUC are exact and treat equal scores as
//! scikit-learn does (`average_precision_score`, `roc_auc_score`), so the
//! live numbers compare with the ones `train.py` writes into `model.json`.

use serde::{Deserialize, Serialize};

/// Shares below this count as this in the PSI (an empty bin would make it
/// infinite).
const PSI_FLOOR: f64 = 1e-4;

/// One scored transaction of a day, as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    pub score: f32,
    /// The score was at or over the model's threshold.
    pub predicted: bool,
    /// Labelled fraud (a transaction without a fraud label counts as
    /// genuine, as in training).
    pub fraud: bool,
}

/// Counts at the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// The training data's score distribution and fraud rate (`model.json`
/// `reference`, written by `train.py` from its test split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Ascending bin edges: bin i holds scores in `[edges[i-1], edges[i])`,
    /// the first from 0, the last to 1.
    pub score_edges: Vec<f64>,
    /// The share of the training scores in each bin (`edges + 1` of them).
    pub score_shares: Vec<f64>,
    pub fraud_rate: f64,
}

impl Reference {
    /// Checks the shape `model.json` promised.
    pub fn validate(&self) -> Result<(), String> {
        if self.score_shares.len() != self.score_edges.len() + 1 {
            return Err(format!(
                "`reference.score_shares` has {} entries, expected {} (one more than `score_edges`)",
                self.score_shares.len(),
                self.score_edges.len() + 1
            ));
        }
        if self.score_edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err("`reference.score_edges` must be strictly ascending".into());
        }
        if !(0.0..=1.0).contains(&self.fraud_rate) {
            return Err(format!("`reference.fraud_rate` {} is outside [0, 1]", self.fraud_rate));
        }
        Ok(())
    }

    /// The bin a score falls in.
    pub(super) fn bin(&self, score: f64) -> usize {
        self.score_edges.partition_point(|&edge| edge <= score)
    }
}

/// A day's measures of one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    pub transactions: u64,
    pub frauds: u64,
    pub confusion: Confusion,
    /// None when nothing was predicted fraud.
    pub precision: Option<f64>,
    /// None when nothing is labelled fraud.
    pub recall: Option<f64>,
    pub average_precision: Option<f64>,
    /// How far the exact average precision can be from the one shown, when
    /// it was computed from binned counts (Cassandra's book,
    /// [`super::tally`]); None when exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_precision_error: Option<f64>,
    /// None unless there are frauds and genuine transactions both.
    pub roc_auc: Option<f64>,
    /// As `average_precision_error`, for ROC AUC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc_error: Option<f64>,
    pub fraud_rate: f64,
    /// Population stability index of the day's scores against the
    /// training scores; None without a reference.
    pub score_psi: Option<f64>,
    /// Card precision at `card_precision_k` ([`super::cards`]): of the k
    /// cards with the highest scores, the share fraudulent. None without
    /// cards, or for a day partly stored by an earlier release (no cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_precision: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_precision_k: Option<u32>,
    /// More cards tied at the k-th place than a top keeps: the share the
    /// tied ones get is estimated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub card_precision_estimated: bool,
}

impl Measures {
    /// Sets the card precision.
    pub fn with_cards(mut self, cards: Option<super::cards::CardPrecision>) -> Self {
        self.card_precision = cards.map(|c| c.value);
        self.card_precision_k = cards.map(|c| c.k);
        self.card_precision_estimated = cards.is_some_and(|c| c.estimated);
        self
    }
}

/// Measures a day's transactions.
pub fn measure(rows: &[Judged], reference: Option<&Reference>) -> Measures {
    let mut confusion = Confusion::default();
    for r in rows {
        match (r.predicted, r.fraud) {
            (true, true) => confusion.tp += 1,
            (true, false) => confusion.fp += 1,
            (false, false) => confusion.tn += 1,
            (false, true) => confusion.fn_ += 1,
        }
    }
    let frauds = confusion.tp + confusion.fn_;
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let mut sorted: Vec<(f32, bool)> = rows.iter().map(|r| (r.score, r.fraud)).collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    Measures {
        transactions: rows.len() as u64,
        frauds,
        confusion,
        precision: ratio(confusion.tp, confusion.tp + confusion.fp),
        recall: ratio(confusion.tp, frauds),
        average_precision: average_precision(&sorted),
        average_precision_error: None,
        roc_auc: roc_auc(&sorted),
        roc_auc_error: None,
        fraud_rate: ratio(frauds, rows.len() as u64).unwrap_or(0.0),
        score_psi: reference.filter(|_| !rows.is_empty()).map(|r| psi(rows, r)),
        card_precision: None,
        card_precision_k: None,
        card_precision_estimated: false,
    }
}

/// Average precision over (score, fraud) sorted by descending score:
/// the sum over each distinct score of the recall it adds times the
/// precision at it. None without frauds.
fn average_precision(sorted: &[(f32, bool)]) -> Option<f64> {
    let positives = sorted.iter().filter(|r| r.1).count();
    if positives == 0 {
        return None;
    }
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0);
    for group in sorted.chunk_by(|a, b| a.0 == b.0) {
        let added = group.iter().filter(|r| r.1).count();
        tp += added;
        seen += group.len();
        ap += added as f64 / positives as f64 * (tp as f64 / seen as f64);
    }
    Some(ap)
}

/// ROC AUC as the Mann–Whitney statistic: the chance that a fraud scores
/// over a genuine transaction, ties counting half. None unless both
/// classes are present.
fn roc_auc(sorted: &[(f32, bool)]) -> Option<f64> {
    let positives = sorted.iter().filter(|r| r.1).count() as f64;
    let negatives = sorted.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Walking from the highest score: each genuine transaction is beaten by
    // the frauds above it, and ties with the frauds of its own score.
    let (mut frauds_above, mut wins) = (0.0, 0.0);
    for group in sorted.chunk_by(|a, b| a.0 == b.0) {
        let frauds = group.iter().filter(|r| r.1).count() as f64;
        let genuine = group.len() as f64 - frauds;
        wins += genuine * (frauds_above + frauds / 2.0);
        frauds_above += frauds;
    }
    Some(wins / (positives * negatives))
}

/// Population stability index: the sum over bins of
/// `(actual - expected) * ln(actual / expected)`, shares floored at
/// [`PSI_FLOOR`]. Under 0.1 is usually read as stable, over 0.2 as a
/// shift worth a look.
fn psi(rows: &[Judged], reference: &Reference) -> f64 {
    let mut counts = vec![0u64; reference.score_shares.len()];
    for r in rows {
        counts[reference.bin(r.score as f64)] += 1;
    }
    psi_of_counts(&counts, reference)
}

/// The PSI of scores counted per reference bin (`counts` has one entry per
/// `reference.score_shares`).
pub(super) fn psi_of_counts(counts: &[u64], reference: &Reference) -> f64 {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(&reference.score_shares)
        .map(|(&count, &expected)| {
            let actual = (count as f64 / total as f64).max(PSI_FLOOR);
            let expected = expected.max(PSI_FLOOR);
            (actual - expected) * (actual / expected).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(rows: &[(f32, bool)], threshold: f32) -> Vec<Judged> {
        rows.iter().map(|&(score, fraud)| Judged { score, predicted: score >= threshold, fraud }).collect()
    }

    #[test]
    fn confusion_precision_and_recall_count_at_the_threshold() {
        let rows = judged(&[(0.9, true), (0.8, false), (0.6, true), (0.3, true), (0.1, false), (0.05, false)], 0.5);
        let m = measure(&rows, None);
        assert_eq!(m.confusion, Confusion { tp: 2, fp: 1, tn: 2, fn_: 1 });
        assert_eq!(m.precision, Some(2.0 / 3.0));
        assert_eq!(m.recall, Some(2.0 / 3.0));
        assert_eq!(m.frauds, 3);
        assert_eq!(m.fraud_rate, 0.5);
    }

    #[test]
    fn average_precision_and_auc_match_scikit_learn() {
        // sklearn: average_precision_score([1,0,1,1,0,0], [.9,.8,.6,.3,.1,.05])
        // = 1/3 * (1 + 2/3 + 3/4) = 0.80555..., roc_auc_score = 7/9.
        let rows = judged(&[(0.9, true), (0.8, false), (0.6, true), (0.3, true), (0.1, false), (0.05, false)], 0.5);
        let m = measure(&rows, None);
        assert!((m.average_precision.unwrap() - (1.0 + 2.0 / 3.0 + 0.75) / 3.0).abs() < 1e-12);
        assert!((m.roc_auc.unwrap() - 7.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn ties_are_one_threshold() {
        // All four at one score: AP = the fraud rate, AUC = 0.5 (sklearn).
        let rows = judged(&[(0.4, true), (0.4, false), (0.4, false), (0.4, false)], 0.5);
        let m = measure(&rows, None);
        assert_eq!(m.average_precision, Some(0.25));
        assert_eq!(m.roc_auc, Some(0.5));
        // A fraud tied with one genuine above another genuine: AUC = (0.5 + 1) / 2.
        let rows = judged(&[(0.7, true), (0.7, false), (0.2, false)], 0.5);
        assert_eq!(measure(&rows, None).roc_auc, Some(0.75));
    }

    #[test]
    fn undefined_measures_are_none_not_zero() {
        let genuine = judged(&[(0.9, false), (0.1, false)], 0.5);
        let m = measure(&genuine, None);
        assert_eq!((m.recall, m.average_precision, m.roc_auc), (None, None, None));
        assert_eq!(m.precision, Some(0.0));
        let quiet = judged(&[(0.1, true), (0.2, false)], 0.5);
        assert_eq!(measure(&quiet, None).precision, None);
        assert_eq!(measure(&[], None).fraud_rate, 0.0);
    }

    #[test]
    fn psi_is_zero_on_the_reference_and_grows_with_a_shift() {
        let reference = Reference { score_edges: vec![0.1, 0.5], score_shares: vec![0.5, 0.3, 0.2], fraud_rate: 0.01 };
        reference.validate().unwrap();
        let same: Vec<(f32, bool)> =
            [(0.05, 5), (0.3, 3), (0.7, 2)].iter().flat_map(|&(s, n)| std::iter::repeat_n((s, false), n)).collect();
        let m = measure(&judged(&same, 0.5), Some(&reference));
        assert!(m.score_psi.unwrap().abs() < 1e-12);
        // Half of the low scores move to the top bin.
        let shifted: Vec<(f32, bool)> =
            [(0.05, 25), (0.3, 30), (0.7, 45)].iter().flat_map(|&(s, n)| std::iter::repeat_n((s, false), n)).collect();
        let psi = measure(&judged(&shifted, 0.5), Some(&reference)).score_psi.unwrap();
        let expected = (0.25 - 0.5) * (0.25f64 / 0.5).ln() + (0.45 - 0.2) * (0.45f64 / 0.2).ln();
        assert!((psi - expected).abs() < 1e-12, "{psi} vs {expected}");
        assert!(psi > 0.2);
    }

    #[test]
    fn a_malformed_reference_is_named() {
        let r = Reference { score_edges: vec![0.5, 0.1], score_shares: vec![0.3, 0.3, 0.4], fraud_rate: 0.1 };
        assert!(r.validate().unwrap_err().contains("ascending"));
        let r = Reference { score_edges: vec![0.5], score_shares: vec![1.0], fraud_rate: 0.1 };
        assert!(r.validate().unwrap_err().contains("score_shares"));
    }
}
