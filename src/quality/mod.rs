//! Live model quality: how good the predictions of each model version
//! were, day by day, judged by the labels that came back
//! (docs/architecture.md, "Model quality").
//!
//! Every stored outcome leaves a [`ScoreRow`] (its day and minute, its
//! card, the champion's version, score and verdict, the shadow's score,
//! and later its label) in a book: Cassandra `quality_rows` with `serve`,
//! [`book::MemoryBook`] in the demo. A row is keyed by `trans_num`, so a
//! redelivery changes nothing and every instance adds to the same book.
//! Periodically the days that changed are measured again, per version: the
//! memory book from its rows ([`measure`], [`cards`]), Cassandra's from the
//! tallies of the minutes that changed ([`tally`], counted by the store);
//! the results ([`DayQuality`]: confusion, precision, recall, AP, ROC AUC,
//! card precision at k, drift) are saved (Cassandra `model_quality`) for
//! `/api/summary`, `/metrics`, the dashboards and `model-quality`; any
//! instance shows the same numbers.
//!
//! A transaction counts as fraud when a fraud label came for it and as
//! genuine otherwise, as in training; a day's numbers are `complete` once
//! the label delay (7 days) has passed after it, provisional before.

pub mod bins;
pub mod book;
pub mod cards;
pub mod measure;
pub mod tally;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::config::QualityConfig;
use crate::record::column;
use crate::score::outcome;
use measure::{Judged, Measures, Reference};

const DAY: i64 = 86_400;
/// Rounds between two looks at every day of the window for changes no
/// instance counted.
pub const SWEEP_EVERY: u64 = 10;

/// One stored outcome, as quality keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    pub trans_num: String,
    pub cc_num: String,
    /// Unix day of the transaction (UTC).
    pub day: i64,
    /// Minute of that day (0-1439): the part of the day Cassandra's book
    /// keeps and counts it in.
    pub minute: i32,
    pub model_version: String,
    pub fraud_score: f32,
    pub predicted: bool,
    pub shadow: Option<(String, f32)>,
    /// The newest label: (fraud, reported at, Unix s).
    pub label: Option<(bool, i64)>,
}

/// A label for a stored outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct RowLabel {
    pub trans_num: String,
    /// The transaction's card: card precision finds a card's frauds of a
    /// day by it.
    pub cc_num: String,
    pub day: i64,
    /// Minute of the day of the transaction (as [`ScoreRow::minute`]).
    pub minute: i32,
    pub is_fraud: bool,
    pub reported_at: i64,
}

/// The book's view of labels now current for their outcomes.
pub fn row_labels(current: &[crate::history::Settled]) -> Vec<RowLabel> {
    current
        .iter()
        .map(|c| RowLabel {
            trans_num: c.label.trans_num.clone(),
            cc_num: c.label.cc_num.clone(),
            day: c.unix_time.div_euclid(86_400),
            minute: day_and_minute(c.unix_time).1,
            is_fraud: c.label.is_fraud,
            reported_at: c.label.reported_at.unwrap_or_default(),
        })
        .collect()
}

/// The rows of a batch of outcomes, and the labels some of them came with
/// (a label that arrived before its transaction).
pub fn rows_of(outcomes: &RecordBatch) -> (Vec<ScoreRow>, Vec<RowLabel>) {
    let text = |name: &str| outcomes.column_by_name(name).expect("outcome column").as_string::<i32>().clone();
    let (trans_num, cc_num, version, shadow_version) =
        (text(column::trans_num), text(column::cc_num), text(outcome::MODEL_VERSION), text(outcome::SHADOW_VERSION));
    let int = |name: &str| outcomes.column_by_name(name).expect("outcome column").as_primitive::<Int64Type>().clone();
    let (unix_time, is_fraud, reported) =
        (int(column::unix_time), int(column::is_fraud), int(outcome::LABEL_REPORTED_AT));
    let float =
        |name: &str| outcomes.column_by_name(name).expect("outcome column").as_primitive::<Float32Type>().clone();
    let (score, shadow_score) = (float(outcome::FRAUD_SCORE), float(outcome::SHADOW_SCORE));
    let predicted = outcomes.column_by_name(outcome::IS_FRAUD_PREDICTED).expect("outcome column").as_boolean().clone();
    let mut rows = Vec::with_capacity(outcomes.num_rows());
    let mut labels = Vec::new();
    for i in 0..outcomes.num_rows() {
        let (day, minute) = day_and_minute(unix_time.value(i));
        let label = (reported.is_valid(i) && is_fraud.is_valid(i)).then(|| (is_fraud.value(i) == 1, reported.value(i)));
        if let Some((fraud, at)) = label {
            labels.push(RowLabel {
                trans_num: trans_num.value(i).into(),
                cc_num: cc_num.value(i).into(),
                day,
                minute,
                is_fraud: fraud,
                reported_at: at,
            });
        }
        rows.push(ScoreRow {
            trans_num: trans_num.value(i).into(),
            cc_num: cc_num.value(i).into(),
            day,
            minute,
            model_version: version.value(i).into(),
            fraud_score: score.value(i),
            predicted: predicted.value(i),
            shadow: (shadow_version.is_valid(i) && shadow_score.is_valid(i))
                .then(|| (shadow_version.value(i).to_string(), shadow_score.value(i))),
            label,
        });
    }
    (rows, labels)
}

/// The Unix day (UTC) of a Unix time and the minute of that day.
pub fn day_and_minute(unix_time: i64) -> (i64, i32) {
    (unix_time.div_euclid(DAY), (unix_time.rem_euclid(DAY) / 60) as i32)
}

/// What quality needs to know of a model version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub threshold: f64,
    pub reference: Option<Reference>,
}

impl VersionInfo {
    /// From a `model.json`: the threshold and the training reference, if
    /// it has a valid one.
    pub fn of(meta: &crate::score::model::ModelMeta) -> Self {
        let reference = meta
            .extra
            .get("reference")
            .and_then(|r| serde_json::from_value::<Reference>(r.clone()).ok())
            .filter(|r| r.validate().is_ok());
        Self { threshold: meta.threshold, reference }
    }
}

/// Why a day's numbers look unlike the training data's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The day's labelled fraud rate over the training data's; None
    /// without a reference.
    pub fraud_rate_ratio: Option<f64>,
    /// What is over its limit (`quality.psi_limit`,
    /// `quality.fraud_rate_ratio_limit`); empty = nothing flagged. The
    /// fraud rate is judged only on complete days: before its labels are
    /// all in, a day's fraud rate is low by construction.
    pub flagged: Vec<String>,
    /// The fraud-rate finding, flagged once the day is complete.
    #[serde(default)]
    pub fraud_rate_flag: Option<String>,
    /// Set while a fraud-rate finding waits for the day to be complete.
    #[serde(default)]
    pub provisional: bool,
}

impl Drift {
    /// Flags the fraud-rate finding if the day is `complete`, else holds it
    /// back as provisional (score PSI needs no labels: flagged either way).
    pub fn judge(&mut self, complete: bool) {
        let held = self.fraud_rate_flag.clone();
        self.flagged.retain(|f| Some(f) != held.as_ref());
        if let (true, Some(flag)) = (complete, held) {
            self.flagged.push(flag);
        }
        self.provisional = !complete && self.fraud_rate_flag.is_some();
    }
}

/// One version's quality on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayQuality {
    pub version: String,
    /// Unix day.
    pub day: i64,
    /// "YYYY-MM-DD".
    pub date: String,
    #[serde(flatten)]
    pub measures: Measures,
    pub drift: Drift,
    /// The label delay has passed since the day: its numbers are final.
    #[serde(default)]
    pub complete: bool,
    pub computed_at_ms: i64,
}

/// Measures a day's rows, per version that scored them (as champion or as
/// shadow). A version `versions` does not know is measured without drift,
/// and its shadow verdicts at 0.5.
pub fn measure_day(
    day: i64,
    rows: &[ScoreRow],
    versions: &HashMap<String, VersionInfo>,
    config: &QualityConfig,
) -> Vec<DayQuality> {
    let mut judged: BTreeMap<&str, Vec<Judged>> = BTreeMap::new();
    let mut highest: HashMap<&str, HashMap<String, f32>> = HashMap::new();
    let day_rows = || rows.iter().filter(|r| r.day == day);
    for r in day_rows() {
        let fraud = r.label.is_some_and(|(f, _)| f);
        judged.entry(&r.model_version).or_default().push(Judged {
            score: r.fraud_score,
            predicted: r.predicted,
            fraud,
        });
        cards::note_highest(highest.entry(&r.model_version).or_default(), &r.cc_num, r.fraud_score);
        if let Some((version, score)) = &r.shadow {
            let threshold = versions.get(version).map_or(0.5, |v| v.threshold);
            let predicted = f64::from(*score) >= threshold;
            judged.entry(version).or_default().push(Judged { score: *score, predicted, fraud });
            cards::note_highest(highest.entry(version).or_default(), &r.cc_num, *score);
        }
    }
    // A card is fraudulent on the day when any of its transactions is, whichever version scored it.
    let fraud_cards: HashSet<&str> =
        day_rows().filter(|r| r.label.is_some_and(|(f, _)| f)).map(|r| r.cc_num.as_str()).collect();
    judged
        .into_iter()
        .map(|(version, rows)| {
            let reference = versions.get(version).and_then(|v| v.reference.as_ref());
            let top = cards::Top::of(config.card_k, highest.remove(version).unwrap_or_default());
            let measures = measure::measure(&rows, reference).with_cards(top.precision(|c| fraud_cards.contains(c)));
            day_quality(day, version, measures, reference, config)
        })
        .collect()
}

/// Measures a day from its tallies per version (Cassandra's book): the
/// same numbers as [`measure_day`], AP and ROC AUC within their stated
/// error; `fraud_cards`: the cards of the tallies' tops with a transaction
/// of the day labelled fraud. Versions with nothing counted are left out.
pub fn measure_tallies(
    day: i64,
    tallies: &BTreeMap<String, tally::Tally>,
    fraud_cards: &HashSet<String>,
    versions: &HashMap<String, VersionInfo>,
    config: &QualityConfig,
) -> Vec<DayQuality> {
    tallies
        .iter()
        .filter(|(_, t)| t.transactions() > 0)
        .map(|(version, t)| {
            let reference = versions.get(version).and_then(|v| v.reference.as_ref());
            let cards = match &t.cards {
                tally::Cards::Kept(top) => top.precision(|c| fraud_cards.contains(c)),
                tally::Cards::NotKept | tally::Cards::Unknown => None,
            };
            day_quality(day, version, t.measures(reference).with_cards(cards), reference, config)
        })
        .collect()
}

fn day_quality(
    day: i64,
    version: &str,
    measures: Measures,
    reference: Option<&Reference>,
    config: &QualityConfig,
) -> DayQuality {
    let drift = drift(&measures, reference, config);
    DayQuality {
        version: version.to_string(),
        day,
        date: date(day),
        measures,
        drift,
        complete: false,
        computed_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

fn drift(m: &Measures, reference: Option<&Reference>, config: &QualityConfig) -> Drift {
    let fraud_rate_ratio = reference.filter(|r| r.fraud_rate > 0.0).map(|r| m.fraud_rate / r.fraud_rate);
    let mut flagged = Vec::new();
    if let Some(psi) = m.score_psi.filter(|&p| p > config.psi_limit) {
        flagged.push(format!("score PSI {psi:.3} over {}", config.psi_limit));
    }
    let limit = config.fraud_rate_ratio_limit;
    let fraud_rate_flag = fraud_rate_ratio
        .filter(|ratio| *ratio > limit || *ratio < 1.0 / limit)
        .map(|ratio| format!("fraud rate {ratio:.2} x the training data's (limit {limit} x either way)"));
    // Provisional until `judge` knows the day is complete.
    let mut drift = Drift { fraud_rate_ratio, flagged, fraud_rate_flag, provisional: false };
    drift.judge(false);
    drift
}

/// "YYYY-MM-DD" of a Unix day.
pub fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * DAY, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// What the service shows of its models' quality.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Every measured (version, day) of the window, oldest day first.
    pub days: Vec<DayQuality>,
    /// Per version, its newest measured day.
    pub latest: Vec<DayQuality>,
    /// Versions whose newest day is flagged for drift.
    pub drifting: Vec<String>,
    /// The newest retraining decisions (spark-job/retrain.py), newest first.
    pub decisions: Vec<serde_json::Value>,
}

/// The live state of quality: which days changed since they were last
/// measured, the newest day seen, the numbers shown, and the book when it
/// is kept in memory.
pub struct Quality {
    config: QualityConfig,
    label_delay_days: i64,
    touched: Mutex<BTreeSet<i64>>,
    rounds: std::sync::atomic::AtomicU64,
    newest_day: AtomicI64,
    shown: RwLock<Vec<DayQuality>>,
    decisions: RwLock<Vec<serde_json::Value>>,
    memory: Option<book::MemoryBook>,
}

impl Quality {
    /// Quality whose book is elsewhere (Cassandra).
    pub fn stored(config: QualityConfig, label_delay_days: i64) -> Self {
        Self::with(config, label_delay_days, None)
    }

    /// Quality keeping its book in memory (the demo, `serve` without
    /// Cassandra).
    pub fn in_memory(config: QualityConfig, label_delay_days: i64) -> Self {
        let book = book::MemoryBook::new(config.days, config.max_memory_rows);
        Self::with(config, label_delay_days, Some(book))
    }

    fn with(config: QualityConfig, label_delay_days: i64, memory: Option<book::MemoryBook>) -> Self {
        Self {
            config,
            label_delay_days,
            touched: Mutex::default(),
            rounds: Default::default(),
            newest_day: AtomicI64::new(i64::MIN),
            shown: RwLock::default(),
            decisions: RwLock::default(),
            memory,
        }
    }

    pub fn config(&self) -> &QualityConfig {
        &self.config
    }

    /// The memory book's rows held and rows not kept, when quality keeps one.
    pub fn book_stats(&self) -> Option<(usize, u64)> {
        self.memory.as_ref().map(book::MemoryBook::stats)
    }

    /// The memory book, when quality keeps one.
    pub fn memory(&self) -> Option<&book::MemoryBook> {
        self.memory.as_ref()
    }

    /// Notes a stored batch of outcomes: the memory book keeps its rows;
    /// with the book in Cassandra (written by the sink) only its days are
    /// noted, which costs no allocation per row on the hot path.
    pub fn recorded_batch(&self, outcomes: &RecordBatch) {
        match &self.memory {
            Some(_) => {
                let (rows, labels) = rows_of(outcomes);
                self.recorded(rows, &labels);
            }
            None => {
                let unix_time = outcomes.column_by_name(column::unix_time).expect("outcome column");
                let mut days = BTreeSet::new();
                let mut last = None;
                for t in unix_time.as_primitive::<Int64Type>().values() {
                    let day = t.div_euclid(DAY);
                    if last != Some(day) {
                        days.insert(day);
                        last = Some(day);
                    }
                }
                self.touch(days);
            }
        }
    }

    /// Notes outcomes stored (and kept in the memory book, if any).
    pub fn recorded(&self, rows: Vec<ScoreRow>, labels: &[RowLabel]) {
        let days: BTreeSet<i64> = rows.iter().map(|r| r.day).collect();
        if let Some(book) = &self.memory {
            book.record(rows);
            book.label(labels);
        }
        self.touch(days);
    }

    /// Notes labels applied to stored outcomes.
    pub fn labelled(&self, labels: &[RowLabel]) {
        if let Some(book) = &self.memory {
            book.label(labels);
        }
        self.touch(labels.iter().map(|l| l.day).collect());
    }

    fn touch(&self, days: BTreeSet<i64>) {
        if let Some(&newest) = days.last() {
            self.newest_day.fetch_max(newest, Ordering::Relaxed);
            self.touched.lock().expect("touched lock").extend(days);
        }
    }

    /// The newest day this instance has seen (None before any).
    pub fn newest_day(&self) -> Option<i64> {
        Some(self.newest_day.load(Ordering::Relaxed)).filter(|&d| d != i64::MIN)
    }

    /// The days changed since the last call that are inside the window.
    pub fn take_touched(&self) -> Vec<i64> {
        let days = std::mem::take(&mut *self.touched.lock().expect("touched lock"));
        let oldest = self.newest_day().map_or(i64::MIN, |d| d - self.config.days as i64 + 1);
        days.into_iter().filter(|&d| d >= oldest).collect()
    }

    /// The days to count again this round (Cassandra's book): those changed
    /// here, and every [`SWEEP_EVERY`] rounds (the second round first) every
    /// day of the window, for minutes other instances changed and did not
    /// count (one stopped before its next round).
    pub fn days_to_count(&self) -> Vec<i64> {
        let mut days: BTreeSet<i64> = self.take_touched().into_iter().collect();
        if self.rounds.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == 1 {
            if let Some(newest) = self.newest_day() {
                days.extend(newest - self.config.days as i64 + 1..=newest);
            }
        }
        days.into_iter().collect()
    }

    /// Marks days to measure again (their measuring failed).
    pub fn retry(&self, days: impl IntoIterator<Item = i64>) {
        self.touched.lock().expect("touched lock").extend(days);
    }

    /// Replaces what is shown: every saved (version, day), newest days
    /// judged complete against the newest day known.
    pub fn show(&self, mut days: Vec<DayQuality>) {
        if let Some(newest) = days.iter().map(|d| d.day).max() {
            self.newest_day.fetch_max(newest, Ordering::Relaxed);
        }
        let newest = self.newest_day().unwrap_or(i64::MIN);
        for d in &mut days {
            d.complete = d.day + self.label_delay_days < newest;
            d.drift.judge(d.complete);
        }
        days.sort_by(|a, b| (a.day, &a.version).cmp(&(b.day, &b.version)));
        *self.shown.write().expect("shown lock") = days;
    }

    /// Marks measured days whose labels are all in (the label delay has
    /// passed since them, as of the newest day seen).
    pub fn mark_complete(&self, measured: &mut [DayQuality]) {
        let newest = self.newest_day().unwrap_or(i64::MIN);
        for d in measured {
            d.complete = d.day + self.label_delay_days < newest;
            d.drift.judge(d.complete);
        }
    }

    /// Measured days kept in memory (no store): replaces those of `day`.
    pub fn keep(&self, day: i64, measured: Vec<DayQuality>) {
        let mut shown = self.shown.read().expect("shown lock").clone();
        shown.retain(|d| d.day != day);
        shown.extend(measured);
        let oldest = self.newest_day().map_or(i64::MIN, |d| d - self.config.days as i64 + 1);
        shown.retain(|d| d.day >= oldest);
        self.show(shown);
    }

    /// Replaces the retraining decisions shown.
    pub fn show_decisions(&self, decisions: Vec<serde_json::Value>) {
        *self.decisions.write().expect("decisions lock") = decisions;
    }

    /// The numbers shown now.
    pub fn summary(&self) -> Summary {
        let days = self.shown.read().expect("shown lock").clone();
        let mut latest: BTreeMap<&str, &DayQuality> = BTreeMap::new();
        for d in &days {
            latest.insert(&d.version, d);
        }
        let latest: Vec<DayQuality> = latest.into_values().cloned().collect();
        // A version drifts when its newest day is flagged (score PSI) or its
        // newest complete day is (the fraud rate, once its labels are in).
        let mut latest_complete: BTreeMap<&str, &DayQuality> = BTreeMap::new();
        for d in days.iter().filter(|d| d.complete) {
            latest_complete.insert(&d.version, d);
        }
        let mut drifting: Vec<String> = latest
            .iter()
            .map(|d| (d.version.as_str(), d))
            .chain(latest_complete)
            .filter(|(_, d)| !d.drift.flagged.is_empty())
            .map(|(v, _)| v.to_string())
            .collect();
        drifting.sort();
        drifting.dedup();
        let decisions = self.decisions.read().expect("decisions lock").clone();
        Summary { days, latest, drifting, decisions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(trans: &str, day: i64, version: &str, score: f32, label: Option<bool>) -> ScoreRow {
        ScoreRow {
            trans_num: trans.into(),
            cc_num: format!("card-{trans}"),
            day,
            minute: 0,
            model_version: version.into(),
            fraud_score: score,
            predicted: score >= 0.5,
            shadow: Some(("challenger".into(), 1.0 - score)),
            label: label.map(|f| (f, 0)),
        }
    }

    #[test]
    fn each_version_is_measured_on_its_own_scores_of_the_day() {
        let rows = vec![
            row("a", 10, "champion", 0.9, Some(true)),
            row("b", 10, "champion", 0.2, None),
            row("c", 10, "champion", 0.6, Some(false)),
            row("d", 11, "champion", 0.9, Some(true)),
        ];
        let versions = HashMap::from([("challenger".to_string(), VersionInfo { threshold: 0.7, reference: None })]);
        let measured = measure_day(10, &rows, &versions, &QualityConfig::default());
        assert_eq!(measured.len(), 2);
        let champion = &measured.iter().find(|d| d.version == "champion").unwrap().measures;
        assert_eq!((champion.transactions, champion.frauds), (3, 1));
        assert_eq!(champion.confusion.tp + champion.confusion.fp, 2);
        assert_eq!(champion.average_precision, Some(1.0));
        // The challenger's scores are 1 - the champion's: the fraud is its lowest.
        let challenger = &measured.iter().find(|d| d.version == "challenger").unwrap().measures;
        assert_eq!(challenger.roc_auc, Some(0.0));
        // Its verdicts use its own threshold: only 0.8 >= 0.7.
        assert_eq!(challenger.confusion.tp + challenger.confusion.fp, 1);
        assert_eq!(measured[0].date, "1970-01-11");
    }

    #[test]
    fn drift_is_flagged_over_the_limits() {
        let reference = Reference { score_edges: vec![0.5], score_shares: vec![0.9, 0.1], fraud_rate: 0.1 };
        let versions = HashMap::from([("v".to_string(), VersionInfo { threshold: 0.5, reference: Some(reference) })]);
        // Every score high, every transaction fraud: both signals.
        let rows: Vec<ScoreRow> =
            (0..10).map(|i| ScoreRow { shadow: None, ..row(&i.to_string(), 3, "v", 0.9, Some(true)) }).collect();
        let mut d = measure_day(3, &rows, &versions, &QualityConfig::default()).remove(0);
        // A provisional day: its fraud rate waits for the rest of its labels.
        assert_eq!(d.drift.flagged.len(), 1, "score PSI only: {:?}", d.drift);
        assert!(d.drift.provisional);
        d.drift.judge(true);
        assert_eq!(d.drift.flagged.len(), 2, "{:?}", d.drift);
        assert!(!d.drift.provisional);
        d.drift.judge(true);
        assert_eq!(d.drift.flagged.len(), 2, "judged twice, flagged once");
        assert_eq!(d.drift.fraud_rate_ratio, Some(10.0));
        // Scores as in training: nothing flagged.
        let calm: Vec<ScoreRow> = (0..10)
            .map(|i| {
                let score = if i == 0 { 0.9 } else { 0.1 };
                ScoreRow { shadow: None, ..row(&i.to_string(), 3, "v", score, Some(i == 0)) }
            })
            .collect();
        assert!(measure_day(3, &calm, &versions, &QualityConfig::default())[0].drift.flagged.is_empty());
    }

    #[test]
    fn days_are_complete_after_the_label_delay_and_the_window_bounds_them() {
        let quality = Quality::in_memory(QualityConfig { days: 10, ..QualityConfig::default() }, 7);
        quality.recorded(vec![row("a", 100, "v", 0.9, None)], &[]);
        quality.recorded(vec![row("b", 85, "v", 0.9, None), row("c", 92, "v", 0.9, None)], &[]);
        assert_eq!(quality.take_touched(), vec![92, 100], "day 85 is outside the 10-day window");
        assert!(quality.take_touched().is_empty());
        let measure = |day| {
            let rows = quality.memory().unwrap().rows(day);
            measure_day(day, &rows, &HashMap::new(), quality.config())
        };
        quality.keep(92, measure(92));
        quality.keep(100, measure(100));
        let summary = quality.summary();
        let champion: Vec<_> = summary.days.iter().filter(|d| d.version == "v").map(|d| (d.day, d.complete)).collect();
        assert_eq!(champion, [(92, true), (100, false)]);
        assert_eq!(summary.latest.len(), 2, "the champion and the shadow");
        assert!(summary.latest.iter().all(|d| d.day == 100));
        // A label reaches its row and marks its day for measuring.
        quality.labelled(&[RowLabel {
            trans_num: "c".into(),
            cc_num: "card-c".into(),
            day: 92,
            minute: 0,
            is_fraud: true,
            reported_at: 5,
        }]);
        assert_eq!(quality.take_touched(), vec![92]);
        assert!(measure(92).iter().all(|d| d.measures.frauds == 1));
    }

    #[test]
    fn outcome_batches_become_rows_with_their_early_labels() {
        use crate::simulate::{SimConfig, Simulator};
        let txns: Vec<_> = Simulator::new(SimConfig::default()).take(2).collect();
        let batch = crate::record::to_batch(&txns);
        let features = crate::features::derive(&batch);
        let outcomes = outcome::build(&batch, &features, &[0.1, 0.9], 0.5, "v1");
        let (rows, labels) = rows_of(&outcomes);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].shadow, None);
        assert_eq!(labels.len(), 0);
        let labelled = outcome::with_labels(&outcomes, &[None, Some(crate::history::Label::new(true, 77))]);
        let labelled = outcome::with_shadow(&labelled, &[0.25, 0.75], "next");
        let (rows, labels) = rows_of(&labelled);
        assert_eq!(rows[1].label, Some((true, 77)));
        assert_eq!(rows[1].shadow, Some(("next".to_string(), 0.75)));
        assert_eq!(
            labels,
            vec![RowLabel {
                trans_num: rows[1].trans_num.clone(),
                cc_num: rows[1].cc_num.clone(),
                day: rows[1].day,
                minute: rows[1].minute,
                is_fraud: true,
                reported_at: 77
            }]
        );
    }
}
