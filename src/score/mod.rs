//! Scoring: a batch of transactions in, a batch of outcomes out.
//!
//! The stages, in order: [`crate::record::conform`] fits the batch to the record
//! schema, [`features`] validates rows and derives features, the
//! [`crate::history`] adds the card and merchant history of the valid rows
//! (or takes the history columns a batch carries), the current [`model`]
//! from the [`registry`] scores them (through [`native`] when it recognises
//! the graph, else ONNX Runtime), and [`outcome`] assembles what every sink
//! receives.

pub mod model;
pub mod native;
pub mod outcome;
pub mod registry;
pub mod runtime;
pub mod tree_depth;

use std::sync::Arc;

use arrow::array::{Array, BooleanArray};
use arrow::compute::{filter, filter_record_batch};
use arrow::record_batch::RecordBatch;

use crate::features::{self, Features, RowError};
use crate::history::order::Turn;
use crate::history::{History, HistoryColumns, Use};
use crate::record::conform::{conform, SchemaError};
use crate::record::limits::TimeBound;
use model::{Model, ModelError};
use registry::Registry;

/// Why a batch could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("unknown model version `{0}`")]
    UnknownVersion(String),
    #[error("threshold {0} is outside [0, 1]")]
    BadThreshold(f64),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model {version} needs history features ({inputs}) but history is off here (history.enabled)")]
    NoHistory { version: String, inputs: String },
    #[error(transparent)]
    History(#[from] crate::history::StoreError),
}

/// Per-request choices (from a Flight `ScoreCommand`).
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    pub model_version: Option<String>,
    pub threshold: Option<f64>,
}

/// What a scoring answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Every [`outcome::schema`] column.
    Outcomes,
    /// The [`outcome::exchange_schema`] columns.
    Exchange,
}

/// A scored batch: outcomes of the valid rows, and the invalid rows.
#[derive(Debug)]
pub struct Scored {
    /// [`outcome::schema`] rows, in input order, valid rows only.
    pub outcomes: RecordBatch,
    /// Rows that failed validation, by their index in the input batch.
    pub invalid: Vec<RowError>,
}

/// Scores batches with the registry's current model.
#[derive(Clone)]
pub struct Scorer {
    registry: Arc<Registry>,
    history: Option<Arc<History>>,
    /// How far ahead of the clock a transaction may be dated.
    bound: TimeBound,
}

impl Scorer {
    /// A scorer without history: the history columns of outcomes are null
    /// unless a batch carries them.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry, history: None, bound: TimeBound::default() }
    }

    /// The same scorer refusing rows dated further ahead than `bound`.
    pub fn with_time_bound(mut self, bound: TimeBound) -> Self {
        self.bound = bound;
        self
    }

    /// How far ahead of the clock input may be dated (labels too).
    pub fn time_bound(&self) -> TimeBound {
        self.bound
    }

    /// The same scorer computing history features from `history`.
    pub fn with_history(mut self, history: Arc<History>) -> Self {
        self.history = Some(history);
        self
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn history(&self) -> Option<&Arc<History>> {
        self.history.as_ref()
    }

    /// Scores a batch; the history is read, never changed (what-if scoring).
    pub fn score(&self, batch: &RecordBatch, options: &ScoreOptions) -> Result<Scored, ScoreError> {
        self.score_in(batch, options, Use::Read, None, Answer::Outcomes)
    }

    /// Scores a batch as [`Scorer::score`] does, answering only the
    /// [`outcome::exchange_schema`] columns (DoExchange): the whole outcome
    /// would cost a dozen columns of nulls per batch (about 10 MB zeroed
    /// for 65,536 rows), built to be dropped.
    pub fn answer(&self, batch: &RecordBatch, options: &ScoreOptions) -> Result<Scored, ScoreError> {
        self.score_in(batch, options, Use::Read, None, Answer::Exchange)
    }

    /// Scores a batch on its way to storage: each valid row's features are
    /// computed, then the row is recorded in the history. With a `turn`, the
    /// history step waits for every batch dispatched before this one.
    pub fn score_and_record(
        &self,
        batch: &RecordBatch,
        options: &ScoreOptions,
        turn: Option<&Turn>,
    ) -> Result<Scored, ScoreError> {
        self.score_in(batch, options, Use::Update, turn, Answer::Outcomes)
    }

    fn score_in(
        &self,
        batch: &RecordBatch,
        options: &ScoreOptions,
        mode: Use,
        turn: Option<&Turn>,
        answer: Answer,
    ) -> Result<Scored, ScoreError> {
        let lineup = self.registry.lineup();
        let model: Arc<Model> = match &options.model_version {
            Some(v) => self.registry.get(v).ok_or_else(|| ScoreError::UnknownVersion(v.clone()))?,
            None => lineup.champion.clone(),
        };
        let threshold = options.threshold.unwrap_or(model.meta.threshold);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(ScoreError::BadThreshold(threshold));
        }
        // A backfill sends the history it computed (Spark, over the past);
        // taken from the input before conforming drops unknown columns.
        let carried = HistoryColumns::carried_by(batch);
        let batch = conform(batch)?;
        let mut features = features::derive_within(&batch, self.bound);
        features.extra = carried.map(|c| c.into_columns()).unwrap_or_default();
        let invalid = features.invalid.clone();
        let mut labels = Vec::new();
        let (batch, mut features) = if invalid.is_empty() { (batch, features) } else { keep_valid(&batch, features) };
        // What-if scoring answers with scores only (DoExchange), so a model
        // that reads no history needs none: reading it cost a card lookup
        // per row, and the store's reads when cards are not held.
        let needs_history = mode == Use::Update || !model.meta.history_inputs().is_empty();
        if let (true, true, Some(history)) = (needs_history, features.extra.is_empty(), &self.history) {
            if let Some(turn) = turn {
                turn.wait();
            }
            // An error leaves the turn unfinished: the batch is retried in
            // its place (or abandoned at shutdown, which lets later ones pass).
            features.extra = match history.compute(&batch, &features, mode, turn) {
                Ok(columns) => {
                    labels = columns.labels.clone();
                    columns.into_columns()
                }
                // Ingest and history models must wait for the store.
                Err(e) => return Err(e.into()),
            };
            if let Some(turn) = turn {
                turn.finish();
            }
        }
        if features.extra.is_empty() && batch.num_rows() > 0 {
            let inputs = model.meta.history_inputs();
            if !inputs.is_empty() {
                return Err(ScoreError::NoHistory { version: model.version().into(), inputs: inputs.join(", ") });
            }
        }
        let scores = model.predict(&batch, &features)?;
        if answer == Answer::Exchange {
            let outcomes = outcome::exchange(&batch, &scores, threshold, model.version());
            return Ok(Scored { outcomes, invalid });
        }
        let outcomes = outcome::build(&batch, &features, &scores, threshold, model.version());
        let mut outcomes = outcome::with_labels(&outcomes, &labels);
        // Alerts on their way to storage say why they scored high.
        if mode == Use::Update {
            let alerts: Vec<usize> = (0..scores.len()).filter(|&i| f64::from(scores[i]) >= threshold).collect();
            match model.explain(&batch, &features, &alerts) {
                Ok(Some(explained)) => {
                    let rows: Vec<(usize, Vec<(String, f64)>)> =
                        alerts.into_iter().zip(explained).map(|(row, e)| (row, e.contributions)).collect();
                    outcomes = outcome::with_top_features(&outcomes, &rows);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot explain alerts; stored without top_features"),
            }
        }
        // A shadow scores what is stored, beside the champion; it never
        // changes an outcome, and its failure never stops one.
        if let (Use::Update, None, Some(shadow)) = (mode, &options.model_version, &lineup.shadow) {
            if outcomes.num_rows() > 0 {
                match shadow.predict(&batch, &features) {
                    Ok(scores) => outcomes = outcome::with_shadow(&outcomes, &scores, shadow.version()),
                    Err(e) => {
                        tracing::warn!(version = shadow.version(), error = %e, "shadow model failed; outcomes stored without its scores")
                    }
                }
            }
        }
        Ok(Scored { outcomes, invalid })
    }
}

fn keep_valid(batch: &RecordBatch, features: Features) -> (RecordBatch, Features) {
    let mut keep = vec![true; batch.num_rows()];
    for e in &features.invalid {
        keep[e.row] = false;
    }
    let mask = BooleanArray::from(keep);
    let f = |a: &dyn arrow::array::Array| filter(a, &mask).expect("mask length matches");
    let batch = filter_record_batch(batch, &mask).expect("mask length matches");
    let features = Features {
        unix_time: Arc::new(f(features.unix_time.as_ref()).as_any().downcast_ref().cloned().expect("int64")),
        distance_km: Arc::new(f(features.distance_km.as_ref()).as_any().downcast_ref().cloned().expect("float64")),
        age: Arc::new(f(features.age.as_ref()).as_any().downcast_ref().cloned().expect("int64")),
        hour: Arc::new(f(features.hour.as_ref()).as_any().downcast_ref().cloned().expect("int64")),
        invalid: features.invalid,
        extra: features.extra.iter().map(|(name, c)| (*name, f(c.as_ref()))).collect(),
    };
    (batch, features)
}
