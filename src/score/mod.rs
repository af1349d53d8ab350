//! Scoring: a batch of transactions in, a batch of outcomes out.
//!
//! The stages, in order: [`crate::record::conform`] fits the batch to the record
//! schema, [`features`] validates rows and derives features, the current
//! [`model`] from the [`registry`] scores the valid rows (through [`native`]
//! when it recognises the graph, else ONNX Runtime), and [`outcome`]
//! assembles what every sink receives.

pub mod model;
pub mod native;
pub mod outcome;
pub mod registry;
pub mod runtime;
pub mod tree_depth;

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::compute::{filter, filter_record_batch};
use arrow::record_batch::RecordBatch;

use crate::features::{self, Features, RowError};
use crate::record::conform::{conform, SchemaError};
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
}

/// Per-request choices (from a Flight `ScoreCommand`).
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    pub model_version: Option<String>,
    pub threshold: Option<f64>,
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
}

impl Scorer {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn score(&self, batch: &RecordBatch, options: &ScoreOptions) -> Result<Scored, ScoreError> {
        let model: Arc<Model> = match &options.model_version {
            Some(v) => self.registry.get(v).ok_or_else(|| ScoreError::UnknownVersion(v.clone()))?,
            None => self.registry.current(),
        };
        let threshold = options.threshold.unwrap_or(model.meta.threshold);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(ScoreError::BadThreshold(threshold));
        }
        let batch = conform(batch)?;
        let features = features::derive(&batch);
        let invalid = features.invalid.clone();
        let (batch, features) = if invalid.is_empty() { (batch, features) } else { keep_valid(&batch, features) };
        let scores = model.predict(&batch, &features)?;
        let outcomes = outcome::build(&batch, &features, &scores, threshold, model.version());
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
    };
    (batch, features)
}
