//! fraudflight: real-time credit-card fraud scoring.
//!
//! The map (DESIGN.md has the contracts):
//!
//! - [`record`]: the one definition of a transaction's fields, its Rust struct
//!   and its Arrow schema.
//! - [`conform`]: makes any client's Arrow batch fit that schema, or says
//!   which column does not.
//! - [`simulate`]: the deterministic Sparkov-like transaction generator and
//!   its CSV / Parquet outputs.
//! - [`score`]: derived features, the ONNX model and the registry that
//!   hot-swaps it; turns a batch of transactions into a batch of outcomes.
//! - [`store`]: the in-memory store of recent outcomes and alerts that the
//!   embedded demo and the Flight queries read.
//! - [`flight`]: the Arrow Flight service, a thin adapter over the above.
//! - [`http`]: status page and JSON summary.
//! - [`demo`]: wires simulator -> scorer -> store, with Flight and HTTP.
//! - [`cli`]: the command line; `main.rs` only calls [`cli::run`].

pub mod cli;
pub mod conform;




pub mod record;
pub mod score;

pub mod simulate;

pub mod logging;
pub mod proto;
pub mod store;
pub mod app; pub mod flight;
pub mod http; pub mod shutdown;
pub mod demo; pub mod query;
