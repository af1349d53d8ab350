//! The labels consumer of `fraudflight serve`: confirmed outcomes from
//! `<topic>.labels` (key `cc_num`, JSON `{"trans_num", "cc_num", "is_fraud",
//! "reported_at"?}`) into the history and Cassandra `labels`
//! (docs/architecture.md, "History").
//!
//! Same rule as transactions: offsets are committed only after every label
//! up to them is applied and stored, so a crash re-reads, never loses (the
//! writes are upserts and applying a label twice changes nothing). A bad
//! label is skipped here; it reaches `<topic>.labels.dlq` once for the
//! whole cluster, from [`super::labels_dlq`]. A label
//! without `reported_at` was reported at its Kafka timestamp, so a replay
//! gives the same features as live operation.
//!
//! Every instance reads every labels partition, assigned by hand (no group
//! to join; its committed offsets under `<group>.labels.<instance>`):
//! merchant risk needs all labels, whichever cards an instance owns.
//!
//! After each stored batch it tells the history how far each partition has
//! been applied (the newest report time, or its end), so transactions wait,
//! bounded, for the labels their merchant risk counts
//! (`history::progress`); a missing topic has nothing to wait for. Each
//! partition is read from its own queue ([`Partitions`]), so its end is
//! told only when nothing of it waits behind that end: in one shared queue,
//! a partition's later labels wait behind another partition's backlog, and
//! its end, read seconds before them, looked like silence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::SourceError;
use crate::app::App;
use crate::config::KafkaConfig;
use crate::history::labels::from_json;
use crate::history::progress::Seen;
use crate::history::LabelRecord;
use crate::record::limits::TimeBound;
use crate::shutdown::Shutdown;
use crate::sink::kafka::DeadLetter;

/// Labels applied and stored at once.
const BATCH: usize = 1_000;
/// How long a batch waits to fill.
const BATCH_WAIT: Duration = Duration::from_millis(100);

/// Starts the labels consumer thread; it returns once `shutdown` fires.
/// From then on the history's ingest waits, at most `wait` a batch, for
/// the labels this consumer has yet to deliver (`history::progress`).
pub fn start(
    app: Arc<App>,
    kafka: &KafkaConfig,
    instance: &str,
    wait: Duration,
    idle: Duration,
    shutdown: Shutdown,
) -> Result<std::thread::JoinHandle<()>, SourceError> {
    let topic = kafka.labels_topic();
    let mut config = crate::kafka::client_config(&kafka.brokers, &[]);
    config.set("group.id", format!("{}.labels.{instance}", kafka.group));
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    // Set after the user's properties: without ends no partition is ever
    // idle; offsets are committed only after the labels are stored; a
    // partition without a committed offset is read from its start.
    config.set("enable.partition.eof", "true").set("enable.auto.commit", "false").set("auto.offset.reset", "earliest");
    // Shared with the partitions' own queues.
    let consumer: Arc<BaseConsumer<LabelsContext>> = Arc::new(
        config
            .create_with_context(LabelsContext)
            .map_err(|source| SourceError::Consumer { brokers: kafka.brokers.clone(), source })?,
    );
    let history = app.history().cloned();
    if let Some(history) = &history {
        history.follow_labels(wait, idle);
    }
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new().name("kafka-labels".into()).spawn(move || {
        let mut partitions = Partitions::default();
        while !shutdown.is_triggered() {
            if let Some(now) = partitions.refresh(&consumer, &topic) {
                if let Some(history) = &history {
                    history.labels_assigned(&now);
                }
            }
            let polled = partitions.poll_batch(&consumer);
            if polled.is_empty() {
                continue;
            }
            let messages: Vec<&Raw> = polled
                .iter()
                .filter_map(|p| match p {
                    Polled::Message(m) => Some(m),
                    Polled::End { .. } => None,
                })
                .collect();
            // The bad ones are dead-lettered by `labels_dlq`, once.
            let (labels, _dead, reported) = decode(&messages, app.time_bound());
            if let (Some(history), false) = (&history, messages.is_empty()) {
                // Read, not applied yet: their partitions are not idle while
                // the batch is stored, however long that takes.
                let read: BTreeSet<i32> = messages.iter().map(|m| m.partition).collect();
                history.labels_seen(&read.into_iter().map(|partition| Seen::Reading { partition }).collect::<Vec<_>>());
            }
            if !messages.is_empty() {
                let stored = runtime.block_on(app.store_labels(&labels, crate::metrics::unix_ms(), true));
                if stored.is_err() {
                    // Abandoned at shutdown: nothing committed, re-read next time.
                    break;
                }
                commit(&consumer, &topic, &messages);
            }
            if let Some(history) = &history {
                history.labels_seen(&seen(&polled, &reported));
            }
        }
        if let Some(history) = &history {
            history.labels_stopped();
        }
    })?;
    Ok(thread)
}

/// The labels consumer's context: librdkafka's errors logged, partition
/// ends not (they are expected here).
struct LabelsContext;

impl rdkafka::ClientContext for LabelsContext {
    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::log_client_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for LabelsContext {}

/// The labels partitions this consumer reads: all of the topic's,
/// assigned by hand. Every instance reads every label, so there is nothing
/// to share out and no group to join: a restarted instance reads at once
/// (a group would hold its partitions until the killed member's session
/// expired). The group id only keeps the committed offsets.
///
/// Each partition is read from its own queue (librdkafka's partition
/// queues), so the consumer sees whether anything of a partition waits
/// behind the end it read.
#[derive(Default)]
struct Partitions {
    /// None until the brokers answered.
    assigned: Option<Vec<i32>>,
    /// When the brokers were last asked.
    asked: Option<Instant>,
    /// Each assigned partition's own queue.
    queues: Vec<(i32, PartitionQueue<LabelsContext>)>,
    /// The queue each poll looks at first, in turn: with more than
    /// BATCH / PER_QUEUE partitions, the last would otherwise wait for the
    /// first ones' backlogs.
    first: usize,
    /// Partitions whose end was read, nothing read from them since.
    ended: BTreeSet<i32>,
}

/// How often the brokers are asked for the topic's partitions while it has
/// none (or does not exist), and once it has.
const ASK_EVERY: Duration = Duration::from_secs(1);
const REFRESH_EVERY: Duration = Duration::from_secs(30);

impl Partitions {
    /// Asks the brokers for the topic's partitions when due, and assigns
    /// them (from the committed offsets) when they changed. Returns the new
    /// list for the history: empty when the topic does not exist, so
    /// batches do not wait for labels that cannot come.
    fn refresh(&mut self, consumer: &Arc<BaseConsumer<LabelsContext>>, topic: &str) -> Option<Vec<i32>> {
        let every = if self.assigned.as_ref().is_some_and(|a| !a.is_empty()) { REFRESH_EVERY } else { ASK_EVERY };
        if self.asked.is_some_and(|at| at.elapsed() < every) {
            return None;
        }
        self.asked = Some(Instant::now());
        let metadata = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, topic, "labels topic: no answer from the brokers");
                return None;
            }
        };
        let t = metadata.topics().iter().find(|t| t.name() == topic)?;
        let mut now: Vec<i32> = match t.error() {
            Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Vec::new(),
            Some(_) => return None,
            None => t.partitions().iter().map(|p| p.id()).collect(),
        };
        now.sort_unstable();
        if self.assigned.as_ref() == Some(&now) {
            return None;
        }
        let mut list = TopicPartitionList::new();
        for p in &now {
            if let Err(e) = list.add_partition_offset(topic, *p, Offset::Stored) {
                tracing::warn!(error = %e, partition = p, "labels partition not assigned");
                return None;
            }
        }
        if let Err(e) = consumer.assign(&list) {
            tracing::warn!(error = %e, topic, "labels partitions not assigned");
            return None;
        }
        // Split after the assignment (which undoes earlier splits) and
        // before the next poll: whatever was fetched before is on the main
        // queue, polled first.
        self.queues = now
            .iter()
            .filter_map(|p| match consumer.split_partition_queue(topic, *p) {
                Some(queue) => Some((*p, queue)),
                None => {
                    tracing::warn!(
                        topic,
                        partition = p,
                        "labels partition not read from its own queue: its end is never told"
                    );
                    None
                }
            })
            .collect();
        self.ended.clear();
        tracing::info!(topic, partitions = ?now, "reading labels");
        self.assigned = Some(now.clone());
        Some(now)
    }
}

/// What one poll gave, in order.
enum Polled {
    Message(Raw),
    /// This partition's end was read, and at `at` nothing of it was queued
    /// behind it.
    End {
        partition: i32,
        at: Instant,
    },
}

/// At most this many messages from one partition's queue before the next
/// partition's is looked at: every partition is looked at every poll.
const PER_QUEUE: usize = 100;

impl Partitions {
    /// A batch of messages from every partition's queue (and the main
    /// queue, first: callbacks, and what was fetched before the split),
    /// then the ends confirmed: partitions whose end was read and whose
    /// queue was found empty after it.
    fn poll_batch(&mut self, consumer: &BaseConsumer<LabelsContext>) -> Vec<Polled> {
        let deadline = Instant::now() + BATCH_WAIT;
        let mut batch = Vec::new();
        // When each partition's queue was last found empty, if nothing was
        // read from it after.
        let mut empty: BTreeMap<i32, Instant> = BTreeMap::new();
        loop {
            let mut got = false;
            while batch.len() < BATCH {
                let Some(polled) = consumer.poll(Duration::ZERO) else { break };
                got |= take(&mut self.ended, polled, &mut batch, &mut empty);
            }
            let n = self.queues.len();
            for k in 0..n {
                let (partition, queue) = &self.queues[(self.first + k) % n];
                for _ in 0..PER_QUEUE {
                    if batch.len() >= BATCH {
                        break;
                    }
                    match queue.poll(Duration::ZERO) {
                        Some(polled) => got |= take(&mut self.ended, polled, &mut batch, &mut empty),
                        None => {
                            empty.insert(*partition, Instant::now());
                            break;
                        }
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if batch.len() >= BATCH || left.is_zero() {
                break;
            }
            if !got {
                // Nothing anywhere: wait a little, serving callbacks.
                if let Some(polled) = consumer.poll(left.min(IDLE_POLL)) {
                    take(&mut self.ended, polled, &mut batch, &mut empty);
                }
            }
        }
        self.first = self.first.wrapping_add(1);
        batch.extend(
            empty
                .into_iter()
                .filter(|(p, _)| self.ended.contains(p))
                .map(|(partition, at)| Polled::End { partition, at }),
        );
        batch
    }
}

/// How long a poll that found nothing waits on the main queue.
const IDLE_POLL: Duration = Duration::from_millis(10);

/// Adds one polled message to `batch`, or notes a partition's end; false
/// for an error (logged).
fn take(
    ended: &mut BTreeSet<i32>,
    polled: KafkaResult<BorrowedMessage<'_>>,
    batch: &mut Vec<Polled>,
    empty: &mut BTreeMap<i32, Instant>,
) -> bool {
    match polled {
        Ok(m) => {
            ended.remove(&m.partition());
            empty.remove(&m.partition());
            batch.push(Polled::Message(Raw::of(&m)));
            true
        }
        Err(KafkaError::PartitionEOF(partition)) => {
            ended.insert(partition);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "labels consumer");
            false
        }
    }
}

/// The history's view of a stored batch: each message's report time (None
/// for a value that is not a label) and the partition ends, in the order
/// read.
fn seen(polled: &[Polled], reported: &[Option<i64>]) -> Vec<Seen> {
    let mut reported = reported.iter();
    polled
        .iter()
        .map(|p| match p {
            Polled::Message(m) => match *reported.next().expect("one per message") {
                Some(reported_at) => Seen::Label { partition: m.partition, reported_at },
                None => Seen::Unreadable { partition: m.partition },
            },
            Polled::End { partition, at } => Seen::End { partition: *partition, at: *at },
        })
        .collect()
}

/// One polled message, owned.
pub(super) struct Raw {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Vec<u8>,
    /// Kafka timestamp, Unix ms.
    pub(super) timestamp_ms: Option<i64>,
}

impl Raw {
    pub(super) fn of(m: &BorrowedMessage<'_>) -> Self {
        Raw {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// Labels, dead letters for the values that are not labels or can never be
/// stored (oversized, reported too far ahead: `LabelRecord::check`), and
/// when each message was reported (None for a bad one: it proves nothing
/// about the report times of its partition).
///
/// How far ahead a label may be reported is measured from its Kafka
/// timestamp, not from the clock at reading: every instance, and both the
/// labels consumer (which skips a bad label) and the dead-letter consumer
/// (which sends it, `labels_dlq`), judge it the same whenever they read it,
/// so none is skipped by one and taken by the other. A Kafka timestamp
/// itself beyond the clock's bound is refused (brokers refuse most:
/// `log.message.timestamp.after.max.ms`).
pub(super) fn decode(batch: &[&Raw], bound: TimeBound) -> (Vec<LabelRecord>, Vec<DeadLetter>, Vec<Option<i64>>) {
    let mut labels = Vec::with_capacity(batch.len());
    let mut dead = Vec::new();
    let mut reported = Vec::with_capacity(batch.len());
    let now = crate::metrics::unix_ms().div_euclid(1000);
    for r in batch {
        let timestamp = r.timestamp_ms.map_or(now, |ms| ms.div_euclid(1000));
        let label = if timestamp > bound.latest() {
            Err(format!(
                "label refused: its Kafka timestamp {timestamp} is beyond the latest accepted now, {}",
                bound.latest()
            ))
        } else {
            // Without `reported_at`, its Kafka timestamp.
            from_json(&r.value).map_err(|e| e.to_string()).and_then(|mut l| {
                l.reported_at.get_or_insert(timestamp);
                l.check(bound.latest_at(timestamp)).map(|()| l).map_err(|problem| format!("label refused: {problem}"))
            })
        };
        match label {
            Ok(label) => {
                reported.push(label.reported_at);
                labels.push(label);
            }
            Err(e) => {
                reported.push(None);
                dead.push(DeadLetter {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    error: e,
                    source: Some((r.partition, r.offset)),
                });
            }
        }
    }
    (labels, dead, reported)
}

/// Commits past the last message of each partition in `batch`.
pub(super) fn commit<C: rdkafka::consumer::ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, batch: &[&Raw]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: &str, timestamp_s: i64) -> Raw {
        Raw { partition: 0, offset: 7, key: None, value: value.into(), timestamp_ms: Some(timestamp_s * 1000) }
    }

    #[test]
    fn a_labels_report_time_is_judged_against_its_kafka_timestamp_not_the_clock() {
        // A day of skew: the decision is the same whenever it is read, by
        // any instance, as the dead-letter consumer and the labels consumer
        // must agree.
        let bound = TimeBound::new(86_400);
        let sent = crate::metrics::unix_ms() / 1000 - 10 * 86_400;
        let within = format!(r#"{{"trans_num":"t","cc_num":"1","is_fraud":1,"reported_at":{}}}"#, sent + 86_400);
        let beyond = format!(r#"{{"trans_num":"t","cc_num":"1","is_fraud":1,"reported_at":{}}}"#, sent + 86_401);
        let (a, b) = (raw(&within, sent), raw(&beyond, sent));
        let (labels, dead, reported) = decode(&[&a, &b], bound);
        assert_eq!(labels.len(), 1, "{dead:?}");
        assert_eq!(reported, vec![Some(sent + 86_400), None]);
        assert!(dead[0].error.contains("reported_at"), "{}", dead[0].error);
        assert_eq!(dead[0].source, Some((0, 7)));
    }

    #[test]
    fn a_kafka_timestamp_beyond_the_clocks_bound_is_refused_and_one_without_reported_at_takes_it() {
        let bound = TimeBound::new(60);
        let now = crate::metrics::unix_ms() / 1000;
        let value = r#"{"trans_num":"t","cc_num":"1","is_fraud":0}"#;
        let (ahead, on_time) = (raw(value, now + 3_600), raw(value, now - 5));
        let (labels, dead, _) = decode(&[&ahead, &on_time], bound);
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[0].reported_at, Some(now - 5), "no reported_at: its Kafka timestamp");
        assert!(dead[0].error.contains("Kafka timestamp"), "{}", dead[0].error);
    }
}
