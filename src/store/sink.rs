//! Where outcomes and their labels are written: the interface each outcome
//! sink implements (Cassandra, the search engine, the outcome topic; all in
//! `sink/`). The core owns it, so `app` writes to a list of sinks without
//! asking which are there; a new store is one folder with its
//! implementations, added to the list where `serve` wires it
//! (`sink::Sinks::new`; docs/architecture.md, "Storage").

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::history::{LabelRecord, Settled};
use crate::retry::{Abandoned, Health};

/// An outcome a sink refused for good (a mapping conflict in the search
/// engine, say): it goes to the dead-letter topic with the reason, rather
/// than being retried for ever.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Row of the outcome batch.
    pub row: usize,
    /// What was sent, exactly, so the DLQ holds what the sink refused.
    pub document: Bytes,
    pub error: String,
}

/// One place outcomes are written. Each call returns once the sink has
/// everything it was given (or refused it for good), and retries a
/// transient failure until then or until `abandon` fires: that is what
/// lets the Kafka source commit offsets only after every sink has the
/// records. Card numbers arrive as they may be stored (hashed if so
/// configured).
#[async_trait::async_trait]
pub trait OutcomeSink: Send + Sync {
    /// Its name in `/health` and `/metrics`.
    fn name(&self) -> &'static str;

    /// Writes scored outcomes; Ok with those refused for good.
    async fn write(&self, outcomes: &RecordBatch, abandon: &CancellationToken) -> Result<Vec<Refused>, Abandoned>;

    /// Keeps labels as received, before they are applied, so a card
    /// reloaded meanwhile finds them; a label without `reported_at` was
    /// reported when received (`received_ms`). Most sinks keep only what
    /// outcomes show ([`Self::show_labels`]).
    async fn keep_labels(
        &self,
        _labels: &[LabelRecord],
        _received_ms: i64,
        _abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        Ok(())
    }

    /// Labels now current for their stored outcomes: each outcome shows
    /// its newest report, whichever write lands last.
    async fn show_labels(&self, _current: &[Settled], _abandon: &CancellationToken) -> Result<(), Abandoned> {
        Ok(())
    }

    /// Whether its writes are failing, and how often they failed; None for
    /// a sink that keeps no such record.
    fn health(&self) -> Option<&Health> {
        None
    }

    /// Whether it answers a trivial request now.
    async fn answers(&self) -> bool {
        true
    }

    /// Keeps measured days of live quality for dashboards (the numbers
    /// live in the quality book); most sinks keep none.
    async fn index_quality(
        &self,
        _measured: &[crate::quality::DayQuality],
        _abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        Ok(())
    }

    /// Deletes what is older than `retention` says, if the sink does not
    /// expire its own data (Cassandra's rows carry a time to live); called
    /// hourly. Err says why, for the log.
    async fn expire(&self, _retention: &crate::config::RetentionConfig) -> Result<(), String> {
        Ok(())
    }
}
