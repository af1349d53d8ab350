//! Finding and loading the ONNX Runtime shared library.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded at build time, the
//! library is opened when the first model loads. It comes from the
//! `onnxruntime` wheel on PyPI that `make setup` installs into `.venv/`.
//! Lookup order: `FRAUDFLIGHT_ORT_DYLIB`, `ORT_DYLIB_PATH`, then
//! `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`
//! under the working directory, the executable's directory, or any of their
//! parents.
//!
//! `ort` panics when the library is missing, and even building an `ort::Error`
//! before the library is loaded panics, so the path is checked here first and
//! a missing library is reported as a [`RuntimeError`] that says what to
//! install.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ONNX Runtime library could not be found or loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found: set FRAUDFLIGHT_ORT_DYLIB (or ORT_DYLIB_PATH) to libonnxruntime.so, \
         or run `make setup` to install the onnxruntime wheel into .venv (looked in: {searched})"
    )]
    NotFound { searched: String },
    #[error("ONNX Runtime library {path} is not a file")]
    NotAFile { path: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: String, reason: String },
}

static RUNTIME: OnceLock<Result<Runtime, RuntimeError>> = OnceLock::new();

/// The loaded runtime; kept for the life of the process.
pub struct Runtime {
    pub path: PathBuf,
    pub env: ort::environment::Environment,
}

/// Loads ONNX Runtime once; later calls return the same outcome.
pub fn ensure() -> Result<&'static Runtime, RuntimeError> {
    RUNTIME.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Runtime, RuntimeError> {
    let path = locate()?;
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(RuntimeError::NotAFile { path: shown });
    }
    let builder =
        ort::init_from(&path).map_err(|e| RuntimeError::Load { path: shown.clone(), reason: e.to_string() })?;
    let env = builder
        .with_name("fraudflight")
        .build()
        .map_err(|e| RuntimeError::Load { path: shown.clone(), reason: e.to_string() })?;
    tracing::info!(path = %shown, "ONNX Runtime loaded");
    Ok(Runtime { path, env })
}

/// Where the library is, without loading it.
pub fn locate() -> Result<PathBuf, RuntimeError> {
    for var in ["FRAUDFLIGHT_ORT_DYLIB", "ORT_DYLIB_PATH"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(value));
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    let mut searched = Vec::new();
    for root in roots {
        let lib = root.join(".venv").join("lib");
        if let Some(found) = find_in_venv_lib(&lib) {
            return Ok(found);
        }
        searched.push(lib.display().to_string());
    }
    searched.dedup();
    Err(RuntimeError::NotFound { searched: searched.join(", ") })
}

fn find_in_venv_lib(lib: &Path) -> Option<PathBuf> {
    let pythons = std::fs::read_dir(lib).ok()?;
    let mut candidates: Vec<PathBuf> = pythons
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .filter_map(|e| std::fs::read_dir(e.path().join("site-packages/onnxruntime/capi")).ok())
        .flat_map(|dir| dir.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
        .collect();
    // Prefer the fully versioned name (libonnxruntime.so.1.32.0) over links.
    candidates.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    candidates.into_iter().next()
}
