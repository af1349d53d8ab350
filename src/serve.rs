//! `fraudflight serve`: the production path. Loads the model, connects the
//! sinks (Cassandra, OpenSearch / Elasticsearch, Kafka's DLQ and outcome
//! topics), serves Flight and HTTP, and runs the Kafka [`Pipeline`]. Every
//! part can be switched off in the [`Config`]; with all off it is a pure
//! Flight scoring server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::cassandra::Cassandra;
use crate::config::Config;
use crate::kafka::sink::KafkaSink;
use crate::pipeline::sinks::Sinks;
use crate::pipeline::Pipeline;
use crate::score::registry::Registry;
use crate::score::Scorer;
use crate::search::Search;
use crate::shutdown::Shutdown;
use crate::store::memory::MemoryStore;

/// A running server.
pub struct Running {
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Flight and HTTP speak TLS.
    pub tls: bool,
    pub app: Arc<App>,
    shutdown: Shutdown,
    pipeline: Option<Pipeline>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    drain: Duration,
}

impl Running {
    /// Waits for shutdown, then for the pipeline to drain and commit, then
    /// for the servers.
    pub async fn wait(self) {
        self.shutdown.wait().await;
        if let Some(pipeline) = self.pipeline {
            pipeline.join().await;
        }
        for s in self.servers {
            let _ = tokio::time::timeout(self.drain, s).await;
        }
        tracing::info!("fraudflight stopped");
    }
}

/// Starts everything the configuration enables.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let drain = Duration::from_millis(config.shutdown_timeout_ms);
    // Security settings first: a misconfiguration stops us before anything connects.
    let guard = guard(&config)?;
    let cards =
        crate::security::card::CardHasher::new(config.privacy.card_hash_key.expose()).map_err(anyhow::Error::msg)?;
    let flight_addr: SocketAddr = config.flight_addr.parse()?;
    let http_addr: SocketAddr = config.http_addr.parse()?;
    let tls = guard.tls.is_some();
    crate::security::plaintext_allowed("Flight", flight_addr, tls, config.allow_plaintext)?;
    crate::security::plaintext_allowed("HTTP", http_addr, tls, config.allow_plaintext)?;
    // Writes still retrying give up once shutdown has waited `drain` for them.
    let abandon = CancellationToken::new();
    {
        let (shutdown, abandon) = (shutdown.clone(), abandon.clone());
        tokio::spawn(async move {
            shutdown.wait().await;
            tokio::time::sleep(drain).await;
            abandon.cancel();
        });
    }

    let model_dir = crate::demo::default_model_dir(config.model_dir())?;
    let sessions = config.sessions;
    let registry = tokio::task::spawn_blocking(move || Registry::open(&model_dir, sessions)).await??;

    let sinks = connect_sinks(&config, &abandon).await?;
    let app = Arc::new(
        App::new(Scorer::new(Arc::new(registry)), MemoryStore::new(config.memory_rows, 20_000))
            .with_sinks(sinks, abandon.clone())
            .with_card_hasher(cards),
    );
    app.record_model().await;

    let flight_listener = crate::flight::bind(flight_addr).await?;
    let http_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {http_addr}: {e}"))?;
    let flight_addr = flight_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let servers = vec![
        crate::demo::supervise(
            "Flight",
            &shutdown,
            crate::flight::serve(
                app.clone(),
                flight_listener,
                shutdown.signalled(),
                crate::flight::Options { guard: guard.clone(), limits: config.limits.clone() },
            ),
        ),
        crate::demo::supervise(
            "HTTP",
            &shutdown,
            crate::http::serve(app.clone(), http_listener, shutdown.clone(), guard.clone()),
        ),
    ];

    let pipeline = if config.kafka.enabled() {
        // The configured port: stable across restarts, and unique on this
        // host once bound. Port 0 (any free port) gives no stable identity.
        let configured_port = config.flight_addr.parse::<SocketAddr>().map_or(0, |a| a.port());
        let instance_id = config.kafka.group_instance_id(configured_port);
        Some(Pipeline::start(app.clone(), &config.kafka, instance_id, drain, shutdown.clone(), abandon)?)
    } else {
        None
    };
    tracing::info!(
        flight = %flight_addr,
        http = %http_addr,
        kafka = config.kafka.enabled(),
        cassandra = config.cassandra.enabled(),
        opensearch = config.opensearch.enabled(),
        tls = tls,
        mutual_tls = guard.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        tokens = guard.tokens.enabled(),
        card_hashing = app.cards.is_some(),
        "fraudflight serve running"
    );
    if !guard.tokens.enabled() {
        tracing::warn!("no tokens configured: every Flight and HTTP caller may score, query, ingest and load models");
    }
    Ok(Running { flight_addr, http_addr, tls, app, shutdown, pipeline, servers, drain })
}

/// TLS files and tokens from the configuration, read and checked now.
fn guard(config: &Config) -> anyhow::Result<crate::security::Guard> {
    let tls = crate::security::tls::TlsFiles::load(&config.tls.cert, &config.tls.key, &config.tls.client_ca)?;
    let file = (!config.tokens.file.is_empty()).then(|| std::path::Path::new(&config.tokens.file));
    let tokens = crate::security::Tokens::load(file, &config.tokens.read_tokens(), &config.tokens.admin_tokens())?;
    Ok(crate::security::Guard { tls, tokens })
}

async fn connect_sinks(config: &Config, abandon: &CancellationToken) -> anyhow::Result<Sinks> {
    let cassandra = async {
        if !config.cassandra.enabled() {
            return Ok(None);
        }
        let c = Cassandra::connect(&config.cassandra, abandon).await?;
        tracing::info!(nodes = %config.cassandra.nodes, keyspace = %config.cassandra.keyspace, "Cassandra ready");
        anyhow::Ok(Some(Arc::new(c)))
    };
    let search = async {
        if !config.opensearch.enabled() {
            return Ok(None);
        }
        let s = Search::connect(&config.opensearch, abandon).await?;
        tracing::info!(url = %crate::security::redact_url(&config.opensearch.url), prefix = %config.opensearch.index_prefix, "search engine ready");
        anyhow::Ok(Some(Arc::new(s)))
    };
    let (cassandra, search) = tokio::try_join!(cassandra, search)?;
    let kafka = if config.kafka.enabled() {
        let k = &config.kafka;
        let scored = k.outcome_topic.then(|| k.scored_topic());
        let mut topics = vec![k.dlq_topic()];
        topics.extend(scored.clone());
        crate::kafka::ensure_topics(&k.brokers, &k.properties(), &topics, -1).await;
        Some(KafkaSink::new(&k.brokers, &k.properties(), &k.topic, k.dlq_topic(), scored)?)
    } else {
        None
    };
    Ok(Sinks { cassandra, search, kafka })
}
