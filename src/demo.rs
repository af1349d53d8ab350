//! The embedded default: built-in simulator -> scorer -> in-memory store,
//! with Flight and HTTP in front. No Kafka, Cassandra or OpenSearch needed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::QualityConfig;
use crate::history::History;
use crate::history::LabelRecord;
use crate::record::TransactionBatchBuilder;
use crate::score::registry::Registry;
use crate::score::Scorer;
use crate::shutdown::Shutdown;
use crate::simulate::labels::Reporter;
use crate::simulate::{SimConfig, Simulator};
use crate::store::memory::MemoryStore;

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub model_dir: PathBuf,
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Simulated transactions per second; 0 = no simulator.
    pub rate: f64,
    pub seed: u64,
    /// The fraud the simulator injects.
    pub fraud: crate::simulate::FraudModel,
    /// ONNX Runtime sessions (scoring threads) per model.
    pub sessions: usize,
}

/// A running demo: where it listens, and how to stop it.
pub struct Running {
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub app: Arc<App>,
    pub shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops every task and waits for them.
    pub async fn stop(self) {
        self.shutdown.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the shutdown signal, then for the tasks to finish.
    pub async fn wait(self) {
        self.shutdown.wait().await;
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Model(#[from] crate::score::model::ModelError),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("loading the model failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The demo measures quality often: its book is small and in memory.
const DEMO_QUALITY_INTERVAL_MS: u64 = 5_000;

/// Cards the demo remembers: more than its simulator's population.
const DEMO_MAX_CARDS: usize = 1_000_000;

/// Loads the model, binds both ports and starts every task.
pub async fn start(config: DemoConfig) -> Result<Running, DemoError> {
    let dir = config.model_dir.clone();
    let sessions = config.sessions;
    let registry = tokio::task::spawn_blocking(move || Registry::open(&dir, sessions)).await??;
    // The demo keeps every card's history in memory.
    let history = Arc::new(History::new(std::num::NonZeroUsize::new(DEMO_MAX_CARDS).expect("nonzero")));
    let scorer = Scorer::new(Arc::new(registry)).with_history(history);
    let app = Arc::new(
        App::new(scorer, MemoryStore::new(200_000, 20_000))
            .with_quality(QualityConfig { interval_ms: DEMO_QUALITY_INTERVAL_MS, ..QualityConfig::default() }),
    );
    let shutdown = Shutdown::default();

    let listen = |what, addr| move |source| DemoError::Listen { what, addr, source };
    let flight_listener =
        tokio::net::TcpListener::bind(config.flight_addr).await.map_err(listen("Flight", config.flight_addr))?;
    let http_listener =
        tokio::net::TcpListener::bind(config.http_addr).await.map_err(listen("HTTP", config.http_addr))?;
    let flight_addr = flight_listener.local_addr().map_err(listen("Flight", config.flight_addr))?;
    let http_addr = http_listener.local_addr().map_err(listen("HTTP", config.http_addr))?;

    let mut tasks = vec![
        crate::shutdown::supervise(
            "Flight",
            &shutdown,
            crate::flight::serve(app.clone(), flight_listener, shutdown.signalled(), Default::default()),
        ),
        crate::shutdown::supervise(
            "HTTP",
            &shutdown,
            crate::http::serve(app.clone(), http_listener, shutdown.clone(), Default::default()),
        ),
        tokio::spawn(app.clone().run_quality(shutdown.clone())),
    ];
    if config.rate > 0.0 {
        let sim = Simulator::new(SimConfig { seed: config.seed, fraud: config.fraud, ..SimConfig::default() });
        let labels = Reporter::new(config.seed);
        tasks.push(tokio::spawn(simulate(app.clone(), sim, labels, config.rate, shutdown.clone())));
    }
    tracing::info!(flight = %flight_addr, http = %http_addr, rate = config.rate, "fraudflight demo running");
    Ok(Running { flight_addr, http_addr, app, shutdown, tasks })
}

/// Feeds simulated transactions at `rate` per second, in small batches,
/// and the frauds' labels as the simulated clock passes their report
/// times (so the demo's merchant risk fills as in `serve` with
/// `<topic>.labels`).
async fn simulate(app: Arc<App>, mut sim: Simulator, mut labels: Reporter, rate: f64, shutdown: Shutdown) {
    const TICK: Duration = Duration::from_millis(100);
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0;
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait() => return,
        }
        let now = tokio::time::Instant::now();
        // At rates beyond what the machine scores, run flat out in 64k batches
        // rather than letting the backlog (and the next batch) grow.
        owed = (owed + rate * now.duration_since(last).as_secs_f64()).min(65_536.0);
        last = now;
        let n = owed.floor() as usize;
        if n == 0 {
            continue;
        }
        owed -= n as f64;
        let mut builder = TransactionBatchBuilder::with_capacity(n);
        let mut due = Vec::new();
        for t in sim.by_ref().take(n) {
            due.extend(labels.observe(&t));
            builder.append(&t);
        }
        if !due.is_empty() {
            let due: Vec<LabelRecord> = due
                .into_iter()
                .map(|r| LabelRecord {
                    trans_num: r.trans_num,
                    cc_num: r.cc_num,
                    is_fraud: true,
                    reported_at: Some(r.reported_at),
                    decided_by: None,
                })
                .collect();
            if let Err(e) = app.store_labels(&due, crate::metrics::unix_ms(), false).await {
                tracing::error!(error = %e, "applying simulated labels failed");
            }
        }
        let batch = builder.finish();
        let created = crate::metrics::unix_ms();
        let app = app.clone();
        match tokio::task::spawn_blocking(move || app.ingest(&batch, created)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "scoring simulated batch failed"),
            Err(e) => tracing::error!(error = %e, "scoring task panicked"),
        }
    }
}
