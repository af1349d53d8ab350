//! fraudflight: real-time credit-card fraud scoring.
//!
//! The modules, bottom layer first; each uses only those above it in this
//! list (docs/architecture.md, "Layers"; `tests/layers.rs` checks it):
//!
//! - plumbing: [`proto`] (generated protobuf), [`retry`] (the one
//!   backoff helper and sink health), [`shutdown`] (the stop signal and task
//!   supervision), [`logging`].
//! - [`config`]: the configuration tree (TOML + `FRAUDFLIGHT_*`).
//! - [`record`]: the one definition of a transaction's fields, its Rust
//!   struct and Arrow schema, JSON decoding, conforming a client's batch,
//!   the Kaggle CSV layout.
//! - [`features`]: row validation and the derived features (pure).
//! - [`history`]: the card and merchant history features (a table shared
//!   with Spark) and the keyed state that computes them.
//! - [`security`] (tokens, TLS, card hashing) and [`kafka`] (librdkafka
//!   settings, topics, the transaction producer).
//! - [`simulate`]: the deterministic Sparkov-like transaction generator.
//! - [`score`]: the model files, the native tree evaluator, ONNX Runtime and
//!   the registry that hot-swaps models; a batch of transactions in, a batch
//!   of outcomes out.
//! - [`metrics`] (counters and histograms) and [`quality`] (live model
//!   quality per version and day, from labels; drift).
//! - [`store`]: the storage interfaces the core owns (outcome sinks,
//!   queries, the model log, live quality's book), and recent outcomes and
//!   alerts in memory.
//! - [`sink`]: Cassandra, OpenSearch / Elasticsearch, the Kafka DLQ and
//!   outcome topics, each implementing the interfaces it offers, and the
//!   list of sinks a batch is written to.
//! - [`app`]: the core every front end calls (scoring, ingest, queries,
//!   model management).
//! - front ends: [`source`] (the Kafka pipeline: poll, decode, score, write,
//!   commit after every sink acknowledged), [`flight`] (Arrow Flight, a thin
//!   adapter over [`app`]), [`http`] (dashboard, JSON API, metrics), and
//!   [`retrain`] (runs `spark-job/retrain.py` on a schedule).
//! - [`demo`] and [`serve`]: the two ways to run, each assembling the above.
//! - [`cli`]: the command line; `main.rs` only calls [`cli::run`].

pub(crate) mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod features;
pub mod flight;
pub mod history;
pub(crate) mod http;
pub mod kafka;
pub mod logging;
pub(crate) mod metrics;
pub mod proto;
pub mod quality;
pub mod record;
pub(crate) mod retrain;
pub(crate) mod retry;
pub mod score;
pub(crate) mod security;
pub(crate) mod serve;
pub(crate) mod shutdown;
pub mod simulate;
pub mod sink;
pub(crate) mod source;
pub mod store;
