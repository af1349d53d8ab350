//! Retraining on a schedule (`[retrain]`, off by default): `serve` runs
//! `spark-job/retrain.py` against its own Cassandra keyspace and its own
//! Flight port, one run at a time, `retrain.interval_ms` after the last one
//! ended. The job decides (docs/architecture.md, "Retraining"); this only
//! starts it, logs what it decided, and stops it at shutdown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::Config;
use crate::shutdown::Shutdown;

/// How a run is started.
#[derive(Debug, Clone)]
pub struct Job {
    pub python: PathBuf,
    pub script: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub every: Duration,
}

/// Why retraining cannot be scheduled.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    #[error("retrain.enabled needs Cassandra (the job trains from what serve stored): set cassandra.nodes")]
    NoCassandra,
    #[error("retrain.script {0} does not exist (leave it empty to use the project's spark-job/retrain.py)")]
    NoScript(String),
}

impl Job {
    /// The job for this configuration and the Flight address serve bound;
    /// None when retraining is off.
    pub fn from_config(config: &Config, flight: std::net::SocketAddr, tls: bool) -> Result<Option<Self>, RetrainError> {
        let retrain = &config.retrain;
        if !retrain.enabled {
            return Ok(None);
        }
        if !config.cassandra.enabled() {
            return Err(RetrainError::NoCassandra);
        }
        let project = project_root();
        let script = match retrain.script.as_str() {
            "" => project.as_deref().map(|p| p.join("spark-job/retrain.py")).unwrap_or_else(|| "retrain.py".into()),
            given => PathBuf::from(given),
        };
        if !script.exists() {
            return Err(RetrainError::NoScript(script.display().to_string()));
        }
        let python = match retrain.python.as_str() {
            "" => {
                project.map(|p| p.join(".venv/bin/python")).filter(|p| p.exists()).unwrap_or_else(|| "python3".into())
            }
            given => PathBuf::from(given),
        };
        let node = config.cassandra.node_list().into_iter().next().unwrap_or_default();
        let host = if flight.ip().is_unspecified() { "127.0.0.1".to_string() } else { flight.ip().to_string() };
        let endpoint = if tls {
            format!("grpc+tls://localhost:{}", flight.port())
        } else {
            format!("grpc://{host}:{}", flight.port())
        };
        let mut args = vec![
            "--source".to_string(),
            format!("cassandra://{node}/{}", config.cassandra.keyspace),
            "--endpoint".to_string(),
            endpoint,
        ];
        if tls {
            args.extend(["--ca".to_string(), config.tls.cert.clone()]);
        }
        args.extend(retrain.args.iter().cloned());
        // Secrets travel in the environment, never on the command line.
        let mut env = Vec::new();
        if !config.cassandra.username.is_empty() {
            env.push(("FRAUDFLIGHT_CASSANDRA_USERNAME".into(), config.cassandra.username.clone()));
            env.push(("FRAUDFLIGHT_CASSANDRA_PASSWORD".into(), config.cassandra.password.expose().to_string()));
        }
        if std::env::var_os("FRAUDFLIGHT_TOKEN").is_none() {
            if let Some(token) = config.tokens.admin_tokens().into_iter().next() {
                env.push(("FRAUDFLIGHT_TOKEN".into(), token));
            }
        }
        Ok(Some(Self { python, script, args, env, every: Duration::from_millis(retrain.interval_ms) }))
    }

    /// Runs the job every interval until shutdown; a run still going at
    /// shutdown is killed (its decision is recorded only at its end).
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.wait() => return,
            }
            tracing::info!(script = %self.script.display(), "retraining started");
            let started = std::time::Instant::now();
            let mut command = tokio::process::Command::new(&self.python);
            command
                .arg(&self.script)
                .args(&self.args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .current_dir(self.script.parent().unwrap_or(Path::new(".")))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    tracing::warn!(python = %self.python.display(), error = %e, "cannot start retraining");
                    continue;
                }
            };
            let output = tokio::select! {
                output = child.wait_with_output() => output,
                _ = shutdown.wait() => {
                    tracing::info!("shutdown: the retraining run is stopped");
                    return;
                }
            };
            match output {
                Ok(output) => report(&output, started.elapsed()),
                Err(e) => tracing::warn!(error = %e, "retraining run lost"),
            }
        }
    }
}

/// Logs what a run decided (its last stdout line) or why it failed.
fn report(output: &std::process::Output, took: Duration) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let decision = stdout.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match (output.status.success(), decision) {
        (true, Some(d)) => tracing::info!(
            deployed = d["deployed"].as_bool().unwrap_or(false),
            mode = d["mode"].as_str().unwrap_or(""),
            challenger = d["challenger"]["version"].as_str().unwrap_or(""),
            reason = d["reason"].as_str().unwrap_or(""),
            seconds = took.as_secs(),
            "retraining finished"
        ),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String =
                stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
            tracing::warn!(status = %output.status, error = %tail, seconds = took.as_secs(), "retraining failed");
        }
    }
}

/// The project directory the binary was built in (it holds `spark-job/`),
/// else the working directory's if that has one.
fn project_root() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(PathBuf::from));
    }
    candidates.into_iter().find(|p| p.join("spark-job/retrain.py").exists())
}
