//! The model registry: the models in service behind one atomic pointer —
//! the champion (whose scores are the outcomes), an optional shadow (a
//! challenger scoring every record beside it without changing outcomes)
//! and the previous champion (kept loaded for an instant rollback) — and
//! the versions loaded before them.
//!
//! A batch takes an `Arc` of the line-up when it starts and keeps it to the
//! end, so `load-model`, `promote` and `rollback` switch without waiting,
//! all three models at once, and in-flight batches finish on the old ones.
//! A `ScoreCommand` may ask for an earlier version by name while it is
//! still held here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::model::{Model, ModelError, ModelFiles, ModelMeta, ParityReport};

/// How many versions stay loaded for `ScoreCommand.model_version` (the
/// line-up's are always kept).
const KEEP_VERSIONS: usize = 4;

/// The models in service at one moment.
#[derive(Clone)]
pub struct Lineup {
    pub champion: Arc<Model>,
    pub shadow: Option<Arc<Model>>,
    pub previous: Option<Arc<Model>>,
}

/// Where a loaded model goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// In service at once; the champion becomes the previous model.
    #[default]
    Champion,
    /// Beside the champion: scored and stored, never the outcome.
    Shadow,
}

/// Why a switch of models was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    #[error("no shadow model to promote: load one with {{\"path\": DIR, \"mode\": \"shadow\"}} first")]
    NoShadow,
    #[error("no previous model to roll back to: only one model has served since the start")]
    NoPrevious,
    #[error("model {0} is in service already; a shadow must be another version")]
    SameVersion(String),
}

/// A line-up as saved (Cassandra `model_lineup` and `model_files`): the
/// files of each model in it.
#[derive(Debug, Clone)]
pub struct SavedLineup {
    pub champion: ModelFiles,
    pub shadow: Option<ModelFiles>,
    pub previous: Option<ModelFiles>,
}

/// The line-up after a switch, as `load-model`, `promote` and `rollback`
/// report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Switched {
    pub champion: String,
    pub shadow: Option<String>,
    pub previous: Option<String>,
}

impl From<&Lineup> for Switched {
    fn from(l: &Lineup) -> Self {
        let name = |m: &Option<Arc<Model>>| m.as_ref().map(|m| m.version().to_string());
        Self { champion: l.champion.version().to_string(), shadow: name(&l.shadow), previous: name(&l.previous) }
    }
}

pub struct Registry {
    lineup: ArcSwap<Lineup>,
    /// Versions by name; its lock also orders switches, so two actions at
    /// once never lose one another's change.
    loaded: Mutex<BTreeMap<String, Arc<Model>>>,
    sessions: usize,
}

impl Registry {
    pub fn new(model: Model, sessions: usize) -> Self {
        let model = Arc::new(model);
        let loaded = BTreeMap::from([(model.version().to_string(), model.clone())]);
        let lineup = Lineup { champion: model, shadow: None, previous: None };
        Self { lineup: ArcSwap::from_pointee(lineup), loaded: Mutex::new(loaded), sessions }
    }

    /// Loads the model in `dir` (checking parity) and makes it the registry.
    pub fn open(dir: &Path, sessions: usize) -> Result<Self, ModelError> {
        let (model, report) = Model::load_dir(dir, sessions)?;
        tracing::info!(version = model.version(), dir = %dir.display(), parity_rows = report.rows,
            max_diff = report.max_probability_diff, "model loaded");
        Ok(Self::new(model, sessions))
    }

    /// A registry with a saved line-up (after a restart): each model built
    /// from its files and checked as a load checks it.
    pub fn restore(saved: &SavedLineup, sessions: usize) -> Result<Self, ModelError> {
        let build = |files: &ModelFiles| Model::from_files(files, sessions).map(|(m, _)| Arc::new(m));
        let champion = build(&saved.champion)?;
        let shadow = saved.shadow.as_ref().map(build).transpose()?;
        let previous = saved.previous.as_ref().map(build).transpose()?;
        let loaded = [Some(&champion), shadow.as_ref(), previous.as_ref()]
            .into_iter()
            .flatten()
            .map(|m| (m.version().to_string(), m.clone()))
            .collect();
        let lineup = Lineup { champion, shadow, previous };
        tracing::info!(lineup = ?Switched::from(&lineup), "model line-up restored");
        Ok(Self { lineup: ArcSwap::from_pointee(lineup), loaded: Mutex::new(loaded), sessions })
    }

    /// The champion: the model whose scores are the outcomes.
    pub fn current(&self) -> Arc<Model> {
        self.lineup.load().champion.clone()
    }

    /// Champion, shadow and previous, as one consistent view.
    pub fn lineup(&self) -> Arc<Lineup> {
        self.lineup.load_full()
    }

    /// A loaded version by name.
    pub fn get(&self, version: &str) -> Option<Arc<Model>> {
        self.loaded.lock().expect("registry lock").get(version).cloned()
    }

    /// Every loaded version's metadata.
    pub fn loaded(&self) -> Vec<ModelMeta> {
        self.loaded.lock().expect("registry lock").values().map(|m| m.meta.clone()).collect()
    }

    /// Verifies a new model (loads it, runs its parity vectors) and only then
    /// puts it in its role. On error the line-up is unchanged.
    pub fn load(&self, files: &ModelFiles, role: Role) -> Result<(Arc<Model>, ParityReport, Switched), ModelError> {
        let (model, report) = Model::from_files(files, self.sessions)?;
        let model = Arc::new(model);
        let mut loaded = self.loaded.lock().expect("registry lock");
        let now = self.lineup.load_full();
        let next = match role {
            Role::Champion => {
                Lineup { champion: model.clone(), shadow: now.shadow.clone(), previous: Some(now.champion.clone()) }
            }
            Role::Shadow => {
                if now.champion.version() == model.version() {
                    return Err(SwitchError::SameVersion(model.version().into()).into());
                }
                Lineup { shadow: Some(model.clone()), ..(*now).clone() }
            }
        };
        // A shadow of the same version as the new champion scores nothing new.
        let next = match &next.shadow {
            Some(s) if s.version() == next.champion.version() => Lineup { shadow: None, ..next },
            _ => next,
        };
        loaded.insert(model.version().to_string(), model.clone());
        self.lineup.store(Arc::new(next.clone()));
        keep_newest(&mut loaded, &next);
        drop(loaded);
        tracing::info!(
            version = model.version(),
            ?role,
            champion = next.champion.version(),
            parity_rows = report.rows,
            "model loaded"
        );
        Ok((model, report, Switched::from(&next)))
    }

    /// The shadow becomes the champion; the champion becomes the previous
    /// model.
    pub fn promote(&self) -> Result<Switched, SwitchError> {
        let _order = self.loaded.lock().expect("registry lock");
        let now = self.lineup.load_full();
        let shadow = now.shadow.clone().ok_or(SwitchError::NoShadow)?;
        let next = Lineup { champion: shadow, shadow: None, previous: Some(now.champion.clone()) };
        self.lineup.store(Arc::new(next.clone()));
        tracing::info!(from = now.champion.version(), to = next.champion.version(), "shadow model promoted");
        Ok(Switched::from(&next))
    }

    /// The previous champion serves again; the one it replaces becomes the
    /// previous (so a second rollback undoes the first). The shadow stays.
    pub fn rollback(&self) -> Result<Switched, SwitchError> {
        let _order = self.loaded.lock().expect("registry lock");
        let now = self.lineup.load_full();
        let previous = now.previous.clone().ok_or(SwitchError::NoPrevious)?;
        let shadow = now.shadow.clone().filter(|s| s.version() != previous.version());
        let next = Lineup { champion: previous, shadow, previous: Some(now.champion.clone()) };
        self.lineup.store(Arc::new(next.clone()));
        tracing::info!(from = now.champion.version(), to = next.champion.version(), "model rolled back");
        Ok(Switched::from(&next))
    }
}

/// Drops the oldest versions beyond [`KEEP_VERSIONS`], never one of the
/// line-up's.
fn keep_newest(loaded: &mut BTreeMap<String, Arc<Model>>, lineup: &Lineup) {
    let in_lineup = |v: &str| {
        [Some(&lineup.champion), lineup.shadow.as_ref(), lineup.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|m| m.version() == v)
    };
    while loaded.len() > KEEP_VERSIONS {
        let oldest = loaded
            .iter()
            .filter(|(v, _)| !in_lineup(v))
            .min_by(|a, b| a.1.meta.created_at.cmp(&b.1.meta.created_at))
            .map(|(v, _)| v.clone());
        match oldest {
            Some(v) => loaded.remove(&v),
            None => break,
        };
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
