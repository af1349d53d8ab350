//! The labels consumer of `fraudflight serve`: confirmed outcomes from
//! `<topic>.labels` (key `cc_num`, JSON `{"trans_num", "cc_num", "is_fraud",
//! "reported_at"?}`) into the history and Cassandra `labels`
//! (docs/architecture.md, "History").
//!
//! Same rule as transactions: offsets are committed only after every label
//! up to them is applied and stored, so a crash re-reads, never loses (the
//! writes are upserts and applying a label twice changes nothing). A bad
//! label goes to `<topic>.labels.dlq` with an `error` header. A label
//! without `reported_at` was reported at its Kafka timestamp, so a replay
//! gives the same features as live operation.
//!
//! Every instance reads every labels partition (its own consumer group,
//! `<group>.labels.<instance>`): merchant risk needs all labels, whichever
//! cards an instance owns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::SourceError;
use crate::app::App;
use crate::config::KafkaConfig;
use crate::history::labels::from_json;
use crate::history::LabelRecord;
use crate::shutdown::Shutdown;
use crate::sink::kafka::DeadLetter;

/// Labels applied and stored at once.
const BATCH: usize = 1_000;
/// How long a batch waits to fill.
const BATCH_WAIT: Duration = Duration::from_millis(100);

/// Starts the labels consumer thread; it returns once `shutdown` fires.
pub fn start(
    app: Arc<App>,
    kafka: &KafkaConfig,
    instance: &str,
    shutdown: Shutdown,
) -> Result<std::thread::JoinHandle<()>, SourceError> {
    let topic = kafka.labels_topic();
    let mut config = crate::kafka::client_config(&kafka.brokers, &[]);
    config
        .set("group.id", format!("{}.labels.{instance}", kafka.group))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer =
        config.create().map_err(|source| SourceError::Consumer { brokers: kafka.brokers.clone(), source })?;
    consumer.subscribe(&[&topic]).map_err(|source| SourceError::Subscribe { topic: topic.clone(), source })?;
    let runtime = tokio::runtime::Handle::current();
    let dlq = kafka.labels_dlq_topic();
    let thread = std::thread::Builder::new().name("kafka-labels".into()).spawn(move || {
        while !shutdown.is_triggered() {
            let batch = poll_batch(&consumer);
            if batch.is_empty() {
                continue;
            }
            let (labels, dead) = decode(&batch);
            let stored =
                runtime.block_on(app.store_labels(&labels, crate::metrics::unix_ms(), dead, Some((&topic, &dlq))));
            if stored.is_err() {
                // Abandoned at shutdown: nothing committed, re-read next time.
                break;
            }
            commit(&consumer, &topic, &batch);
        }
    })?;
    Ok(thread)
}

/// One polled message, owned.
struct Raw {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    /// Kafka timestamp, Unix ms.
    timestamp_ms: Option<i64>,
}

fn poll_batch(consumer: &BaseConsumer) -> Vec<Raw> {
    let deadline = Instant::now() + BATCH_WAIT;
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left) {
            Some(Ok(m)) => batch.push(Raw {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                timestamp_ms: m.timestamp().to_millis(),
            }),
            Some(Err(e)) => tracing::warn!(error = %e, "labels consumer"),
            None => break,
        }
    }
    batch
}

/// Labels, and dead letters for the values that are not labels.
fn decode(batch: &[Raw]) -> (Vec<LabelRecord>, Vec<DeadLetter>) {
    let mut labels = Vec::with_capacity(batch.len());
    let mut dead = Vec::new();
    for r in batch {
        match from_json(&r.value) {
            Ok(mut label) => {
                if label.reported_at.is_none() {
                    label.reported_at = r.timestamp_ms.map(|ms| ms.div_euclid(1000));
                }
                labels.push(label);
            }
            Err(e) => dead.push(DeadLetter {
                key: r.key.clone(),
                value: r.value.clone(),
                error: e.to_string(),
                source: Some((r.partition, r.offset)),
            }),
        }
    }
    (labels, dead)
}

/// Commits past the last message of each partition in `batch`.
fn commit(consumer: &BaseConsumer, topic: &str, batch: &[Raw]) {
    let mut next = std::collections::BTreeMap::new();
    for r in batch {
        let at = next.entry(r.partition).or_insert(r.offset + 1);
        *at = (*at).max(r.offset + 1);
    }
    let mut list = TopicPartitionList::new();
    for (partition, offset) in next {
        if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, partition, "labels commit");
        }
    }
    if let Err(e) = consumer.commit(&list, CommitMode::Sync) {
        // Stored already: the next commit covers these, or a restart
        // re-reads and re-applies them (upserts, idempotent).
        tracing::warn!(error = %e, "labels offsets not committed");
    }
}
