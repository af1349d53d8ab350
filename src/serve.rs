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
use crate::config::Config;
use crate::score::registry::Registry;
use crate::score::Scorer;
use crate::shutdown::Shutdown;
use crate::sink::cassandra::Cassandra;
use crate::sink::kafka::KafkaSink;
use crate::sink::search::Search;
use crate::sink::Sinks;
use crate::source::Pipeline;
use crate::store::memory::MemoryStore;

/// A running server.
pub struct Running {
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Flight and HTTP speak TLS.
    pub tls: bool,
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

/// Why `serve` could not start; each names the setting or service at fault.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] crate::security::tls::TlsError),
    #[error(transparent)]
    Tokens(#[from] crate::security::tokens::TokenError),
    #[error("privacy.card_hash_key: {0}")]
    CardHashKey(String),
    #[error("{key}: {value:?} is not host:port")]
    Address { key: &'static str, value: String },
    #[error(transparent)]
    Plaintext(#[from] crate::security::PlaintextRefused),
    #[error(transparent)]
    Model(#[from] crate::score::model::ModelError),
    #[error("loading the model failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(
        "the model line-up saved for {service:?} (Cassandra model_lineup) cannot be restored: {source}; \
         to start from the configured model instead, delete that row"
    )]
    Restore { service: String, source: crate::score::model::ModelError },
    #[error(transparent)]
    Cassandra(#[from] crate::sink::cassandra::CassandraError),
    #[error(transparent)]
    Search(#[from] crate::sink::search::SearchError),
    #[error("Kafka producer (DLQ / outcome topic): {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Source(#[from] crate::source::kafka::SourceError),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Retrain(#[from] crate::retrain::RetrainError),
}

/// Starts everything the configuration enables.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, ServeError> {
    let drain = Duration::from_millis(config.shutdown_timeout_ms);
    // Security settings first: a misconfiguration stops us before anything connects.
    let mut guard = guard(&config)?;
    // The scheduled retraining deploys with an admin token of its own.
    let retrain_token =
        (config.retrain.enabled && guard.tokens.enabled()).then(|| guard.tokens.add_internal("retrain"));
    let cards = crate::security::card::CardHasher::new(config.privacy.card_hash_key.expose())
        .map_err(ServeError::CardHashKey)?;
    let address = |key: &'static str, value: &str| {
        value.parse::<SocketAddr>().map_err(|_| ServeError::Address { key, value: value.to_string() })
    };
    let flight_addr = address("flight_addr", &config.flight_addr)?;
    let http_addr = address("http_addr", &config.http_addr)?;
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

    let (cassandra, search, kafka) = connect_sinks(&config, &abandon).await?;
    if let Some(cassandra) = &cassandra {
        cassandra.apply_retention(&config.retention.effective(&config.quality)).await?;
    }
    let (registry, configured) = registry(&config, cassandra.as_deref()).await?;
    // With Cassandra, the history reloads what it does not hold from there
    // and shares merchant tiles with every instance.
    let store = cassandra.clone().map(|c| {
        Arc::new(crate::sink::cassandra::history::CassandraHistory::new(c, cards.clone(), abandon.clone()))
            as Arc<dyn crate::history::Store>
    });
    let app = Arc::new(
        App::new(scorer(registry, &config, store), MemoryStore::new(config.memory_rows, 20_000))
            // Each store in every role it plays (docs/architecture.md, "Storage").
            .with_sinks(Sinks::new(cassandra, search, kafka), abandon.clone())
            .with_quality(config.quality.clone())
            .with_labels_topic(config.kafka.enabled().then(|| config.kafka.labels_topic()))
            .with_lineup_service(&config.kafka.group, &configured)
            .with_card_hasher(cards),
    );
    app.record_models().await;

    let listen = |what, addr| move |source| ServeError::Listen { what, addr, source };
    let flight_listener = tokio::net::TcpListener::bind(flight_addr).await.map_err(listen("Flight", flight_addr))?;
    let http_listener = tokio::net::TcpListener::bind(http_addr).await.map_err(listen("HTTP", http_addr))?;
    let flight_addr = flight_listener.local_addr().map_err(listen("Flight", flight_addr))?;
    let http_addr = http_listener.local_addr().map_err(listen("HTTP", http_addr))?;
    let retraining = crate::retrain::Job::from_config(&config, flight_addr, tls, retrain_token)?;
    let mut servers = vec![
        crate::shutdown::supervise(
            "Flight",
            &shutdown,
            crate::flight::serve(
                app.clone(),
                flight_listener,
                shutdown.signalled(),
                crate::flight::Options { guard: guard.clone(), limits: config.limits.clone() },
            ),
        ),
        crate::shutdown::supervise(
            "HTTP",
            &shutdown,
            crate::http::serve(app.clone(), http_listener, shutdown.clone(), guard.clone()),
        ),
        tokio::spawn(app.clone().run_quality(shutdown.clone())),
        tokio::spawn(app.clone().run_retention(config.retention.effective(&config.quality), shutdown.clone())),
    ];
    if let Some(job) = retraining {
        tracing::info!(every_ms = job.every.as_millis() as u64, script = %job.script.display(), "retraining scheduled");
        servers.push(tokio::spawn(job.run(shutdown.clone())));
    }

    let pipeline = if config.kafka.enabled() {
        // The configured port: stable across restarts, and unique on this
        // host once bound. Port 0 (any free port) gives no stable identity.
        let configured_port = config.flight_addr.parse::<SocketAddr>().map_or(0, |a| a.port());
        let instance_id = config.kafka.group_instance_id(configured_port);
        let labels_wait = crate::source::LabelsWait {
            max: Duration::from_millis(config.history.labels_wait_ms),
            idle: Duration::from_millis(config.history.labels_idle_ms),
        };
        Some(Pipeline::start(app.clone(), &config.kafka, instance_id, drain, labels_wait, shutdown.clone(), abandon)?)
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
        card_hashing = app.card_hashing(),
        "fraudflight serve running"
    );
    if !guard.tokens.enabled() {
        tracing::warn!("no tokens configured: every Flight and HTTP caller may score, query, ingest and load models");
    }
    Ok(Running { flight_addr, http_addr, tls, shutdown, pipeline, servers, drain })
}

/// The models to serve, and the version `serve` is configured to start
/// with (`model`, else the newest under `models/`): the line-up saved in
/// Cassandra for this service (the Kafka group) when it was saved under
/// the same configuration, so that a restart keeps what was promoted,
/// rolled back or deployed; else the configured model.
async fn registry(
    config: &Config,
    cassandra: Option<&crate::sink::cassandra::Cassandra>,
) -> Result<(Registry, String), ServeError> {
    let sessions = config.sessions;
    let model_dir = crate::score::registry::model_dir_or_newest(config.model_dir())?;
    let configured = crate::score::model::ModelFiles::read_dir(&model_dir)
        .and_then(|f| crate::score::model::ModelMeta::parse(&f.json))?
        .version;
    if let Some(cassandra) = cassandra {
        if let Some(saved) = cassandra.saved_lineup(&config.kafka.group, &configured).await? {
            let restored = tokio::task::spawn_blocking(move || Registry::restore(&saved, sessions)).await?;
            let registry =
                restored.map_err(|e| ServeError::Restore { service: config.kafka.group.clone(), source: e })?;
            return Ok((registry, configured));
        }
    }
    let registry = tokio::task::spawn_blocking(move || Registry::open(&model_dir, sessions)).await??;
    Ok((registry, configured))
}

/// TLS files and tokens from the configuration, read and checked now.
fn guard(config: &Config) -> Result<crate::security::Guard, ServeError> {
    let tls = crate::security::tls::TlsFiles::load(&config.tls.cert, &config.tls.key, &config.tls.client_ca)?;
    let file = (!config.tokens.file.is_empty()).then(|| std::path::Path::new(&config.tokens.file));
    let tokens = crate::security::Tokens::load(
        file,
        &config.tokens.read_tokens(),
        &config.tokens.analyst_tokens(),
        &config.tokens.admin_tokens(),
    )?;
    Ok(crate::security::Guard { tls, tokens })
}

/// The configured stores, connected, with their schemas in place.
type Connected = (Option<Arc<Cassandra>>, Option<Arc<Search>>, Option<KafkaSink>);

async fn connect_sinks(config: &Config, abandon: &CancellationToken) -> Result<Connected, ServeError> {
    let cassandra = async {
        if !config.cassandra.enabled() {
            return Ok(None);
        }
        let c = Cassandra::connect(&config.cassandra, abandon).await?.with_merchant_days(config.history.enabled);
        tracing::info!(nodes = %config.cassandra.nodes, keyspace = %config.cassandra.keyspace, "Cassandra ready");
        Ok::<_, ServeError>(Some(Arc::new(c)))
    };
    let search = async {
        if !config.opensearch.enabled() {
            return Ok(None);
        }
        let s = Search::connect(&config.opensearch, abandon).await?;
        tracing::info!(url = %crate::config::redact_url(&config.opensearch.url), prefix = %config.opensearch.index_prefix, "search engine ready");
        Ok::<_, ServeError>(Some(Arc::new(s)))
    };
    let (cassandra, search) = tokio::try_join!(cassandra, search)?;
    let kafka = if config.kafka.enabled() {
        let k = &config.kafka;
        let scored = k.outcome_topic.then(|| k.scored_topic());
        let mut topics = vec![k.dlq_topic(), k.labels_topic(), k.labels_dlq_topic()];
        topics.extend(scored.clone());
        crate::kafka::ensure_topics(&k.brokers, &k.properties(), &topics, -1).await;
        Some(KafkaSink::new(&k.brokers, &k.properties(), &k.topic, k.dlq_topic(), scored)?)
    } else {
        None
    };
    Ok((cassandra, search, kafka))
}

/// The scorer, with history as configured (over `store` when there is one).
fn scorer(registry: Registry, config: &Config, store: Option<Arc<dyn crate::history::Store>>) -> Scorer {
    use crate::history::History;
    let history = &config.history;
    let bound = crate::record::limits::TimeBound::new(config.limits.max_future_secs);
    let scorer = Scorer::new(Arc::new(registry)).with_time_bound(bound);
    match (std::num::NonZeroUsize::new(history.max_cards), store) {
        (Some(max_cards), Some(store)) if history.enabled => {
            scorer.with_history(Arc::new(History::with_store(max_cards, store)))
        }
        (Some(max_cards), None) if history.enabled => scorer.with_history(Arc::new(History::new(max_cards))),
        _ => scorer,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn live_qualitys_book_is_kept_as_long_as_it_is_measured() {
        let mut config = crate::config::Config::default();
        config.quality.days = 120;
        assert_eq!(config.retention.effective(&config.quality).scores_days, 121);
        config.retention.scores_days = 0;
        assert_eq!(config.retention.effective(&config.quality).scores_days, 0, "for ever stays for ever");
    }

    #[test]
    fn the_configured_time_bound_defaults_to_the_records_own() {
        let configured = crate::config::Config::default().limits.max_future_secs;
        assert_eq!(configured as i64, crate::record::limits::DEFAULT_MAX_FUTURE_SECS);
    }
}
