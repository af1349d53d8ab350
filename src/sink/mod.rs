//! The sinks of a running `serve` (`store` interfaces, wired once in
//! `Sinks::new`), and the fan-out to them: Cassandra, OpenSearch and the
//! optional outcome topic written concurrently, then the dead letters.
//! `write` returns only when every sink has accepted every record of the
//! batch, which is what lets the source commit its offsets (end-to-end
//! acknowledgement).

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
use crate::sink::search::Search;
use crate::store::model_log::ModelLog;
use crate::store::quality_book::QualityBook;
use crate::store::reader::OutcomeReader;
use crate::store::sink::{OutcomeSink, Refused};

/// The sinks of a running `serve`.
#[derive(Default, Clone)]
pub struct Sinks {
    /// Where outcomes and labels are written: each gets every batch. A new
    /// store implements [`OutcomeSink`] and is added in [`Sinks::new`].
    pub outcomes: Vec<Arc<dyn OutcomeSink>>,
    /// The Kafka producer (dead letters, analysts' labels), when Kafka is on.
    pub kafka: Option<KafkaSink>,
    /// Where queries are answered, in order (the first that answers a
    /// kind of query; memory when none does).
    pub readers: Vec<Arc<dyn OutcomeReader>>,
    /// Where the models in service are recorded, when a durable store is on.
    pub model_log: Option<Arc<dyn ModelLog>>,
    /// Live quality's shared book, when a durable store is on (else it is
    /// kept in memory).
    pub quality_book: Option<Arc<dyn QualityBook>>,
}

/// What a batch's write did.
#[derive(Debug, Default)]
pub struct Written {
    /// Records sent to the dead-letter topic (bad input or refused by a sink).
    pub dead_letters: usize,
}

/// The sinks `/health` always names, "off" when not configured.
const NAMED: [&str; 3] = ["cassandra", "opensearch", "kafka"];

impl Sinks {
    /// The sinks that are on: outcomes go to each of them, and queries to
    /// those that answer them.
    pub fn new(cassandra: Option<Arc<Cassandra>>, search: Option<Arc<Search>>, kafka: Option<KafkaSink>) -> Self {
        let mut outcomes: Vec<Arc<dyn OutcomeSink>> = Vec::new();
        outcomes.extend(cassandra.clone().map(|c| c as Arc<dyn OutcomeSink>));
        outcomes.extend(search.clone().map(|s| s as Arc<dyn OutcomeSink>));
        outcomes.extend(kafka.clone().map(|k| Arc::new(k) as Arc<dyn OutcomeSink>));
        let mut readers: Vec<Arc<dyn OutcomeReader>> = Vec::new();
        readers.extend(cassandra.clone().map(|c| c as Arc<dyn OutcomeReader>));
        readers.extend(search.map(|s| s as Arc<dyn OutcomeReader>));
        let model_log = cassandra.clone().map(|c| c as Arc<dyn ModelLog>);
        let quality_book = cassandra.map(|c| c as Arc<dyn QualityBook>);
        Self { outcomes, readers, model_log, quality_book, kafka }
    }

    /// Each sink: "off", "ok" or "failing" (its writes are being retried).
    pub fn health(&self) -> serde_json::Value {
        let mut health = serde_json::Map::new();
        for name in NAMED {
            health.insert(name.into(), "off".into());
        }
        for sink in &self.outcomes {
            let ok = sink.health().is_none_or(|h| h.is_healthy());
            health.insert(sink.name().into(), if ok { "ok" } else { "failing" }.into());
        }
        health.into()
    }

    /// The enabled stores' health and error counts, for `/metrics`.
    pub fn states(&self) -> Vec<crate::metrics::SinkState> {
        self.outcomes
            .iter()
            .filter_map(|sink| {
                let health = sink.health()?;
                Some(crate::metrics::SinkState { name: sink.name(), up: health.is_healthy(), errors: health.errors() })
            })
            .collect()
    }

    /// True when no enabled sink is failing its writes and each answers a
    /// trivial request now (within 2 s), so an idle pipeline reports an
    /// outage too.
    pub async fn ready(&self) -> bool {
        let limit = std::time::Duration::from_secs(2);
        let checks = self.outcomes.iter().filter(|s| s.health().is_some()).map(|sink| async move {
            sink.health().is_none_or(|h| h.is_healthy())
                && tokio::time::timeout(limit, sink.answers()).await.unwrap_or(false)
        });
        futures::future::join_all(checks).await.into_iter().all(|ok| ok)
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty() && self.kafka.is_none()
    }

    /// Writes outcomes to every sink at once, and the dead letters; Ok once
    /// all are stored.
    pub async fn write(
        &self,
        outcomes: &RecordBatch,
        mut dead: Vec<DeadLetter>,
        abandon: &CancellationToken,
    ) -> Result<Written, Abandoned> {
        if outcomes.num_rows() > 0 {
            let writes = self.outcomes.iter().map(|sink| sink.write(outcomes, abandon));
            for refused in futures::future::join_all(writes).await {
                dead.extend(refused?.into_iter().map(refused_to_dead_letter));
            }
        }
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

    /// Keeps labels as received in every sink that keeps them; Ok once all
    /// have them.
    pub async fn keep_labels(
        &self,
        labels: &[crate::history::LabelRecord],
        received_ms: i64,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        for sink in &self.outcomes {
            sink.keep_labels(labels, received_ms, abandon).await?;
        }
        Ok(())
    }

    /// Shows labels now current on their stored outcomes, in every sink.
    pub async fn show_labels(
        &self,
        current: &[crate::history::Settled],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        for sink in &self.outcomes {
            sink.show_labels(current, abandon).await?;
        }
        Ok(())
    }
}

/// An outcome a sink refused for good still reaches the DLQ, as
/// the document it was, with the reason: one dead letter per refusal, so none
/// can go missing while the batch is acknowledged.
fn refused_to_dead_letter(refused: Refused) -> DeadLetter {
    tracing::error!(error = %refused.error, row = refused.row, "a sink refused an outcome; sent to the DLQ");
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
