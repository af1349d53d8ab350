//! The labels topic's dead letters, sent once for the whole cluster.
//!
//! Every instance reads every labels partition (`labels`: merchant risk
//! needs all labels), so if each dead-lettered what it cannot store, a bad
//! label would reach `<topic>.labels.dlq` once per instance. Instead each
//! instance also runs this consumer, in the shared group
//! `<group>.labels.dlq`: Kafka gives each labels partition to one member,
//! which decodes its labels with the same rules (`labels::decode`), sends
//! the bad ones to the DLQ with the reason and commits after Kafka has
//! them. A crash or rebalance between the send and the commit can send a
//! few again (at least once, never lost); a member that dies hands its
//! partitions over when its session expires.
//!
//! The labels consumer skips the bad ones without sending them. Both judge
//! a label by what the record holds (its report time against its Kafka
//! timestamp: `labels::decode`), so whichever reads it first, and
//! whenever, a label is either applied or dead-lettered, never neither.
//!
//! The group is new in this release: on the first start after an upgrade
//! it has no offsets and reads the labels topic from its start, sending
//! once more the bad labels it still holds (each instance sent them
//! before).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use super::kafka::SourceError;
use super::labels::{commit, decode, Raw};
use crate::app::App;
use crate::config::KafkaConfig;
use crate::shutdown::Shutdown;

/// Labels judged at once.
const BATCH: usize = 1_000;
/// How long a batch waits to fill.
const BATCH_WAIT: Duration = Duration::from_millis(200);

/// The group whose members share the dead-lettering of `kafka`'s labels.
pub fn group(kafka: &KafkaConfig) -> String {
    format!("{}.labels.dlq", kafka.group)
}

/// Starts the consumer thread; it returns once `shutdown` fires (or when
/// a send is abandoned at shutdown: nothing committed, re-read next time).
/// `instance_id` is the static membership of the transactions' group, if
/// any: a restart takes its labels partitions back at once too.
pub fn start(
    app: Arc<App>,
    kafka: &KafkaConfig,
    instance_id: Option<&str>,
    shutdown: Shutdown,
) -> Result<std::thread::JoinHandle<()>, SourceError> {
    let (topic, dlq) = (kafka.labels_topic(), kafka.labels_dlq_topic());
    let mut config = crate::kafka::client_config(&kafka.brokers, &[]);
    config
        .set("group.id", group(kafka))
        // A dead member's partitions move on as the transactions' do.
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (kafka.session_timeout_ms / 3).min(3_000).to_string());
    if let Some(id) = instance_id {
        config.set("group.instance.id", id);
    }
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    // After the user's properties: offsets are committed only once Kafka
    // has the letters, and a partition without a committed offset is read
    // from its start (or bad labels already skipped would never be sent).
    config.set("enable.auto.commit", "false").set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<DlqContext> = config
        .create_with_context(DlqContext)
        .map_err(|source| SourceError::Consumer { brokers: kafka.brokers.clone(), source })?;
    consumer.subscribe(&[&topic]).map_err(|source| SourceError::Consumer { brokers: kafka.brokers.clone(), source })?;
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new().name("kafka-labels-dlq".into()).spawn(move || {
        let mut fatal = false;
        while !shutdown.is_triggered() {
            let batch = poll_batch(&consumer, &mut fatal);
            if batch.is_empty() {
                continue;
            }
            let read: Vec<&Raw> = batch.iter().collect();
            let (_, dead, _) = decode(&read, app.time_bound());
            if !dead.is_empty() {
                if let Err(e) = runtime.block_on(app.labels_dead_letters(&dead, &topic, &dlq)) {
                    if shutdown.is_triggered() {
                        // Abandoned at shutdown: not committed, sent next time.
                        break;
                    }
                    // Not sent and not committed: read again and retried.
                    tracing::error!(error = %e, "labels' dead letters not sent; retrying");
                    seek_back(&consumer, &topic, &read);
                    std::thread::sleep(RETRY_AFTER);
                    continue;
                }
                app.metrics().label_dead_letters(dead.len());
            }
            commit(&consumer, &topic, &read);
        }
    })?;
    Ok(thread)
}

/// How long a batch whose letters could not be sent waits to be tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Puts each partition of `batch` back to its first message, to be read
/// again.
fn seek_back(consumer: &BaseConsumer<DlqContext>, topic: &str, batch: &[&Raw]) {
    let mut first = std::collections::BTreeMap::new();
    for r in batch {
        let at = first.entry(r.partition).or_insert(r.offset);
        *at = (*at).min(r.offset);
    }
    for (partition, offset) in first {
        if let Err(e) = consumer.seek(topic, partition, rdkafka::Offset::Offset(offset), Duration::from_secs(5)) {
            tracing::warn!(error = %e, partition, "labels dead-letter consumer: cannot read again; a restart will");
        }
    }
}

/// Up to BATCH messages, waiting at most BATCH_WAIT for them.
fn poll_batch(consumer: &BaseConsumer<DlqContext>, fatal: &mut bool) -> Vec<Raw> {
    let deadline = Instant::now() + BATCH_WAIT;
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left) {
            Some(Ok(m)) => batch.push(Raw::of(&m)),
            // Finished for good (another member took our group.instance.id):
            // said once; the members left dead-letter the labels.
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                if !*fatal {
                    tracing::error!(error = %e, "labels dead-letter consumer failed for good; other instances send the labels' dead letters");
                    *fatal = true;
                }
                std::thread::sleep(BATCH_WAIT);
                break;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "labels dead-letter consumer"),
            None => break,
        }
    }
    batch
}

/// librdkafka's errors logged, and which labels partitions this instance
/// dead-letters.
struct DlqContext;

impl rdkafka::ClientContext for DlqContext {
    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::log_client_error(&error, reason);
    }
}

impl ConsumerContext for DlqContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?partitions, "dead-lettering these labels partitions");
        }
    }
}
