//! One loaded model: its metadata (`model.json`), its ONNX Runtime sessions,
//! and the parity check that must pass before it may serve.
//!
//! A model directory holds `model.onnx` (a graph over raw columns, see
//! `spark-job/fraudflight_spark/export_onnx.py`), `model.json` (version,
//! threshold, metrics, the graph's inputs) and, normally, `parity.jsonl`
//! (raw transactions with Spark's features and probability). Loading checks
//! that the graph's inputs are the ones `model.json` declares and that every
//! input can be fed from a record column or a derived feature, then scores the
//! parity vectors: a model that disagrees with Spark is refused.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType};
use serde::{Deserialize, Serialize};

use super::native::{self, NativeModel};
use super::runtime;
use crate::features::{self, Features};
use crate::history;
use crate::record::{self, Kind};

/// Files larger than this are refused before they are read.
pub const MAX_MODEL_BYTES: u64 = 256 << 20;
/// Features must match Spark's to this (km; age and hour exactly).
pub const FEATURE_TOLERANCE: f64 = 1e-6;
/// Probabilities must match Spark's to this.
pub const PARITY_TOLERANCE: f64 = 1e-5;

/// Why a model cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("no model found: pass --model DIR or set FRAUDFLIGHT_MODEL (looked for models/*/model.json)")]
    NoneFound,
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is {size} bytes, over the {max}-byte limit")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("invalid model.json: {0}")]
    Metadata(String),
    #[error("invalid ONNX model: {0}")]
    Onnx(String),
    #[error("model inputs do not match model.json: {0}")]
    Inputs(String),
    #[error("parity check failed at parity.jsonl line {line}: {detail}")]
    Parity { line: usize, detail: String },
    #[error("scoring failed: {0}")]
    Run(String),
    #[error(transparent)]
    Switch(#[from] super::registry::SwitchError),
}

/// The type a graph input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Double,
}

/// One graph input: a record column or a derived feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInput {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InputType,
}

/// `model.json`. Unknown keys (training details, params) are kept and shown by
/// `model-info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    pub version: String,
    #[serde(default)]
    pub created_at: String,
    /// Scores at or above this are predicted frauds.
    pub threshold: f64,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    pub inputs: Vec<ModelInput>,
    #[serde(default = "default_output")]
    pub output: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_output() -> String {
    "probability".into()
}

impl ModelMeta {
    pub fn parse(json: &[u8]) -> Result<Self, ModelError> {
        let meta: ModelMeta = serde_json::from_slice(json).map_err(|e| ModelError::Metadata(e.to_string()))?;
        if meta.version.trim().is_empty() || meta.version.len() > 128 {
            return Err(ModelError::Metadata("`version` must be 1 to 128 characters".into()));
        }
        if !(0.0..=1.0).contains(&meta.threshold) {
            return Err(ModelError::Metadata(format!("`threshold` {} is outside [0, 1]", meta.threshold)));
        }
        for key in ["roc_auc", "pr_auc"] {
            if !meta.metrics.get(key).is_some_and(serde_json::Value::is_number) {
                return Err(ModelError::Metadata(format!("`metrics.{key}` is missing or not a number")));
            }
        }
        if meta.inputs.is_empty() {
            return Err(ModelError::Metadata("`inputs` is empty".into()));
        }
        for input in &meta.inputs {
            input_source(input)?;
        }
        Ok(meta)
    }
}

/// Where an input's values come from; an error if nothing can feed it.
fn input_source(input: &ModelInput) -> Result<(), ModelError> {
    let derived = [features::name::DISTANCE_KM, features::name::AGE, features::name::HOUR];
    let ok = match (record::field(&input.name), input.kind) {
        (Some(f), InputType::String) => f.kind == Kind::Str,
        (Some(f), InputType::Double) => f.kind != Kind::Str,
        (None, InputType::Double) => derived.contains(&input.name.as_str()) || is_history(&input.name),
        (None, InputType::String) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ModelError::Metadata(format!(
            "input `{}` ({:?}) is neither a record column of that type nor a derived feature",
            input.name, input.kind
        )))
    }
}

fn is_history(name: &str) -> bool {
    history::definitions::table().names().any(|n| n == name)
}

impl ModelMeta {
    /// The history features among the model's inputs.
    pub fn history_inputs(&self) -> Vec<&str> {
        self.inputs.iter().map(|i| i.name.as_str()).filter(|n| is_history(n)).collect()
    }
}

/// A model ready to score: metadata plus a small pool of sessions.
///
/// `Session::run` needs `&mut`, so each session sits behind a mutex; batches
/// pick the first free one. One session per scoring thread is enough: on a
/// 2-core machine ONNX Runtime's own intra-op threads made trees slower.
pub struct Model {
    pub meta: ModelMeta,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    /// The native evaluator, when it recognised the graph and agreed with
    /// ONNX Runtime at load; else ONNX Runtime scores.
    native: Option<NativeModel>,
    /// The files it was built from: kept so that the line-up can be saved
    /// and restored after a restart, wherever the model came from.
    pub files: Arc<ModelFiles>,
}

/// A batch's input tensors, ready for [`Model::run`].
pub struct ModelInputs {
    tensors: Vec<(String, DynValue)>,
    rows: usize,
}

/// The files of a model, as bytes (from a directory or a `LoadModel` action).
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    pub onnx: Vec<u8>,
    pub json: Vec<u8>,
    pub parity: Option<Vec<u8>>,
}

impl ModelFiles {
    pub fn read_dir(dir: &Path) -> Result<Self, ModelError> {
        let parity_path = dir.join("parity.jsonl");
        Ok(Self {
            onnx: read_limited(&dir.join("model.onnx"))?,
            json: read_limited(&dir.join("model.json"))?,
            parity: if parity_path.exists() { Some(read_limited(&parity_path)?) } else { None },
        })
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, ModelError> {
    let shown = path.display().to_string();
    let size = std::fs::metadata(path).map_err(|source| ModelError::Read { path: shown.clone(), source })?.len();
    if size > MAX_MODEL_BYTES {
        return Err(ModelError::TooLarge { path: shown, size, max: MAX_MODEL_BYTES });
    }
    std::fs::read(path).map_err(|source| ModelError::Read { path: shown, source })
}

/// What the parity check measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ParityReport {
    pub rows: usize,
    pub max_probability_diff: f64,
    pub max_distance_diff: f64,
}

impl Model {
    /// Loads `dir/model.onnx` + `dir/model.json` and checks parity.
    pub fn load_dir(dir: &Path, sessions: usize) -> Result<(Self, ParityReport), ModelError> {
        Self::from_files(&ModelFiles::read_dir(dir)?, sessions)
    }

    /// Builds a model from its files and runs its parity vectors, if any.
    pub fn from_files(files: &ModelFiles, sessions: usize) -> Result<(Self, ParityReport), ModelError> {
        let meta = ModelMeta::parse(&files.json)?;
        // Before ONNX Runtime sees the graph: a chain-shaped tree crashes it.
        super::tree_depth::check(&files.onnx).map_err(ModelError::Onnx)?;
        runtime::ensure()?;
        let sessions =
            (0..sessions.max(1)).map(|_| build_session(&files.onnx).map(Mutex::new)).collect::<Result<Vec<_>, _>>()?;
        check_inputs(&meta, &sessions[0].lock().expect("fresh mutex"))?;
        let mut model =
            Self { meta, sessions, next: AtomicUsize::new(0), native: None, files: Arc::new(files.clone()) };
        model.native = model.checked_native(&files.onnx)?;
        let report = match &files.parity {
            Some(parity) => model.check_parity(parity)?,
            None => ParityReport::default(),
        };
        Ok((model, report))
    }

    pub fn version(&self) -> &str {
        &self.meta.version
    }

    /// What scores this model: `native` or `onnxruntime`.
    pub fn engine(&self) -> &'static str {
        if self.native.is_some() {
            "native"
        } else {
            "onnxruntime"
        }
    }

    /// The native evaluator for this graph, if there is one and it gives
    /// ONNX Runtime's probabilities (within [`native::MAX_DIFF_FROM_ONNX_RUNTIME`])
    /// on 4,096 [probe rows](NativeModel::probe) that reach both sides of
    /// every split; otherwise None and ONNX Runtime scores.
    fn checked_native(&self, onnx: &[u8]) -> Result<Option<NativeModel>, ModelError> {
        const PROBE_ROWS: usize = 4096;
        let native = match NativeModel::from_onnx(onnx) {
            Ok(native) => native,
            Err(why) => {
                tracing::info!(version = %self.meta.version, %why, "scoring with ONNX Runtime");
                return Ok(None);
            }
        };
        let probe = native.probe(PROBE_ROWS);
        let mut tensors = Vec::with_capacity(self.meta.inputs.len());
        for input in &self.meta.inputs {
            let Some(column) = probe.get(&input.name) else {
                tracing::info!(version = %self.meta.version, input = %input.name, "graph input unused by the native evaluator; scoring with ONNX Runtime");
                return Ok(None);
            };
            tensors.push((input.name.clone(), tensor(column, input.kind, PROBE_ROWS)?));
        }
        let expected = self.run(&ModelInputs { tensors, rows: PROBE_ROWS })?;
        let got = native.predict(PROBE_ROWS, |name| probe.get(name).cloned()).map_err(ModelError::Run)?;
        let worst = expected.iter().zip(&got).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max);
        if worst > native::MAX_DIFF_FROM_ONNX_RUNTIME {
            tracing::warn!(version = %self.meta.version, worst, "native evaluator disagrees with ONNX Runtime; using ONNX Runtime");
            return Ok(None);
        }
        tracing::info!(version = %self.meta.version, max_diff_from_onnx_runtime = worst, "scoring natively");
        Ok(Some(native))
    }

    /// Fraud probability of every row of a conformed, fully valid batch.
    pub fn predict(&self, batch: &RecordBatch, features: &Features) -> Result<Vec<f32>, ModelError> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        match &self.native {
            Some(native) => native
                .predict(batch.num_rows(), |name| features.column(name).or_else(|| batch.column_by_name(name).cloned()))
                .map_err(ModelError::Run),
            None => self.run(&self.inputs(batch, features)?),
        }
    }

    /// How [`Model::explain`] explains: "tree_shap" (exact TreeSHAP, the
    /// model file carries its nodes' covers), "path" (path contributions,
    /// it does not), or None (not a tree ensemble the native evaluator runs).
    pub fn explanation_method(&self) -> Option<&'static str> {
        self.native.as_ref().and_then(NativeModel::explanation_method)
    }

    /// Why the given rows scored as they did: each input's contribution to
    /// the margin (`native::explain`); None when the model is not a tree
    /// ensemble the native evaluator runs.
    pub fn explain(
        &self,
        batch: &RecordBatch,
        features: &Features,
        rows: &[usize],
    ) -> Result<Option<Vec<native::Explained>>, ModelError> {
        match &self.native {
            Some(native) if !rows.is_empty() => native
                .explain(batch.num_rows(), rows, |name| {
                    features.column(name).or_else(|| batch.column_by_name(name).cloned())
                })
                .map_err(ModelError::Run),
            _ => Ok(None),
        }
    }

    /// The graph's input tensors for a batch (the copy from Arrow columns).
    pub fn inputs(&self, batch: &RecordBatch, features: &Features) -> Result<ModelInputs, ModelError> {
        let rows = batch.num_rows();
        let mut tensors = Vec::with_capacity(self.meta.inputs.len());
        for input in &self.meta.inputs {
            let column = features
                .column(&input.name)
                .or_else(|| batch.column_by_name(&input.name).cloned())
                .ok_or_else(|| ModelError::Inputs(format!("no column for input `{}`", input.name)))?;
            tensors.push((input.name.clone(), tensor(&column, input.kind, rows)?));
        }
        Ok(ModelInputs { tensors, rows })
    }

    /// Runs ONNX Runtime on prepared inputs: the bare `Session::run` that the
    /// benchmarks compare the whole scoring path with.
    pub fn run(&self, inputs: &ModelInputs) -> Result<Vec<f32>, ModelError> {
        let views: Vec<(&str, SessionInputValue<'_>)> =
            inputs.tensors.iter().map(|(name, value)| (name.as_str(), SessionInputValue::from(value))).collect();
        let mut session = self.session();
        let outputs = session.run(views).map_err(|e| ModelError::Run(e.to_string()))?;
        let output = outputs
            .get(&self.meta.output)
            .ok_or_else(|| ModelError::Run(format!("model has no output `{}`", self.meta.output)))?;
        let (_, scores) = output.try_extract_tensor::<f32>().map_err(|e| ModelError::Run(e.to_string()))?;
        if scores.len() != inputs.rows {
            return Err(ModelError::Run(format!("model returned {} scores for {} rows", scores.len(), inputs.rows)));
        }
        Ok(scores.to_vec())
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        // A poisoned session only means another batch panicked mid-run;
        // ONNX Runtime sessions hold no state between runs.
        self.sessions[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scores the parity vectors and compares features and probabilities.
    pub fn check_parity(&self, parity: &[u8]) -> Result<ParityReport, ModelError> {
        let Some((vectors, batch, features)) = self.parity_rows(parity)? else {
            return Ok(ParityReport::default());
        };
        let scores = self.predict(&batch, &features)?;
        let mut report = ParityReport { rows: vectors.len(), ..ParityReport::default() };
        for (row, (line, v)) in vectors.iter().enumerate() {
            let fail = |detail: String| ModelError::Parity { line: *line, detail };
            let distance = features.distance_km.value(row);
            let d = (distance - v.features.distance_km).abs();
            report.max_distance_diff = report.max_distance_diff.max(d);
            if d > FEATURE_TOLERANCE * v.features.distance_km.abs().max(1.0) {
                return Err(fail(format!("distance_km {distance} vs Spark {}", v.features.distance_km)));
            }
            if features.age.value(row) as f64 != v.features.age || features.hour.value(row) as f64 != v.features.hour {
                return Err(fail(format!(
                    "age/hour {}/{} vs Spark {}/{}",
                    features.age.value(row),
                    features.hour.value(row),
                    v.features.age,
                    v.features.hour
                )));
            }
            let p = (scores[row] as f64 - v.probability).abs();
            report.max_probability_diff = report.max_probability_diff.max(p);
            if p > PARITY_TOLERANCE {
                return Err(fail(format!(
                    "probability {} vs Spark {} (tolerance {PARITY_TOLERANCE})",
                    scores[row], v.probability
                )));
            }
        }
        Ok(report)
    }

    /// Lines in the layout of `parity.jsonl` (a record, Spark's features,
    /// a probability) as a batch with its features: the derived ones as the
    /// service derives them, a history model's history inputs as the lines
    /// give them. None for no lines.
    fn parity_rows(&self, parity: &[u8]) -> Result<Option<ParityRows>, ModelError> {
        let text = std::str::from_utf8(parity).map_err(|e| ModelError::Parity { line: 0, detail: e.to_string() })?;
        let mut vectors = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: ParityVector =
                serde_json::from_str(line).map_err(|e| ModelError::Parity { line: i + 1, detail: e.to_string() })?;
            vectors.push((i + 1, v));
        }
        if vectors.is_empty() {
            return Ok(None);
        }
        let records: Vec<_> = vectors.iter().map(|(_, v)| v.record.clone()).collect();
        let batch = record::to_batch(&records);
        let mut features = features::derive(&batch);
        if let Some(bad) = features.invalid.first() {
            return Err(ModelError::Parity { line: vectors[bad.row].0, detail: bad.error.to_string() });
        }
        // A history model's vectors carry Spark's history features (the
        // stream's own are checked against Spark by tests/history_parity).
        for name in self.meta.history_inputs() {
            let name = history::definitions::table().names().find(|n| *n == name).expect("a history input");
            let values = vectors
                .iter()
                .map(|(line, v)| {
                    v.features.history.get(name).copied().ok_or_else(|| ModelError::Parity {
                        line: *line,
                        detail: format!("no `features.{name}` for the model's history input"),
                    })
                })
                .collect::<Result<Vec<f64>, _>>()?;
            features.extra.push((name, std::sync::Arc::new(arrow::array::Float64Array::from(values))));
        }
        Ok(Some((vectors, batch, features)))
    }

    /// Why each line (in `parity.jsonl`'s layout) scores as it does; None
    /// when the model is not a tree ensemble the native evaluator runs.
    pub fn explain_lines(&self, lines: &[u8]) -> Result<Option<Vec<ExplainedLine>>, ModelError> {
        let Some((vectors, batch, features)) = self.parity_rows(lines)? else { return Ok(Some(Vec::new())) };
        let scores = self.predict(&batch, &features)?;
        let rows: Vec<usize> = (0..vectors.len()).collect();
        Ok(self.explain(&batch, &features, &rows)?.map(|explained| {
            vectors
                .iter()
                .zip(scores)
                .zip(explained)
                .map(|(((line, _), score), explained)| ExplainedLine { line: *line, score, explained })
                .collect()
        }))
    }
}

/// Parity lines (with their line numbers) as a batch and its features.
type ParityRows = (Vec<(usize, ParityVector)>, RecordBatch, Features);

/// One explained line of [`Model::explain_lines`].
#[derive(Debug, Clone)]
pub struct ExplainedLine {
    /// Its line number in the file (from 1).
    pub line: usize,
    pub score: f32,
    pub explained: native::Explained,
}

/// One line of `parity.jsonl`.
#[derive(Debug, Deserialize)]
struct ParityVector {
    record: record::Transaction,
    features: ParityFeatures,
    probability: f64,
}

#[derive(Debug, Deserialize)]
struct ParityFeatures {
    distance_km: f64,
    age: f64,
    hour: f64,
    /// Spark's history features, by name (models with history inputs).
    #[serde(flatten)]
    history: std::collections::HashMap<String, f64>,
}

fn build_session(onnx: &[u8]) -> Result<Session, ModelError> {
    let err = |e: String| ModelError::Onnx(e);
    let runtime = runtime::ensure()?;
    Session::builder(&runtime.env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| err(e.to_string()))?
        .commit_from_memory(onnx)
        .map_err(|e| err(e.to_string()))
}

fn check_inputs(meta: &ModelMeta, session: &Session) -> Result<(), ModelError> {
    let graph: Vec<(String, Option<TensorElementType>)> =
        session.inputs().iter().map(|o| (o.name().to_string(), o.dtype().tensor_type())).collect();
    for input in &meta.inputs {
        let expected = match input.kind {
            InputType::String => TensorElementType::String,
            InputType::Double => TensorElementType::Float64,
        };
        match graph.iter().find(|(n, _)| n == &input.name) {
            None => return Err(ModelError::Inputs(format!("graph has no input `{}`", input.name))),
            Some((_, ty)) if *ty != Some(expected) => {
                return Err(ModelError::Inputs(format!(
                    "graph input `{}` is {ty:?}, model.json says {:?}",
                    input.name, input.kind
                )))
            }
            Some(_) => {}
        }
    }
    if let Some((extra, _)) = graph.iter().find(|(n, _)| !meta.inputs.iter().any(|i| &i.name == n)) {
        return Err(ModelError::Inputs(format!("graph input `{extra}` is not declared in model.json")));
    }
    if !session.outputs().iter().any(|o| o.name() == meta.output) {
        return Err(ModelError::Inputs(format!("graph has no output `{}`", meta.output)));
    }
    Ok(())
}

/// Builds an [N, 1] tensor from an Arrow column.
fn tensor(column: &ArrayRef, kind: InputType, rows: usize) -> Result<DynValue, ModelError> {
    let shape = [rows, 1usize];
    let run = |e: ort::Error| ModelError::Run(e.to_string());
    match (kind, column.data_type()) {
        (InputType::String, DataType::Utf8) => {
            let strings = column.as_string::<i32>();
            // A null category scores like a category never seen in training.
            // ONNX Runtime copies every string anyway; owned values keep `ort`'s
            // 'static bound simple.
            let values: Vec<String> = (0..rows)
                .map(|i| if strings.is_null(i) { String::new() } else { strings.value(i).to_owned() })
                .collect();
            Ok(Tensor::from_string_array((shape, &values[..])).map_err(run)?.into_dyn())
        }
        (InputType::Double, DataType::Float64) => {
            let a = column.as_primitive::<Float64Type>();
            let values: Vec<f64> = if a.null_count() == 0 {
                a.values().to_vec()
            } else {
                (0..rows).map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) }).collect()
            };
            Ok(Tensor::from_array((shape, values)).map_err(run)?.into_dyn())
        }
        (InputType::Double, DataType::Int64) => {
            let a = column.as_primitive::<Int64Type>();
            let values: Vec<f64> = (0..rows).map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) as f64 }).collect();
            Ok(Tensor::from_array((shape, values)).map_err(run)?.into_dyn())
        }
        (kind, other) => Err(ModelError::Inputs(format!("cannot feed a {other} column to a {kind:?} input"))),
    }
}
