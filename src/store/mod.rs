//! Where outcomes are kept for queries. The embedded default keeps them in
//! memory ([`memory::MemoryStore`]); Cassandra comes with the streaming
//! pipeline. Flight `DoGet` and the HTTP API read through [`Query`].

pub mod memory;
pub mod model_log;
pub mod quality_book;
pub mod reader;
pub mod sink;

/// What a reader asks the store for; every answer is newest first.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Predicted frauds.
    Alerts { limit: usize },
    /// All outcomes.
    Recent { limit: usize },
    /// The outcomes of one card.
    Card { cc_num: String, limit: usize },
}

/// Rows a query returns when the caller does not say.
pub const DEFAULT_LIMIT: usize = 1_000;
/// The most rows one query may return.
pub const MAX_LIMIT: usize = 100_000;
