//! The model registry: the model in service behind an atomic pointer, and the
//! versions loaded before it.
//!
//! A batch takes an `Arc` of the current model when it starts and keeps it to
//! the end, so `load-model` swaps the pointer without waiting and in-flight
//! batches finish on the old model. A `ScoreCommand` may ask for an earlier
//! version by name while it is still held here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::model::{Model, ModelError, ModelFiles, ModelMeta, ParityReport};

/// How many versions stay loaded for `ScoreCommand.model_version`.
const KEEP_VERSIONS: usize = 4;

pub struct Registry {
    current: ArcSwap<Model>,
    loaded: Mutex<BTreeMap<String, Arc<Model>>>,
    sessions: usize,
}

impl Registry {
    pub fn new(model: Model, sessions: usize) -> Self {
        let model = Arc::new(model);
        let loaded = BTreeMap::from([(model.version().to_string(), model.clone())]);
        Self { current: ArcSwap::new(model), loaded: Mutex::new(loaded), sessions }
    }

    /// Loads the model in `dir` (checking parity) and makes it the registry.
    pub fn open(dir: &Path, sessions: usize) -> Result<Self, ModelError> {
        let (model, report) = Model::load_dir(dir, sessions)?;
        tracing::info!(version = model.version(), dir = %dir.display(), parity_rows = report.rows,
            max_diff = report.max_probability_diff, "model loaded");
        Ok(Self::new(model, sessions))
    }

    /// The model in service.
    pub fn current(&self) -> Arc<Model> {
        self.current.load_full()
    }

    /// A loaded version by name.
    pub fn get(&self, version: &str) -> Option<Arc<Model>> {
        self.loaded.lock().expect("registry lock").get(version).cloned()
    }

    /// Verifies a new model (loads it, runs its parity vectors) and only then
    /// puts it in service. On error the old model keeps serving.
    pub fn load(&self, files: &ModelFiles) -> Result<(Arc<Model>, ParityReport), ModelError> {
        let (model, report) = Model::from_files(files, self.sessions)?;
        let model = Arc::new(model);
        {
            let mut loaded = self.loaded.lock().expect("registry lock");
            loaded.insert(model.version().to_string(), model.clone());
            while loaded.len() > KEEP_VERSIONS {
                let oldest = loaded
                    .iter()
                    .filter(|(v, _)| v.as_str() != model.version())
                    .min_by(|a, b| a.1.meta.created_at.cmp(&b.1.meta.created_at))
                    .map(|(v, _)| v.clone());
                match oldest {
                    Some(v) => loaded.remove(&v),
                    None => break,
                };
            }
        }
        let previous = self.current.swap(model.clone());
        tracing::info!(from = previous.version(), to = model.version(), parity_rows = report.rows, "model swapped");
        Ok((model, report))
    }
}

/// The model directory to use: the given one, else the newest under
/// `models/` of the working directory or of the project the binary is in.
pub fn model_dir_or_newest(given: Option<PathBuf>) -> Result<PathBuf, ModelError> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(PathBuf::from));
    }
    roots.iter().find_map(|r| newest_model_dir(&r.join("models"))).ok_or(ModelError::NoneFound)
}

/// The newest model directory under `root` (by `created_at` in model.json).
pub fn newest_model_dir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let json = std::fs::read(e.path().join("model.json")).ok()?;
            let meta = ModelMeta::parse(&json).ok()?;
            Some((meta.created_at, e.path()))
        })
        .max()
        .map(|(_, path)| path)
}
