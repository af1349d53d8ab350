//! Where queries for stored outcomes are answered: the interface a store
//! that keeps outcomes implements (Cassandra answers alerts and card
//! history, the search engine the newest outcomes). The core asks the
//! first store that answers a kind of query, else its memory
//! (docs/architecture.md, "Storage").

use arrow::record_batch::RecordBatch;

use super::Query;

/// Why a store could not answer a query.
/// Its text is the store's own error, which names the store.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ReadError {
    pub store: &'static str,
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

impl ReadError {
    pub fn new(store: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { store, error: Box::new(error) }
    }
}

/// A store that answers queries for outcomes, newest first.
#[async_trait::async_trait]
pub trait OutcomeReader: Send + Sync {
    /// Whether it answers this kind of query (whatever its parameters).
    fn answers(&self, query: &Query) -> bool;

    async fn query(&self, query: &Query) -> Result<Vec<RecordBatch>, ReadError>;
}
