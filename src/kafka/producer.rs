//! Writes transactions to a Kafka topic: key = `cc_num` (so one card's events
//! stay in order on one partition), value = the record as JSON (docs/architecture.md,
//! "Contracts"). Optionally paced to a fixed rate. Every record's
//! delivery is awaited and counted: a record the broker did not acknowledge
//! is reported, never assumed sent.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::record::Transaction;

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create a Kafka producer for {brokers}: {source}")]
    Create { brokers: String, source: KafkaError },
    #[error("{failed} of {total} records were not acknowledged by Kafka; first error: {first}")]
    Undelivered { failed: u64, total: u64, first: String },
}

/// What a run sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub delivered: u64,
}

/// Deliveries awaited at once; beyond this the producer waits for acks.
const MAX_IN_FLIGHT: usize = 100_000;

pub struct TransactionProducer {
    producer: FutureProducer,
    topic: String,
}

impl TransactionProducer {
    pub fn new(brokers: &str, topic: &str, properties: &[(String, String)]) -> Result<Self, ProduceError> {
        let config = super::producer_config(brokers, &[("queue.buffering.max.messages", "500000")], properties);
        let producer =
            config.create().map_err(|source| ProduceError::Create { brokers: brokers.to_string(), source })?;
        Ok(Self { producer, topic: topic.to_string() })
    }

    /// Sends every record, at `rate` per second if given, and waits until
    /// Kafka has acknowledged (or refused) each one.
    pub async fn send_all(
        &self,
        records: impl IntoIterator<Item = Transaction>,
        rate: Option<f64>,
    ) -> Result<SendReport, ProduceError> {
        let mut pending: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();
        let mut outcome = Outcome::default();
        let started = tokio::time::Instant::now();
        let mut sent: u64 = 0;
        for t in records {
            if let Some(rate) = rate.filter(|r| *r > 0.0) {
                let due = started + Duration::from_secs_f64(sent as f64 / rate);
                if due > tokio::time::Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
            }
            let value = serde_json::to_vec(&t).expect("a Transaction always serializes");
            let mut record = FutureRecord::to(&self.topic).key(t.cc_num.as_str()).payload(&value);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        // The local queue is full: wait for an acknowledgement.
                        match pending.next().await {
                            Some(result) => outcome.add(result),
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    Err((e, _)) => {
                        outcome.fail(e.to_string());
                        break;
                    }
                }
            }
            sent += 1;
            while pending.len() >= MAX_IN_FLIGHT {
                if let Some(result) = pending.next().await {
                    outcome.add(result);
                }
            }
        }
        while let Some(result) = pending.next().await {
            outcome.add(result);
        }
        match outcome.first_error {
            None => Ok(SendReport { delivered: outcome.delivered }),
            Some(first) => Err(ProduceError::Undelivered { failed: outcome.failed, total: sent, first }),
        }
    }
}

#[derive(Default)]
struct Outcome {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn add(
        &mut self,
        result: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
    ) {
        match result {
            Ok(Ok(_)) => self.delivered += 1,
            Ok(Err((e, _))) => self.fail(e.to_string()),
            Err(_) => self.fail("producer dropped before delivery".into()),
        }
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        self.first_error.get_or_insert(error);
    }
}
