//! Fan-out to every enabled sink: Cassandra, OpenSearch, the dead-letter
//! topic and the optional outcome topic, written concurrently. `write`
//! returns only when every sink has accepted every record of the batch, which
//! is what lets the source commit its offsets (end-to-end acknowledgement).

pub mod cassandra;
pub mod kafka;
pub mod retention;
pub mod search;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use tokio_util::sync::CancellationToken;

use crate::retry::Abandoned;
use crate::sink::cassandra::Cassandra;
use crate::sink::kafka::{DeadLetter, KafkaSink};
use crate::sink::search::{Refused, Search};

#[derive(Default, Clone)]
pub struct Sinks {
    pub cassandra: Option<Arc<Cassandra>>,
    pub search: Option<Arc<Search>>,
    pub kafka: Option<KafkaSink>,
}

/// What a batch's write did.
#[derive(Debug, Default)]
pub struct Written {
    /// Records sent to the dead-letter topic (bad input or refused by a sink).
    pub dead_letters: usize,
}

impl Sinks {
    /// Each sink: "off", "ok" or "failing" (its writes are being retried).
    pub fn health(&self) -> serde_json::Value {
        let state = |enabled: bool, healthy: bool| match (enabled, healthy) {
            (false, _) => "off",
            (true, true) => "ok",
            (true, false) => "failing",
        };
        serde_json::json!({
            "cassandra": state(self.cassandra.is_some(), self.cassandra.as_ref().is_none_or(|c| c.health.is_healthy())),
            "opensearch": state(self.search.is_some(), self.search.as_ref().is_none_or(|s| s.health.is_healthy())),
            "kafka": state(self.kafka.is_some(), true),
        })
    }

    /// The enabled stores' health and error counts, for `/metrics`.
    pub fn states(&self) -> Vec<crate::metrics::SinkState> {
        let mut states = Vec::new();
        if let Some(c) = &self.cassandra {
            states.push(crate::metrics::SinkState {
                name: "cassandra",
                up: c.health.is_healthy(),
                errors: c.health.errors(),
            });
        }
        if let Some(s) = &self.search {
            states.push(crate::metrics::SinkState {
                name: "opensearch",
                up: s.health.is_healthy(),
                errors: s.health.errors(),
            });
        }
        states
    }

    /// True when no enabled sink is failing its writes and each answers a
    /// trivial request now (within 2 s), so an idle pipeline reports an
    /// outage too.
    pub async fn ready(&self) -> bool {
        let limit = std::time::Duration::from_secs(2);
        let cassandra = async {
            match &self.cassandra {
                Some(c) => c.health.is_healthy() && tokio::time::timeout(limit, c.healthy()).await.unwrap_or(false),
                None => true,
            }
        };
        let search = async {
            match &self.search {
                Some(s) => s.health.is_healthy() && tokio::time::timeout(limit, s.healthy()).await.unwrap_or(false),
                None => true,
            }
        };
        let (c, s) = tokio::join!(cassandra, search);
        c && s
    }

    pub fn is_empty(&self) -> bool {
        self.cassandra.is_none() && self.search.is_none() && self.kafka.is_none()
    }

    /// Writes outcomes and dead letters; Ok once all are stored.
    pub async fn write(
        &self,
        outcomes: &RecordBatch,
        mut dead: Vec<DeadLetter>,
        abandon: &CancellationToken,
    ) -> Result<Written, Abandoned> {
        let cassandra = async {
            match &self.cassandra {
                Some(c) if outcomes.num_rows() > 0 => c.write(outcomes, abandon).await,
                _ => Ok(()),
            }
        };
        let search = async {
            match &self.search {
                Some(s) if outcomes.num_rows() > 0 => s.write(outcomes, abandon).await,
                _ => Ok(Vec::new()),
            }
        };
        let scored = async {
            match &self.kafka {
                Some(k) if outcomes.num_rows() > 0 => k.outcomes(outcomes, abandon).await,
                _ => Ok(()),
            }
        };
        let (cassandra, refused, scored) = tokio::join!(cassandra, search, scored);
        cassandra?;
        scored?;
        dead.extend(refused?.into_iter().map(refused_to_dead_letter));
        if dead.is_empty() {
            return Ok(Written::default());
        }
        match &self.kafka {
            Some(k) => k.dead_letters(&dead, abandon).await?,
            None => {
                // No Kafka (a pure Flight server): say so loudly, record by record.
                for d in &dead {
                    tracing::error!(error = %d.error, "record not stored and no dead-letter topic configured");
                }
            }
        }
        Ok(Written { dead_letters: dead.len() })
    }
}

/// A document the search engine refused for good still reaches the DLQ, as
/// the document it was, with the reason: one dead letter per refusal, so none
/// can go missing while the batch is acknowledged.
fn refused_to_dead_letter(refused: Refused) -> DeadLetter {
    tracing::error!(error = %refused.error, row = refused.row, "search engine refused an outcome; sent to the DLQ");
    DeadLetter { key: None, value: refused.document.to_vec(), error: refused.error, source: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_document_becomes_a_dead_letter_with_its_bytes() {
        // Before, the DLQ values were rebuilt from the outcome batch and
        // zipped with the refusals: a failed conversion gave no values, and
        // the zip silently dropped every refused document.
        let refused: Vec<Refused> = (0..3)
            .map(|row| Refused {
                row,
                document: bytes::Bytes::from(format!("{{\"trans_num\":\"t{row}\"}}")),
                error: format!("mapper_parsing_exception {row}"),
            })
            .collect();
        let dead: Vec<DeadLetter> = refused.into_iter().map(refused_to_dead_letter).collect();
        assert_eq!(dead.len(), 3);
        for (row, d) in dead.iter().enumerate() {
            assert_eq!(d.value, format!("{{\"trans_num\":\"t{row}\"}}").into_bytes());
            assert_eq!(d.error, format!("mapper_parsing_exception {row}"));
        }
    }
}
