//! fraudflight: real-time credit-card fraud scoring.
//!
//! The map (DESIGN.md has the contracts):
//!
//! - [`record`]: the one definition of a transaction's fields, its Rust struct
//!   and its Arrow schema; JSON decoding of a record.
//! - [`conform`]: makes any client's Arrow batch fit that schema, or says
//!   which column does not.
//! - [`score`]: validation and derived features, the ONNX model and the
//!   registry that hot-swaps it; turns a batch of transactions into a batch of
//!   outcomes.
//! - [`store`]: the in-memory store of recent outcomes and alerts.
//! - [`metrics`]: the live counters and histograms (summary, live view,
//!   Prometheus).
//! - [`app`]: the core every front end calls (scoring, ingest, queries, model
//!   management).
//! - [`flight`]: the Arrow Flight service, a thin adapter over [`app`].
//! - [`http`]: status page and JSON API.
//! - [`demo`]: the embedded default, simulator -> scorer -> store, with
//!   Flight and HTTP.
//! - [`simulate`]: the deterministic Sparkov-like transaction generator and
//!   its CSV / Parquet outputs; [`replay`] reads Kaggle-layout CSV files;
//!   [`kafka`] writes transactions to a topic.
//! - [`serve`]: the production path, configured by [`config`]: the Kafka
//!   [`pipeline`] (source -> scoring -> sinks, offsets committed after every
//!   sink acknowledged) writing to [`cassandra`], [`search`] (OpenSearch /
//!   Elasticsearch) and back to Kafka (DLQ, outcome topic); [`retry`] is the
//!   sinks' backoff.
//! - [`security`]: bearer tokens and roles, TLS and mutual TLS, the
//!   plain-text-on-loopback-only rule.
//! - [`query`]: a small Flight client for the terminal.
//! - [`cli`], [`logging`], [`shutdown`]: the command line and process
//!   plumbing; `main.rs` only calls [`cli::run`].

pub mod app;
pub mod cassandra;
pub mod cli;
pub mod config;
pub mod conform;
pub mod demo;
pub mod flight;
pub mod http;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod proto;
pub mod query;
pub mod record;
pub mod replay;
pub mod retry;
pub mod score;
pub mod search;
pub mod security;
pub mod serve;
pub mod shutdown;
pub mod simulate;
pub mod store;
