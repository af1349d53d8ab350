//! What the pipeline writes back to Kafka: dead letters to `<topic>.dlq`
//! (the original bytes and key, a header `error` naming the problem, and the
//! source position) and, optionally, every outcome as JSON to
//! `<topic>.scored`. Every delivery is awaited; an undelivered record is
//! retried with backoff, so a bad record is never lost on its way to the DLQ.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::record::column;
use crate::retry::{Abandoned, Retry};

/// A record that could not be scored (or stored), on its way to the DLQ.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub error: String,
    /// (partition, offset) in the input topic, when it came from Kafka.
    pub source: Option<(i32, i64)>,
}

/// What is kept of a value the broker refuses as too large for the DLQ: the
/// start of it, marked with `truncated` and `original_bytes` headers.
const TRUNCATED_DLQ_VALUE: usize = 64 * 1024;
/// And of its key, when that too is too large.
const TRUNCATED_DLQ_KEY: usize = 1024;

/// The Kafka producer: dead letters, analysts' labels, and (as an outcome
/// sink) the outcome topic `<topic>.scored` when it is on.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    input_topic: String,
    dlq_topic: String,
    scored_topic: Option<String>,
}

/// Outcomes to `<topic>.scored`, when enabled; nothing else.
#[async_trait::async_trait]
impl crate::store::sink::OutcomeSink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn write(
        &self,
        outcomes: &RecordBatch,
        abandon: &CancellationToken,
    ) -> Result<Vec<crate::store::sink::Refused>, Abandoned> {
        self.outcomes(outcomes, abandon).await.map(|()| Vec::new())
    }
}

impl KafkaSink {
    pub fn new(
        brokers: &str,
        properties: &[(String, String)],
        input_topic: &str,
        dlq_topic: String,
        scored_topic: Option<String>,
    ) -> Result<Self, KafkaError> {
        let extra = [
            ("message.max.bytes", "2000000"),
            // librdkafka gives up on a message after this; we then retry it ourselves.
            ("message.timeout.ms", "30000"),
        ];
        let config = crate::kafka::producer_config(brokers, &extra, properties);
        Ok(Self { producer: config.create()?, input_topic: input_topic.to_string(), dlq_topic, scored_topic })
    }

    pub fn dlq_topic(&self) -> &str {
        &self.dlq_topic
    }

    /// Sends dead letters and waits until Kafka has every one.
    pub async fn dead_letters(&self, letters: &[DeadLetter], abandon: &CancellationToken) -> Result<(), Abandoned> {
        self.dead_letters_to(&self.dlq_topic, &self.input_topic, letters, abandon).await
    }

    /// Sends dead letters from `source_topic` to `dlq_topic` (the labels'
    /// own topics, say).
    pub async fn dead_letters_to(
        &self,
        dlq_topic: &str,
        source_topic: &str,
        letters: &[DeadLetter],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let sends = letters.iter().map(|letter| async move {
            let mut headers = OwnedHeaders::new().insert(Header { key: "error", value: Some(letter.error.as_bytes()) });
            headers = headers.insert(Header { key: "source_topic", value: Some(source_topic.as_bytes()) });
            if let Some((partition, offset)) = letter.source {
                headers = headers
                    .insert(Header { key: "source_partition", value: Some(partition.to_string().as_bytes()) })
                    .insert(Header { key: "source_offset", value: Some(offset.to_string().as_bytes()) });
            }
            let key = letter.key.as_deref();
            match self.send(dlq_topic, key, &letter.value, headers.clone(), abandon).await {
                Err(SendError::TooLarge) => {
                    tracing::warn!(bytes = letter.value.len(), "dead letter too large for the DLQ topic; truncated");
                    let cut = &letter.value[..letter.value.len().min(TRUNCATED_DLQ_VALUE)];
                    let mut headers =
                        headers.insert(Header { key: "truncated", value: Some(b"true".as_slice()) }).insert(Header {
                            key: "original_bytes",
                            value: Some(letter.value.len().to_string().as_bytes()),
                        });
                    // The key too (a hostile one can be as large as the value):
                    // nothing about the letter may keep it out of the DLQ.
                    let key = key.map(|k| &k[..k.len().min(TRUNCATED_DLQ_KEY)]);
                    if letter.key.as_ref().is_some_and(|k| k.len() > TRUNCATED_DLQ_KEY) {
                        headers = headers.insert(Header {
                            key: "original_key_bytes",
                            value: Some(letter.key.as_ref().map_or(0, Vec::len).to_string().as_bytes()),
                        });
                    }
                    self.send(dlq_topic, key, cut, headers, abandon).await.map_err(SendError::into_abandoned)
                }
                other => other.map_err(SendError::into_abandoned),
            }
        });
        join_all(sends).await.into_iter().collect()
    }

    /// Sends one record (a label from the dashboard to `<topic>.labels`, say)
    /// keyed by the card number; Ok once the broker has it.
    pub async fn send_keyed(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        self.send(topic, Some(key.as_bytes()), value, OwnedHeaders::new(), abandon)
            .await
            .map_err(SendError::into_abandoned)
    }

    /// Sends every outcome as a JSON object to `<topic>.scored` (if enabled).
    pub async fn outcomes(&self, outcomes: &RecordBatch, abandon: &CancellationToken) -> Result<(), Abandoned> {
        let Some(topic) = &self.scored_topic else { return Ok(()) };
        let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
        writer.write(outcomes).expect("outcomes are JSON-encodable");
        writer.finish().expect("in-memory writer");
        let lines = writer.into_inner();
        let cards = outcomes.column_by_name(column::cc_num).expect("outcome column").as_string::<i32>();
        let sends = lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate().map(|(row, line)| async move {
            self.send(topic, Some(cards.value(row).as_bytes()), line, OwnedHeaders::new(), abandon)
                .await
                .map_err(SendError::into_abandoned)
        });
        join_all(sends).await.into_iter().collect()
    }

    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        abandon: &CancellationToken,
    ) -> Result<(), SendError> {
        let mut retry = Retry::new("kafka", abandon);
        loop {
            let mut record = FutureRecord::to(topic).payload(value).headers(headers.clone());
            if let Some(key) = key {
                record = record.key(key);
            }
            let error = match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return Ok(()),
                Err((e, _)) => e,
            };
            if retry.attempts() == 0 {
                tracing::warn!(error = %error, topic, "Kafka write failed; retrying");
            }
            if matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) {
                return Err(SendError::TooLarge);
            }
            retry.failed(error).await.map_err(SendError::Abandoned)?;
        }
    }
}

enum SendError {
    TooLarge,
    Abandoned(Abandoned),
}

impl SendError {
    fn into_abandoned(self) -> Abandoned {
        match self {
            SendError::Abandoned(a) => a,
            SendError::TooLarge => Abandoned {
                sink: "kafka",
                attempts: 1,
                last: "record too large for the broker even when truncated".into(),
            },
        }
    }
}
