//! Retraining on a schedule (`[retrain]`, off by default): `serve` runs
//! `spark-job/retrain.py` against its own Cassandra keyspace and its own
//! Flight port, one run at a time, `retrain.interval_ms` after the last one
//! ended. The job decides (docs/architecture.md, "Retraining"); this only
//! starts it, logs what it decided, and stops it past `retrain.timeout_ms`
//! or at shutdown: the run and everything it started (Spark's JVM, its
//! Python workers), as one process group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::Config;
use crate::shutdown::Shutdown;

/// Bytes of a run's stdout and stderr kept (each, the last ones).
pub const OUTPUT_TAIL: usize = 64 << 10;

/// Variables of `serve`'s environment a run inherits: what Python, Java
/// and Spark need to start; nothing else (no `FRAUDFLIGHT_*` secret).
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "JAVA_HOME",
    "SPARK_HOME",
    "SPARK_LOCAL_IP",
    "SPARK_MASTER",
    "PYSPARK_PYTHON",
    "PYSPARK_DRIVER_PYTHON",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    // Spark fetches its Cassandra connector from Maven: the way out and the
    // certificates to trust on it.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "FRAUDFLIGHT_SPARK_DRIVER_MEMORY",
];

/// How a run is started.
#[derive(Debug, Clone)]
pub struct Job {
    pub python: PathBuf,
    pub script: PathBuf,
    pub args: Vec<String>,
    /// The run's whole environment.
    pub env: Vec<(String, String)>,
    pub every: Duration,
    pub timeout: Duration,
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
    /// The job for this configuration and the Flight address serve bound,
    /// deploying with `token` (an admin token minted for it; None when
    /// tokens are off); None when retraining is off.
    pub fn from_config(
        config: &Config,
        flight: std::net::SocketAddr,
        tls: bool,
        token: Option<String>,
    ) -> Result<Option<Self>, RetrainError> {
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
        // Secrets travel in the environment, never on the command line; and
        // only those the run needs.
        let mut env: Vec<(String, String)> =
            INHERITED.iter().filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))).collect();
        if !config.cassandra.username.is_empty() {
            env.push(("FRAUDFLIGHT_CASSANDRA_USERNAME".into(), config.cassandra.username.clone()));
            env.push(("FRAUDFLIGHT_CASSANDRA_PASSWORD".into(), config.cassandra.password.expose().to_string()));
        }
        if let Some(token) = token {
            env.push(("FRAUDFLIGHT_TOKEN".into(), token));
        }
        Ok(Some(Self {
            python,
            script,
            args,
            env,
            every: Duration::from_millis(retrain.interval_ms),
            timeout: Duration::from_millis(retrain.timeout_ms),
        }))
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
                .env_clear()
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .current_dir(self.script.parent().unwrap_or(Path::new(".")))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group: stopping it stops what it started.
                .process_group(0)
                .kill_on_drop(true);
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    tracing::warn!(python = %self.python.display(), error = %e, "cannot start retraining");
                    continue;
                }
            };
            let group = child.id();
            let stdout = tokio::spawn(tail(child.stdout.take()));
            let stderr = tokio::spawn(tail(child.stderr.take()));
            let status = tokio::select! {
                status = child.wait() => status,
                _ = tokio::time::sleep(self.timeout) => {
                    stop_group(group);
                    let _ = child.kill().await;
                    tracing::warn!(timeout_ms = self.timeout.as_millis() as u64, "retraining took longer than retrain.timeout_ms: stopped");
                    continue;
                }
                _ = shutdown.wait() => {
                    stop_group(group);
                    tracing::info!("shutdown: the retraining run is stopped");
                    return;
                }
            };
            let (stdout, stderr) = (stdout.await.unwrap_or_default(), stderr.await.unwrap_or_default());
            match status {
                Ok(status) => report(status, &stdout, &stderr, started.elapsed()),
                Err(e) => tracing::warn!(error = %e, "retraining run lost"),
            }
        }
    }
}

/// Kills a run's process group (its id is the run's pid): the run alone
/// would leave what it started running, holding memory and ports.
fn stop_group(group: Option<u32>) {
    let Some(group) = group.and_then(|g| i32::try_from(g).ok()).filter(|&g| g > 0) else { return };
    // SAFETY: killpg takes plain integers and touches no memory of ours.
    unsafe {
        libc::killpg(group, libc::SIGKILL);
    }
}

/// The last [`OUTPUT_TAIL`] bytes of a child's output stream.
async fn tail<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut stream) = stream else { return Vec::new() };
    let mut kept = std::collections::VecDeque::with_capacity(OUTPUT_TAIL);
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend(&buf[..n]);
        let over = kept.len().saturating_sub(OUTPUT_TAIL);
        kept.drain(..over);
    }
    kept.into()
}

/// Logs what a run decided (its last stdout line) or why it failed.
fn report(status: std::process::ExitStatus, stdout: &[u8], stderr: &[u8], took: Duration) {
    // What the job noted on its way (a Cassandra step tried again, a
    // challenger without history and why), before its outcome.
    for note in String::from_utf8_lossy(stderr).lines().filter_map(|l| l.strip_prefix("retrain.py: ")) {
        tracing::info!(note, "retraining noted");
    }
    let stdout = String::from_utf8_lossy(stdout);
    let decision = stdout.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match (status.success(), decision) {
        (true, Some(d)) => tracing::info!(
            deployed = d["deployed"].as_bool().unwrap_or(false),
            mode = d["mode"].as_str().unwrap_or(""),
            challenger = d["challenger"]["version"].as_str().unwrap_or(""),
            reason = d["reason"].as_str().unwrap_or(""),
            seconds = took.as_secs(),
            "retraining finished"
        ),
        _ => {
            let error = failure(&String::from_utf8_lossy(stderr));
            tracing::warn!(%status, %error, seconds = took.as_secs(), "retraining failed");
        }
    }
}

/// Why a run failed, from its stderr: the job's last `error: ...` line (it
/// names the cause in one line), else the last five lines.
fn failure(stderr: &str) -> String {
    if let Some(line) = stderr.lines().rev().find(|l| l.starts_with("error: ")) {
        return line.trim_start_matches("error: ").to_string();
    }
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a process runs (a zombie, waiting for its parent, does not).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false)
    }

    #[test]
    fn a_failure_is_the_jobs_error_line_not_the_end_of_a_stack_trace() {
        let stderr = "retrain.py: reading the stored outcomes failed (...); trying again in 30 s (2 of 4)\n\
                      error: Spark failed: SparkException: Job aborted / ReadFailureException: Cassandra failure\n\
                      \tat org.apache.spark.util.LazyTry.tryT(LazyTry.scala:46)\n\t... 66 more\n";
        assert_eq!(
            failure(stderr),
            "Spark failed: SparkException: Job aborted / ReadFailureException: Cassandra failure"
        );
        assert_eq!(failure("a\nb\nc\nd\ne\nf\n"), "b | c | d | e | f");
    }

    #[tokio::test]
    async fn a_run_past_its_time_limit_is_stopped_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = dir.path().join("slow.sh");
        // A run that starts a child (as Spark starts its JVM) and never ends.
        let p = pids.display();
        std::fs::write(&script, format!("/bin/sleep 300 &\necho \"$$ $!\" > {p}.tmp && mv {p}.tmp {p}\nwait\n"))
            .unwrap();
        let job = Job {
            python: "/bin/sh".into(),
            script,
            args: Vec::new(),
            env: Vec::new(),
            every: Duration::from_millis(10),
            timeout: Duration::from_millis(1_500),
        };
        let shutdown = Shutdown::default();
        let run = tokio::spawn(job.run(shutdown.clone()));
        let started = || async {
            for _ in 0..100 {
                if let Ok(text) = std::fs::read_to_string(&pids) {
                    let ids: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
                    if ids.len() == 2 && ids.iter().all(|&p| running(p)) {
                        return ids;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the run did not start");
        };
        let first = started().await;
        std::fs::remove_file(&pids).unwrap();
        // Past the time limit: the run and its child are gone, and the
        // next run has started.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert!(first.iter().all(|&p| !running(p)), "{first:?} still running after the time limit");
        let second = started().await;
        assert_ne!(first, second);
        // Shutdown stops the run in progress the same way.
        shutdown.trigger();
        run.await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(second.iter().all(|&p| !running(p)), "{second:?} still running after shutdown");
    }

    #[tokio::test]
    async fn a_runs_output_is_kept_to_its_tail() {
        let text: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let kept = tail(Some(std::io::Cursor::new(text.clone()))).await;
        assert_eq!(kept.len(), OUTPUT_TAIL);
        assert_eq!(kept[..], text[text.len() - OUTPUT_TAIL..]);
        assert!(tail(None::<std::io::Cursor<Vec<u8>>>).await.is_empty());
    }

    #[test]
    fn a_run_gets_its_own_token_and_none_of_serves_secrets() {
        let mut config = Config::default();
        config.retrain.enabled = true;
        config.cassandra.nodes = "127.0.0.1:9042".into();
        config.cassandra.username = "fraudflight".into();
        config.retrain.script = file!().into(); // any file that exists
        let flight = "127.0.0.1:50051".parse().unwrap();
        let job = Job::from_config(&config, flight, false, Some("minted-token".into())).unwrap().unwrap();
        let names: Vec<&str> = job.env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"FRAUDFLIGHT_TOKEN") && names.contains(&"FRAUDFLIGHT_CASSANDRA_USERNAME"));
        // Whatever this process has (make test exports the Cassandra login,
        // a deployment its tokens), only what the run needs is passed on.
        let allowed = ["FRAUDFLIGHT_TOKEN", "FRAUDFLIGHT_CASSANDRA_USERNAME", "FRAUDFLIGHT_CASSANDRA_PASSWORD"];
        let ours: Vec<&&str> = names.iter().filter(|n| n.starts_with("FRAUDFLIGHT_")).collect();
        assert!(ours.iter().all(|n| allowed.contains(n) || **n == "FRAUDFLIGHT_SPARK_DRIVER_MEMORY"), "{ours:?}");
        assert!(names.iter().all(|n| INHERITED.contains(n) || allowed.contains(n)), "{names:?}");
        assert!(job.env.contains(&("FRAUDFLIGHT_TOKEN".into(), "minted-token".into())));
        assert_eq!(job.timeout, Duration::from_secs(4 * 3600));
    }
}
