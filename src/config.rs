//! Configuration of `fraudflight serve`: one TOML file (every key optional,
//! unknown keys refused by name) and `FRAUDFLIGHT_*` environment variables
//! that win over it. `fraudflight.toml` at the project root lists
//! every key with its default and meaning; a unit test keeps the two in step.
//!
//! Environment names follow the key path: `kafka.batch_max_records` is
//! `FRAUDFLIGHT_KAFKA_BATCH_MAX_RECORDS`, top-level `flight_addr` is
//! `FRAUDFLIGHT_FLIGHT_ADDR`. An empty `kafka.brokers`, `cassandra.nodes` or
//! `opensearch.url` switches that part off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "FRAUDFLIGHT_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Model directory; empty = the newest under `models/`.
    pub model: String,
    /// ONNX Runtime sessions per model.
    pub sessions: usize,
    /// Newest outcomes kept in memory, the query cache (queries are answered
    /// from it when Cassandra is off).
    pub memory_rows: usize,
    pub flight_addr: String,
    pub http_addr: String,
    /// How long shutdown may take to drain in-flight batches, ms.
    pub shutdown_timeout_ms: u64,
    /// Serve plain text on a non-loopback address (else TLS is required there).
    pub allow_plaintext: bool,
    pub tls: TlsConfig,
    pub tokens: TokensConfig,
    pub limits: LimitsConfig,
    pub privacy: PrivacyConfig,
    pub kafka: KafkaConfig,
    pub cassandra: CassandraConfig,
    pub opensearch: OpenSearchConfig,
    pub history: HistoryConfig,
    pub quality: QualityConfig,
    pub retrain: RetrainConfig,
    pub retention: RetentionConfig,
}

/// How long stored data is kept, days; 0 = for ever (docs/architecture.md,
/// "Retention"). Cassandra expires rows by the table's time to live, set
/// at start (rows written before keep the one they had); the search engine's
/// daily indices older than this are deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Outcomes: Cassandra `transactions`, `alerts`, `transaction_keys`,
    /// the search engine's daily indices.
    pub outcomes_days: u32,
    /// Labels (Cassandra `labels`).
    pub labels_days: u32,
    /// Merchant tiles (`merchant_days`): at least the longest merchant
    /// window and the label delay (38 days).
    pub merchant_days: u32,
    /// Live quality's book (`scores`); kept at least `quality.days` + 1
    /// whatever this says.
    pub scores_days: u32,
    /// Measured quality and retraining decisions (`model_quality`,
    /// `model_decisions`, the quality index).
    pub quality_days: u32,
}

impl RetentionConfig {
    /// As applied: live quality's book is kept at least as long as
    /// `quality.days` measure back, whatever `scores_days` says.
    pub fn effective(&self, quality: &QualityConfig) -> Self {
        let floor = u32::try_from(quality.days).unwrap_or(u32::MAX).saturating_add(1);
        let scores_days = if self.scores_days == 0 { 0 } else { self.scores_days.max(floor) };
        Self { scores_days, ..self.clone() }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { outcomes_days: 400, labels_days: 400, merchant_days: 60, scores_days: 60, quality_days: 400 }
    }
}

/// The card and merchant history features (docs/architecture.md, "History").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Compute history features; off = their outcome columns are null and a
    /// model that needs them is refused.
    pub enabled: bool,
    /// Cards whose recent transactions are kept in memory (least recently
    /// used first out).
    pub max_cards: usize,
    /// How long a batch from Kafka waits, at most, for the labels stream to
    /// deliver the labels its merchant risk counts (docs/architecture.md,
    /// "History"); after that the stream is reported stalled and scoring
    /// goes on. 0 = never wait.
    pub labels_wait_ms: u64,
    /// How long a labels partition read to its end must stay silent before
    /// it counts as having nothing earlier to deliver (the idleness rule of
    /// the labels watermark, docs/architecture.md, "History"). Shorter than
    /// `labels_wait_ms`, or an idle stream would stall first.
    pub labels_idle_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        // About 300 bytes a card with its recent transactions (measured:
        // 250,000 cards added ~78 MB to serve's peak RSS); 140,000 keep
        // serve under 300 MB on 1,000,000 distinct cards
        // (docs/performance.md; 150,000 did until the Kafka source's event-time
        // alignment took a few MB).
        Self { enabled: true, max_cards: 140_000, labels_wait_ms: 30_000, labels_idle_ms: 5_000 }
    }
}

/// The largest `quality.card_k`: every minute's tally keeps up to ten times
/// k cards.
pub const MAX_CARD_K: u32 = 10_000;

/// Live model quality from labels (docs/architecture.md, "Model quality").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// How often the days that changed are measured again, ms.
    pub interval_ms: u64,
    /// Days measured and shown, back from the newest transaction's day.
    pub days: usize,
    /// A day's score distribution drifts when its population stability
    /// index against the training scores is over this.
    pub psi_limit: f64,
    /// A day's fraud rate drifts when it is over this many times the
    /// training data's, or under its inverse.
    pub fraud_rate_ratio_limit: f64,
    /// Score rows kept in memory when there is no Cassandra (the demo).
    pub max_memory_rows: usize,
    /// Score rows a round reads at most, over every day, to count again the
    /// minutes that changed (Cassandra's book); what is left waits for the
    /// next round. Bounds each round's reads and CPU whatever the volume.
    pub max_rows_per_round: u64,
    /// Card precision's k: the cards analysts can check a day
    /// (`fraudflight_model_card_precision`).
    pub card_k: u32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        // About 200 bytes a row in memory: 200,000 rows keep the demo's
        // book (and a serve without Cassandra) under 40 MB.
        Self {
            interval_ms: 30_000,
            days: 30,
            psi_limit: 0.2,
            fraud_rate_ratio_limit: 2.0,
            max_memory_rows: 200_000,
            // About 2 s of reading on one core of this project's test machine.
            max_rows_per_round: 1_000_000,
            card_k: 100,
        }
    }
}

/// Retraining on a schedule: `serve` runs `spark-job/retrain.py` against
/// its own Cassandra keyspace and Flight port (docs/loop.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// Off by default: a cron line or compose's job may run it instead.
    pub enabled: bool,
    /// Time between the end of one run and the start of the next, ms.
    pub interval_ms: u64,
    /// Python with PySpark; empty = the project's `.venv/bin/python`, else
    /// `python3`.
    pub python: String,
    /// The job; empty = the project's `spark-job/retrain.py`.
    pub script: String,
    /// More arguments for it (`--days`, `--margin`, `--shadow`, ...).
    pub args: Vec<String>,
    /// Longest a run may take, ms; then it is stopped and counted failed.
    pub timeout_ms: u64,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_ms: 86_400_000,
            python: String::new(),
            script: String::new(),
            args: Vec::new(),
            timeout_ms: 4 * 3_600_000,
        }
    }
}

/// TLS on Flight and HTTP (PEM files; empty = plain text, loopback only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// Set = clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: String,
}

/// A configured secret (token, password, key): read and written like a
/// string, but its `Debug` shows only whether it is set, so a logged or
/// printed configuration never carries it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"(set)\"" })
    }
}

/// Bearer tokens; none at all = no authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// File of `<role>:<token>` or `<role>:<name>:<token>` lines (role
    /// `read`, `analyst` or `admin`).
    pub file: String,
    /// `read` tokens, comma-separated, each `<token>` or `<name>:<token>`
    /// (better: the file or the environment).
    pub read: Secret,
    /// `analyst` tokens (read and label), comma-separated.
    pub analyst: Secret,
    /// `admin` tokens, comma-separated.
    pub admin: Secret,
}

impl TokensConfig {
    fn list(text: &Secret) -> Vec<String> {
        text.expose().split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
    }

    pub fn read_tokens(&self) -> Vec<String> {
        Self::list(&self.read)
    }

    pub fn analyst_tokens(&self) -> Vec<String> {
        Self::list(&self.analyst)
    }

    pub fn admin_tokens(&self) -> Vec<String> {
        Self::list(&self.admin)
    }
}

/// Card data at rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Set = stores keep HMAC-SHA256(key, cc_num) instead of the card number.
    pub card_hash_key: Secret,
}

/// Bounds on what one client may ask of the Flight service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest Flight (gRPC) message accepted, bytes.
    pub flight_max_message_bytes: usize,
    /// Most rows in one DoExchange / DoPut batch.
    pub max_batch_rows: usize,
    /// Concurrent Flight calls (HTTP/2 streams) per connection.
    pub max_concurrent_streams: u32,
    /// How far ahead of this machine's clock a transaction's `unix_time` or
    /// a label's `reported_at` may be, seconds; later ones are refused (the
    /// DLQ, with the reason). One record dated years ahead would otherwise
    /// prune every merchant tile and win every later correction.
    pub max_future_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            flight_max_message_bytes: 64 << 20,
            max_batch_rows: 1 << 20,
            max_concurrent_streams: 64,
            // A day: record::limits::DEFAULT_MAX_FUTURE_SECS (serve's tests
            // keep the two equal; config sits below record).
            max_future_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers; empty = no Kafka source.
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// A batch closes at this many records...
    pub batch_max_records: usize,
    /// ...or this many milliseconds after its first record.
    pub batch_max_ms: u64,
    /// Batches scored or being written at once; beyond it the consumer pauses.
    pub max_in_flight_batches: usize,
    /// Larger record values go to the DLQ unread.
    pub max_record_bytes: usize,
    /// Also write every outcome, as JSON, to `<topic>.scored`.
    pub outcome_topic: bool,
    /// A member that stops heartbeating (killed, host lost) keeps its
    /// partitions this long before the group hands them to another, ms.
    /// librdkafka's default (45 s) left fraud alerts that late after every
    /// crash; the broker's allowed minimum is usually 6 s.
    pub session_timeout_ms: u64,
    /// Static group membership (`group.instance.id`): a restarted instance
    /// takes its partitions back at once, with no rebalance and no wait for
    /// the session timeout. Each instance needs its own id.
    pub static_membership: bool,
    /// The instance's id in the group; empty = `<hostname>-<flight port>`,
    /// stable across restarts and unique on a host (two servers cannot
    /// listen on one port). With `flight_addr` on port 0 there is no stable
    /// id, and membership is dynamic.
    pub instance_id: String,
    /// Any librdkafka property for the consumer and producers
    /// (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`, ...).
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CassandraConfig {
    /// Contact points, comma-separated host:port; empty = sink off.
    pub nodes: String,
    pub keyspace: String,
    /// CQL replication map used when the keyspace is created.
    pub replication: String,
    /// Writes in flight at once (all batches together).
    pub concurrency: usize,
    /// Per-request timeout, ms.
    pub request_timeout_ms: u64,
    /// Login (PasswordAuthenticator); empty = none.
    pub username: String,
    pub password: Secret,
    /// PEM file of the CA that signed the nodes' certificates; set = TLS.
    pub tls_ca: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenSearchConfig {
    /// OpenSearch or Elasticsearch URL; empty = sink off.
    pub url: String,
    /// Daily indices are `<prefix>-YYYY.MM.DD`; the template matches `<prefix>-*`.
    pub index_prefix: String,
    /// The index of live model quality (a document per model version and
    /// UTC day), for the "Model quality" dashboard. Outside `<prefix>-*`.
    pub quality_index: String,
    /// Documents per bulk request.
    pub bulk_max_docs: usize,
    /// Bulk requests in flight at once.
    pub bulk_concurrency: usize,
    /// Per-request timeout, ms.
    pub request_timeout_ms: u64,
    /// HTTP basic auth; empty = none (`user:password@` in the URL also works).
    pub username: String,
    pub password: Secret,
    /// PEM file of a CA to trust for an `https://` URL, besides the system's.
    pub tls_ca: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model: String::new(),
            sessions: 2,
            memory_rows: 100_000,
            flight_addr: "127.0.0.1:50051".into(),
            http_addr: "127.0.0.1:8080".into(),
            shutdown_timeout_ms: 15_000,
            allow_plaintext: false,
            tls: TlsConfig::default(),
            tokens: TokensConfig::default(),
            limits: LimitsConfig::default(),
            privacy: PrivacyConfig::default(),
            kafka: KafkaConfig::default(),
            cassandra: CassandraConfig::default(),
            opensearch: OpenSearchConfig::default(),
            history: HistoryConfig::default(),
            quality: QualityConfig::default(),
            retrain: RetrainConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "transactions".into(),
            group: "fraudflight".into(),
            // Measured (docs/performance.md): scoring reaches its plateau by
            // 1-4k rows, and at 10 ms a quiet stream still sees low latency.
            batch_max_records: 4_096,
            batch_max_ms: 10,
            max_in_flight_batches: 8,
            max_record_bytes: 64 << 10,
            outcome_topic: false,
            session_timeout_ms: 10_000,
            static_membership: true,
            instance_id: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl Default for CassandraConfig {
    fn default() -> Self {
        Self {
            nodes: "127.0.0.1:9042".into(),
            keyspace: "fraudflight".into(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            concurrency: 256,
            request_timeout_ms: 5_000,
            username: String::new(),
            password: Secret::default(),
            tls_ca: String::new(),
        }
    }
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9200".into(),
            index_prefix: "fraudflight-transactions".into(),
            quality_index: "fraudflight-model-quality".into(),
            bulk_max_docs: 5_000,
            bulk_concurrency: 2,
            request_timeout_ms: 60_000,
            username: String::new(),
            password: Secret::default(),
            tls_ca: String::new(),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env { name: String, value: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// The file's settings (defaults if `path` is None), then the
    /// environment's overrides, validated.
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?
            }
            None => Self::default(),
        };
        let config = config.with_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; unknown keys are errors that name the key and
    /// suggest the closest known one.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let message = e.to_string().trim_end().to_string();
            match suggestion(&message) {
                Some(known) => format!("{message}\ndid you mean `{known}`?"),
                None => message,
            }
        })
    }

    /// Applies `FRAUDFLIGHT_<SECTION>_<KEY>` overrides to every scalar key.
    fn with_env(self, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut tree = toml::Value::try_from(&self).expect("config serializes");
        let table = tree.as_table_mut().expect("config is a table");
        apply_env(table, ENV_PREFIX, &env)?;
        tree.try_into().map_err(|e: toml::de::Error| ConfigError::Env {
            name: ENV_PREFIX.into(),
            value: String::new(),
            message: e.to_string(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("sessions", self.sessions),
            ("memory_rows", self.memory_rows),
            ("kafka.batch_max_records", self.kafka.batch_max_records),
            ("kafka.max_in_flight_batches", self.kafka.max_in_flight_batches),
            ("kafka.max_record_bytes", self.kafka.max_record_bytes),
            ("cassandra.concurrency", self.cassandra.concurrency),
            ("opensearch.bulk_max_docs", self.opensearch.bulk_max_docs),
            ("opensearch.bulk_concurrency", self.opensearch.bulk_concurrency),
            ("limits.flight_max_message_bytes", self.limits.flight_max_message_bytes),
            ("limits.max_batch_rows", self.limits.max_batch_rows),
            ("limits.max_concurrent_streams", self.limits.max_concurrent_streams as usize),
            ("history.max_cards", self.history.max_cards),
            ("quality.interval_ms", self.quality.interval_ms as usize),
            ("quality.days", self.quality.days),
            ("quality.max_memory_rows", self.quality.max_memory_rows),
            ("quality.card_k", self.quality.card_k as usize),
            ("retrain.interval_ms", self.retrain.interval_ms as usize),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid { key, message: "must be at least 1".into() });
            }
        }
        if self.quality.card_k > MAX_CARD_K {
            return Err(ConfigError::Invalid {
                key: "quality.card_k",
                message: format!("must be at most {MAX_CARD_K}: every minute's tally keeps up to ten times k cards"),
            });
        }
        if self.quality.psi_limit.is_nan() || self.quality.psi_limit <= 0.0 {
            return Err(ConfigError::Invalid { key: "quality.psi_limit", message: "must be above 0".into() });
        }
        if self.quality.fraud_rate_ratio_limit.is_nan() || self.quality.fraud_rate_ratio_limit <= 1.0 {
            return Err(ConfigError::Invalid {
                key: "quality.fraud_rate_ratio_limit",
                message: "must be above 1 (a ratio either way)".into(),
            });
        }
        // An idle labels partition must count as caught up before a batch
        // gives up waiting for it, or every quiet night would be a stall.
        if self.history.labels_wait_ms > 0 && self.history.labels_idle_ms >= self.history.labels_wait_ms {
            return Err(ConfigError::Invalid {
                key: "history.labels_idle_ms",
                message: format!("must be below history.labels_wait_ms ({})", self.history.labels_wait_ms),
            });
        }
        // A card evicted while a batch that changed it is still being
        // stored would be reloaded without that change: the cache must
        // outlast every batch in flight (docs/architecture.md, "History").
        let in_flight = self.kafka.batch_max_records.saturating_mul(self.kafka.max_in_flight_batches + 1);
        if self.history.enabled && self.cassandra.enabled() && self.history.max_cards < in_flight {
            return Err(ConfigError::Invalid {
                key: "history.max_cards",
                message: format!(
                    "{} is below kafka.batch_max_records x (kafka.max_in_flight_batches + 1) = {in_flight}: \
                     a card could leave the cache before its batch is stored",
                    self.history.max_cards
                ),
            });
        }
        // Expiring what the features or live quality still read would
        // change them: the floors are what they read.
        // (`scores` is kept at least `quality.days` + 1 whatever it says:
        // serve raises it, see `RetentionConfig::effective`.)
        let floors = [("retention.merchant_days", self.retention.merchant_days, 38)];
        for (key, days, floor) in floors {
            if days != 0 && days < floor {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{days} days is below the {floor} days that are still read (0 = for ever)"),
                });
            }
        }
        for (key, addr) in [("flight_addr", &self.flight_addr), ("http_addr", &self.http_addr)] {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| ConfigError::Invalid { key, message: format!("{addr:?} is not host:port ({e})") })?;
        }
        // The keyspace is interpolated into CQL (CREATE / SELECT cannot bind
        // it), so it is checked whatever else is on: a Flight-only server
        // with Cassandra on uses it too.
        let keyspace = &self.cassandra.keyspace;
        if keyspace.is_empty()
            || keyspace.len() > 48
            || !keyspace.starts_with(|c: char| c.is_ascii_alphabetic())
            || !keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::Invalid {
                key: "cassandra.keyspace",
                message: format!(
                    "{keyspace:?}: a letter, then letters, digits and _ only, at most 48 characters (Cassandra's rule)"
                ),
            });
        }
        if !self.kafka.enabled() {
            return Ok(());
        }
        if self.kafka.topic.is_empty() {
            return Err(ConfigError::Invalid { key: "kafka.topic", message: "must not be empty".into() });
        }
        if self.kafka.group.is_empty() {
            return Err(ConfigError::Invalid { key: "kafka.group", message: "must not be empty".into() });
        }
        if !(1_000..=3_600_000).contains(&self.kafka.session_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "kafka.session_timeout_ms",
                message: format!("{} ms: between 1000 and 3600000", self.kafka.session_timeout_ms),
            });
        }
        Ok(())
    }

    /// The configuration with every secret replaced by "(set)", for
    /// printing (`--check-config`).
    pub fn redacted(&self) -> Self {
        let mut shown = self.clone();
        // librdkafka properties may hold passwords.
        for v in shown.kafka.properties.values_mut() {
            *v = "(set)".into();
        }
        let secrets = [
            &mut shown.tokens.read,
            &mut shown.tokens.admin,
            &mut shown.privacy.card_hash_key,
            &mut shown.cassandra.password,
            &mut shown.opensearch.password,
        ];
        for v in secrets {
            if !v.is_empty() {
                *v = Secret::new("(set)");
            }
        }
        shown.opensearch.url = crate::config::redact_url(&shown.opensearch.url);
        shown
    }

    /// The model directory, or None for "the newest under models/".
    pub fn model_dir(&self) -> Option<PathBuf> {
        (!self.model.is_empty()).then(|| PathBuf::from(&self.model))
    }
}

impl KafkaConfig {
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    pub fn scored_topic(&self) -> String {
        format!("{}.scored", self.topic)
    }

    /// Confirmed outcomes (docs/architecture.md, "History").
    pub fn labels_topic(&self) -> String {
        format!("{}.labels", self.topic)
    }

    pub fn labels_dlq_topic(&self) -> String {
        format!("{}.labels.dlq", self.topic)
    }

    /// The `group.instance.id` of a server whose Flight port is
    /// `flight_port`, or None for dynamic membership.
    pub fn group_instance_id(&self, flight_port: u16) -> Option<String> {
        if !self.static_membership {
            return None;
        }
        if !self.instance_id.is_empty() {
            return Some(self.instance_id.clone());
        }
        if flight_port == 0 {
            return None;
        }
        Some(format!("{}-{flight_port}", hostname()))
    }

    pub fn properties(&self) -> Vec<(String, String)> {
        self.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl CassandraConfig {
    pub fn enabled(&self) -> bool {
        !self.nodes.trim().is_empty()
    }

    pub fn node_list(&self) -> Vec<String> {
        self.nodes.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect()
    }
}

impl OpenSearchConfig {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// Parses `key=value` command-line properties.
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not a librdkafka property of the form key=value")),
    }
}

/// `url` with any password in it replaced, for logs and error messages
/// (`https://user:secret@host` -> `https://user:(redacted)@host`). Text that
/// is not a URL is returned as is when it holds no `@`, else withheld.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("(redacted)"));
            }
            parsed.to_string().trim_end_matches('/').to_string()
        }
        Err(_) if !url.contains('@') => url.to_string(),
        Err(_) => "(URL not shown: unparsable, may hold a password)".to_string(),
    }
}

/// This machine's name (Linux), or "localhost".
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" message, the
/// expected name closest to `x` (if close enough to be a likely typo).
fn suggestion(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (strsim::damerau_levenshtein(unknown, known), known))
        .filter(|(distance, known)| *distance <= 3.max(known.len() / 3))
        .min()
        .map(|(_, known)| known.to_string())
}

fn apply_env(table: &mut toml::Table, prefix: &str, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let name = format!("{prefix}{}", key.to_ascii_uppercase());
        match value {
            toml::Value::Table(inner) if key == "properties" => {
                // librdkafka properties: FRAUDFLIGHT_KAFKA_PROPERTIES="k=v;k2=v2".
                if let Some(text) = env(&name) {
                    for pair in text.split(';').filter(|p| !p.trim().is_empty()) {
                        let (k, v) = crate::config::parse_property(pair).map_err(|message| ConfigError::Env {
                            name: name.clone(),
                            value: "(not shown: may hold secrets)".into(),
                            message,
                        })?;
                        inner.insert(k, toml::Value::String(v));
                    }
                }
            }
            toml::Value::Table(inner) => apply_env(inner, &format!("{name}_"), env)?,
            scalar => {
                if let Some(text) = env(&name) {
                    *scalar = parse_like(scalar, &text).map_err(|message| ConfigError::Env {
                        name: name.clone(),
                        value: text.clone(),
                        message,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Parses an environment value as the type the key already has.
fn parse_like(current: &toml::Value, text: &str) -> Result<toml::Value, String> {
    Ok(match current {
        toml::Value::String(_) => toml::Value::String(text.to_string()),
        toml::Value::Integer(_) => {
            toml::Value::Integer(text.trim().parse().map_err(|_| format!("{text:?} is not an integer"))?)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(match text.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("{text:?} is not true/false")),
        }),
        toml::Value::Float(_) => {
            toml::Value::Float(text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?)
        }
        toml::Value::Array(_) => {
            // An array as TOML (or JSON) writes it: ["--days", "30"].
            let parsed: toml::Table = toml::from_str(&format!("v = {text}"))
                .map_err(|_| format!("{text:?} is not an array like [\"a\", \"b\"]"))?;
            match parsed.get("v") {
                Some(v @ toml::Value::Array(_)) => v.clone(),
                _ => return Err(format!("{text:?} is not an array like [\"a\", \"b\"]")),
            }
        }
        other => return Err(format!("cannot be set from the environment (a {})", other.type_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = include_str!("../fraudflight.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn arrays_come_from_the_environment_as_toml_or_json() {
        let env = |name: &str| (name == "FRAUDFLIGHT_RETRAIN_ARGS").then(|| r#"["--days", "14"]"#.to_string());
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.retrain.args, ["--days", "14"]);
        let bad = |name: &str| (name == "FRAUDFLIGHT_RETRAIN_ARGS").then(|| "--days 14".to_string());
        let err = Config::load(None, bad).unwrap_err().to_string();
        assert!(err.contains("FRAUDFLIGHT_RETRAIN_ARGS") && err.contains("not an array"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[kafka]\nbatch_max_recrods = 5\n").unwrap_err();
        assert!(err.contains("batch_max_recrods"), "{err}");
        assert!(err.ends_with("did you mean `batch_max_records`?"), "{err}");
        let err = Config::parse("[cassandra]\nnodez = \"x\"\n").unwrap_err();
        assert!(err.ends_with("did you mean `nodes`?"), "{err}");
        let err = Config::parse("[opensearch]\ncompletely_different = 1\n").unwrap_err();
        assert!(!err.contains("did you mean"), "no suggestion for a key unlike any: {err}");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "[kafka]\ntopic = \"from-file\"\nbatch_max_ms = 5\n").unwrap();
        let env = |name: &str| match name {
            "FRAUDFLIGHT_KAFKA_TOPIC" => Some("from-env".to_string()),
            "FRAUDFLIGHT_OPENSEARCH_URL" => Some(String::new()),
            "FRAUDFLIGHT_KAFKA_OUTCOME_TOPIC" => Some("true".to_string()),
            "FRAUDFLIGHT_KAFKA_PROPERTIES" => Some("security.protocol=SASL_PLAINTEXT;sasl.mechanism=PLAIN".into()),
            _ => None,
        };
        let config = Config::load(Some(&path), env).unwrap();
        assert_eq!(config.kafka.topic, "from-env");
        assert_eq!(config.kafka.batch_max_ms, 5);
        assert!(config.kafka.outcome_topic);
        assert!(!config.opensearch.enabled());
        assert_eq!(config.kafka.properties["sasl.mechanism"], "PLAIN");
    }

    #[test]
    fn bad_values_name_the_variable_or_key() {
        let env = |name: &str| (name == "FRAUDFLIGHT_KAFKA_BATCH_MAX_MS").then(|| "soon".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("FRAUDFLIGHT_KAFKA_BATCH_MAX_MS") && err.contains("not an integer"), "{err}");
        let env = |name: &str| (name == "FRAUDFLIGHT_KAFKA_BATCH_MAX_RECORDS").then(|| "0".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("kafka.batch_max_records"), "{err}");
        for (k, fine) in [("0", false), ("1", true), ("10000", true), ("10001", false)] {
            let env = |name: &str| (name == "FRAUDFLIGHT_QUALITY_CARD_K").then(|| k.to_string());
            match Config::load(None, env) {
                Ok(config) => assert!(fine && config.quality.card_k.to_string() == k, "card_k {k} accepted"),
                Err(e) => assert!(!fine && e.to_string().contains("quality.card_k"), "card_k {k}: {e}"),
            }
        }
        assert!(Config::load(None, no_env).is_ok());
    }

    #[test]
    fn each_instance_has_a_stable_id_in_the_group_unless_told_otherwise() {
        let kafka = KafkaConfig::default();
        let id = kafka.group_instance_id(50051).unwrap();
        assert!(id.ends_with("-50051") && id.len() > "-50051".len(), "{id}");
        assert_eq!(kafka.group_instance_id(50051), Some(id), "the same after a restart");
        assert_ne!(kafka.group_instance_id(50052), kafka.group_instance_id(50051), "unique on a host");
        assert_eq!(kafka.group_instance_id(0), None, "no stable id on a port chosen at random");
        let named = KafkaConfig { instance_id: "scorer-3".into(), ..KafkaConfig::default() };
        assert_eq!(named.group_instance_id(0).as_deref(), Some("scorer-3"));
        let dynamic = KafkaConfig { static_membership: false, ..named };
        assert_eq!(dynamic.group_instance_id(50051), None);
    }

    #[test]
    fn the_keyspace_is_checked_even_without_kafka() {
        // A Flight-only server (no Kafka) with Cassandra on: the keyspace
        // still reaches CQL, so a value that would inject into it is refused.
        for bad in ["fraudflight; DROP KEYSPACE system_auth", "", "1abc", "a-b"] {
            let env = |name: &str| match name {
                "FRAUDFLIGHT_KAFKA_BROKERS" => Some(String::new()),
                "FRAUDFLIGHT_CASSANDRA_KEYSPACE" => Some(bad.to_string()),
                _ => None,
            };
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.contains("cassandra.keyspace"), "{bad:?}: {err}");
        }
        let env = |name: &str| match name {
            "FRAUDFLIGHT_KAFKA_BROKERS" => Some(String::new()),
            "FRAUDFLIGHT_CASSANDRA_KEYSPACE" => Some("fraud_2".to_string()),
            _ => None,
        };
        assert_eq!(Config::load(None, env).unwrap().cassandra.keyspace, "fraud_2");
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact_url("https://ops:s3cret@search:9200"), "https://ops:(redacted)@search:9200");
        assert_eq!(redact_url("http://127.0.0.1:9200"), "http://127.0.0.1:9200");
        assert_eq!(redact_url("http://ops@search"), "http://ops@search");
        assert_eq!(redact_url("not a url"), "not a url");
        assert!(!redact_url("ht!tp://ops:s3cret@x").contains("s3cret"));
    }
}
