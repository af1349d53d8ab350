//! The Kafka source: one consumer in a consumer group, polled by a dedicated
//! thread. It groups records into batches (closed at `batch_max_records` or
//! `batch_max_ms` after the first record), hands each batch to the scoring
//! stage with an in-flight permit, and commits offsets only as far as the
//! [`OffsetTracker`] allows (every sink acknowledged every record up to it).
//!
//! Backpressure: when every permit is taken (a sink is slow or down) the
//! thread pauses its partitions and keeps polling, which serves rebalances
//! and keeps the group membership alive, without fetching. On revocation it
//! waits (bounded) for the revoked partitions' batches, commits what they
//! stored, and forgets them; records not yet dispatched are dropped and
//! redelivered to the partition's next owner.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::align::Aligner;
use super::decode::RawRecord;
use super::offsets::{BatchId, OffsetTracker, Span};
use crate::config::KafkaConfig;
use crate::shutdown::Shutdown;

/// A batch on its way to scoring and the sinks.
pub struct Dispatched {
    pub id: BatchId,
    pub spans: Vec<Span>,
    pub records: Vec<RawRecord>,
    /// Returned when the batch is acknowledged (or abandoned).
    pub permit: OwnedSemaphorePermit,
}

/// State shared by the source thread, its rebalance callbacks and the tasks
/// that acknowledge batches.
pub struct Shared {
    tracker: Mutex<OffsetTracker>,
    acked: Condvar,
    /// Set at shutdown: revocation no longer waits for batches.
    closing: AtomicBool,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self { tracker: Mutex::default(), acked: Condvar::new(), closing: AtomicBool::new(false) })
    }

    /// Every sink stored the batch.
    pub fn ack(&self, id: BatchId, spans: &[Span]) {
        let known = self.tracker.lock().expect("tracker lock").ack(id, spans);
        if !known {
            tracing::debug!(batch = id, "acknowledgement for revoked partitions ignored");
        }
        self.acked.notify_all();
    }

    /// Waits until no batch of `partitions` (all if None) is in flight, or
    /// the deadline passes; returns how many are still pending.
    fn wait_idle(&self, partitions: Option<&[i32]>, deadline: Instant) -> usize {
        let mut tracker = self.tracker.lock().expect("tracker lock");
        loop {
            let pending = tracker.pending(partitions);
            let now = Instant::now();
            if pending == 0 || now >= deadline {
                return pending;
            }
            tracker = self.acked.wait_timeout(tracker, deadline - now).expect("tracker lock").0;
        }
    }
}

/// Rebalance handling (runs inside `poll`, on the source thread).
pub struct SourceContext {
    shared: Arc<Shared>,
    topic: String,
    drain: Duration,
    revoked: Mutex<Vec<i32>>,
    assignment_changed: AtomicBool,
    metrics: Arc<crate::metrics::Metrics>,
    /// The labels progress a rebalance's final commit carries
    /// ([`SourceSettings::labels_applied`]); None without the aligner.
    labels_applied: Option<Arc<dyn Fn() -> super::peers::LabelsApplied + Send + Sync>>,
    /// The bounds last published (`Poller::commit`): a rebalance's final
    /// commit carries them on, so the partitions' next owners start from
    /// them (`peers::inherited`).
    published: Mutex<std::collections::BTreeMap<i32, Option<i64>>>,
    /// Partitions written to since their end was read: the aligner's ends
    /// undone, in queue order.
    grown: crate::kafka::GrownPartitions,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::log_client_error(&error, reason);
    }

    /// librdkafka's periodic statistics: the consumer lag of each partition
    /// we own (`statistics.interval.ms`).
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            self.metrics.set_lag(&self.topic, []);
            return;
        };
        // A partition revoked from us can stay in the statistics, `desired`,
        // with the lag it had when it left (seen after a rebalance): only
        // partitions being fetched count.
        let fetching =
            |p: &rdkafka::statistics::Partition| !matches!(p.fetch_state.as_str(), "none" | "stopping" | "stopped");
        let lags = topic.partitions.values().filter(|p| p.partition >= 0 && p.desired && fetching(p)).filter_map(|p| {
            // consumer_lag counts from the committed offset; before the first
            // commit it is unknown (-1), so count from the fetch position.
            let lag = match p.consumer_lag {
                l if l >= 0 => l,
                _ if p.hi_offset >= 0 && p.app_offset >= 0 => (p.hi_offset - p.app_offset).max(0),
                _ => return None,
            };
            Some((p.partition, lag))
        });
        self.metrics.set_lag(&self.topic, lags);
        self.grown.record(&statistics, &self.topic);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let partitions = self.partitions_of(list);
        if !self.shared.closing.load(Ordering::SeqCst) {
            let left = self.shared.wait_idle(Some(&partitions), Instant::now() + self.drain);
            if left > 0 {
                tracing::warn!(
                    batches = left,
                    "partitions revoked with batches unfinished; the new owner re-reads them"
                );
            }
        }
        let offsets = {
            let mut tracker = self.shared.tracker.lock().expect("tracker lock");
            let offsets = tracker.take_committable(Some(&partitions));
            tracker.forget(&partitions);
            offsets
        };
        // With the bound last published and the labels progress: the
        // partitions' next owners start from the bound and look for fewer
        // of their pending labels (`History::forget_cards`).
        let metadata = self.labels_applied.as_ref().map(|labels| {
            let (labels, published) = (labels(), self.published.lock().expect("published lock").clone());
            move |p: i32| match published.get(&p) {
                Some(bound) => super::peers::encode(*bound, labels),
                None => super::peers::encode_labels_only(labels),
            }
        });
        commit_with(
            consumer,
            &self.topic,
            &offsets,
            metadata.as_ref().map(|m| m as &dyn Fn(i32) -> String),
            CommitMode::Sync,
        );
        tracing::info!(?partitions, "partitions revoked");
        self.revoked.lock().expect("revoked lock").extend(partitions);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.partitions_of(list);
                tracing::info!(?partitions, "partitions assigned");
                self.shared.tracker.lock().expect("tracker lock").assign(partitions);
                // The source thread tells the history, once it has read
                // what the previous owners published (`after_rebalance`).
                self.assignment_changed.store(true, Ordering::SeqCst);
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

impl SourceContext {
    fn partitions_of(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect()
    }
}

fn commit(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    offsets: &std::collections::BTreeMap<i32, i64>,
    mode: CommitMode,
) {
    commit_with(consumer, topic, offsets, None, mode);
}

/// Commits `offsets`, each with its `metadata` when given.
fn commit_with(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    offsets: &std::collections::BTreeMap<i32, i64>,
    metadata: Option<&dyn Fn(i32) -> String>,
    mode: CommitMode,
) {
    if offsets.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for (&partition, &next) in offsets {
        if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(next)) {
            tracing::error!(error = %e, partition, "cannot build commit list");
        }
        if let (Some(metadata), Some(mut e)) = (metadata, list.find_partition(topic, partition)) {
            e.set_metadata(metadata(partition));
        }
    }
    match consumer.commit(&list, mode) {
        Ok(()) => tracing::debug!(?offsets, "offsets committed"),
        Err(e) => tracing::warn!(error = %e, ?offsets, "offset commit failed; will be retried with the next one"),
    }
}

/// Settings of the source thread.
pub struct SourceSettings {
    pub kafka: KafkaConfig,
    /// `group.instance.id` (static membership), or None.
    pub instance_id: Option<String>,
    /// Bounded wait for in-flight batches at revocation and shutdown.
    pub drain: Duration,
    /// Where consumer lag is reported.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Called when partitions are assigned (their cards may have changed
    /// elsewhere since this instance last held them), with the labels
    /// progress their previous owners published and whether this process
    /// made the last commit of every one (`peers::Inherited`).
    pub on_assign: Arc<dyn Fn(i64, bool) + Send + Sync>,
    /// Let records out in event-time order across partitions (the history
    /// needs it; `super::align`).
    pub align: bool,
    /// How far this instance has applied labels, published to the others
    /// with its bounds.
    pub labels_applied: Arc<dyn Fn() -> super::peers::LabelsApplied + Send + Sync>,
}

/// A started source: the thread and the shared acknowledgement state.
pub struct Source {
    pub shared: Arc<Shared>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Why the Kafka source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot create a Kafka consumer for {brokers}: {source}")]
    Consumer { brokers: String, source: KafkaError },
    #[error("cannot subscribe to topic {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error("cannot start the Kafka source thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Creates the consumer, subscribes and starts the polling thread.
pub fn start(
    settings: SourceSettings,
    batches: mpsc::Sender<Dispatched>,
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
    abandon: tokio_util::sync::CancellationToken,
) -> Result<Source, SourceError> {
    let kafka = &settings.kafka;
    let shared = Shared::new();
    let context = SourceContext {
        shared: shared.clone(),
        topic: kafka.topic.clone(),
        drain: settings.drain,
        revoked: Mutex::default(),
        assignment_changed: AtomicBool::new(false),
        metrics: settings.metrics.clone(),
        labels_applied: settings.align.then(|| settings.labels_applied.clone()),
        published: Mutex::default(),
        grown: crate::kafka::GrownPartitions::default(),
    };
    let mut config = crate::kafka::client_config(&kafka.brokers, &[]);
    config
        .set("group.id", &kafka.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Ends tell the aligner a partition holds nothing back.
        .set("enable.partition.eof", if settings.align { "true" } else { "false" })
        // Bounds what librdkafka prefetches (16 MiB queued, 256 KiB per
        // partition per fetch); our own in-flight permits bound the rest.
        .set("queued.max.messages.kbytes", "16384")
        .set("max.partition.fetch.bytes", "262144")
        // When that queue is full librdkafka postpones the next fetch by
        // this much (default 1 s): at scoring speed the queue drains in
        // milliseconds, so the default left the pipeline idle most of the
        // time (120k -> 300k records/s measured, benches/kafka_pipeline.py).
        .set("fetch.queue.backoff.ms", "10")
        // Consumer lag per partition for /metrics and the live view.
        .set("statistics.interval.ms", "1000")
        // How fast a dead member's partitions move on (docs/architecture.md,
        // "Takeover"); heartbeats are sent by librdkafka's own thread, three
        // per session timeout, so a busy poll loop does not expire us.
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (kafka.session_timeout_ms / 3).min(3_000).to_string());
    if let Some(id) = &settings.instance_id {
        config.set("group.instance.id", id);
        tracing::info!(instance_id = %id, "static group membership: a restart takes its partitions back at once");
    }
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer<SourceContext> = config
        .create_with_context(context)
        .map_err(|source| SourceError::Consumer { brokers: kafka.brokers.clone(), source })?;
    consumer
        .subscribe(&[&kafka.topic])
        .map_err(|source| SourceError::Subscribe { topic: kafka.topic.clone(), source })?;
    let thread_shared = shared.clone();
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new().name("kafka-source".into()).spawn(move || {
        let max_records = settings.kafka.batch_max_records;
        let aligner = settings.align.then(Aligner::default);
        let mut poller = Poller {
            runtime,
            consumer,
            settings,
            shared: thread_shared,
            batches,
            permits,
            shutdown: shutdown.clone(),
            batch: Vec::with_capacity(max_records),
            opened: None,
            paused: false,
            aligner,
            peers: super::peers::Peers::default(),
            held: BTreeSet::new(),
            released_at: Instant::now(),
            next_id: 1,
            last_commit: Instant::now(),
            last_error: None,
        };
        while !shutdown.is_triggered() {
            if let Flow::Stop = poller.step() {
                break;
            }
        }
        poller.finish(abandon);
    })?;
    Ok(Source { shared, thread })
}

/// Records gathered in the aligner before it is asked what may go out, or
/// how long at most (a bound on the latency it adds).
const RELEASE_EVERY: usize = 256;
const RELEASE_AFTER: Duration = Duration::from_millis(2);

/// How long the source waits for an in-flight permit before it pauses its
/// partitions (and keeps polling, to stay in the group).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// The source thread's state between two polls: the batch being filled,
/// whether consumption is paused, and when offsets were last committed.
/// [`Poller::step`] is one turn of the loop: poll, apply a rebalance, take
/// the record, resume, dispatch a due batch, commit.
struct Poller {
    runtime: tokio::runtime::Handle,
    consumer: BaseConsumer<SourceContext>,
    settings: SourceSettings,
    shared: Arc<Shared>,
    batches: mpsc::Sender<Dispatched>,
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
    /// Records read and not yet dispatched, and when the first came.
    batch: Vec<RawRecord>,
    opened: Option<Instant>,
    /// Partitions paused because every in-flight permit is taken.
    paused: bool,
    /// Records waiting for the other partitions (history on), and the
    /// partitions paused because their buffers are full.
    aligner: Option<Aligner>,
    /// With the aligner: what this instance and the others in its group
    /// publish of their partitions' progress (`super::peers`).
    peers: super::peers::Peers,
    held: BTreeSet<i32>,
    released_at: Instant,
    next_id: BatchId,
    last_commit: Instant,
    last_error: Option<Instant>,
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl Poller {
    fn max_wait(&self) -> Duration {
        Duration::from_millis(self.settings.kafka.batch_max_ms)
    }

    /// How long the next poll may block: until the open batch is due.
    fn poll_timeout(&self) -> Duration {
        match self.opened {
            _ if self.paused => Duration::from_millis(50),
            Some(t) => (t + self.max_wait()).saturating_duration_since(Instant::now()),
            None => Duration::from_millis(100),
        }
    }

    fn step(&mut self) -> Flow {
        let polled = self.consumer.poll(self.poll_timeout()).map(|r| r.map(|m| raw(&m)));
        // A record was read: more are likely queued, let them gather first.
        let streaming = matches!(polled, Some(Ok(_)));
        self.after_rebalance();
        // Statistics polled on the way came before what the poll returned.
        let grown = self.consumer.context().grown.take();
        if let Some(aligner) = &mut self.aligner {
            for partition in grown {
                aligner.grown(partition);
            }
        }
        if let Flow::Stop = self.take(polled) {
            return Flow::Stop;
        }
        self.release_aligned(streaming);
        if self.batch.is_empty() {
            self.opened = None;
        }
        // Resume as soon as a batch can go out again, whether or not one is
        // waiting (a rebalance may have emptied the pending batch).
        if self.paused && self.permits.available_permits() > 0 {
            // Backpressure, not news: the sinks' health says when they fail.
            tracing::debug!("batches complete again; resuming consumption");
            set_paused(&self.consumer, false);
            self.paused = false;
            // Resumed them all: the full ones are paused again below, and
            // silence while paused says nothing about a partition.
            self.held.clear();
            if let Some(aligner) = &mut self.aligner {
                aligner.heard_all(Instant::now());
            }
        }
        self.hold_full();
        let due = self.opened.is_some_and(|t| t.elapsed() >= self.max_wait());
        if !self.batch.is_empty() && (self.batch.len() >= self.settings.kafka.batch_max_records || due) {
            if let Flow::Stop = self.dispatch() {
                return Flow::Stop;
            }
        }
        if self.last_commit.elapsed() >= Duration::from_millis(200) {
            let offsets = self.shared.tracker.lock().expect("tracker lock").take_committable(None);
            self.commit(&offsets, CommitMode::Async);
            self.exchange_progress();
            self.last_commit = Instant::now();
        }
        Flow::Continue
    }

    /// Commits stored offsets; with the aligner, each owned partition's
    /// bound goes with them, for the other instances (`super::peers`).
    fn commit(&mut self, offsets: &std::collections::BTreeMap<i32, i64>, mode: CommitMode) {
        let topic = &self.settings.kafka.topic;
        match &mut self.aligner {
            Some(aligner) => {
                for (p, next) in offsets {
                    aligner.stored(*p, *next);
                }
                let bounds = aligner.published(Instant::now(), self.paused);
                self.consumer.context().published.lock().expect("published lock").clone_from(&bounds);
                let labels = (self.settings.labels_applied)();
                self.peers.publish(&self.consumer, topic, offsets, &bounds, labels, mode);
            }
            None => commit(&self.consumer, topic, offsets, mode),
        }
    }

    /// Reads what the other instances published and lets the aligner hold
    /// records back for them.
    fn exchange_progress(&mut self) {
        let Some(aligner) = &mut self.aligner else { return };
        let owned = aligner.partitions();
        if let Some(others) = self.peers.others(&self.consumer, &self.settings.kafka.topic, &owned) {
            aligner.set_remote(others.bounds);
            aligner.set_remote_labels(others.labels);
        }
    }

    /// Drops records of partitions a rebalance took away, and restates the
    /// pause for a new assignment.
    fn after_rebalance(&mut self) {
        let context = self.consumer.context();
        let revoked = std::mem::take(&mut *context.revoked.lock().expect("revoked lock"));
        if !revoked.is_empty() {
            self.batch.retain(|r| !revoked.contains(&r.partition));
            if let Some(aligner) = &mut self.aligner {
                aligner.revoke(&revoked);
            }
        }
        if context.assignment_changed.swap(false, Ordering::SeqCst) {
            // librdkafka may keep a partition's pause flag across a
            // rebalance: state it explicitly for the new assignment.
            set_paused(&self.consumer, self.paused);
            self.held.clear();
            let topic = &self.settings.kafka.topic;
            match &mut self.aligner {
                Some(aligner) => {
                    let assigned: Vec<i32> = self
                        .consumer
                        .assignment()
                        .map(|l| l.elements_for_topic(topic).iter().map(|e| e.partition()).collect())
                        .unwrap_or_default();
                    // Read before this instance's first commit overwrites it.
                    let inherited = super::peers::inherited(&self.consumer, topic, &assigned);
                    aligner.assign(&assigned, &inherited.bounds, Instant::now());
                    self.peers.assigned();
                    (self.settings.on_assign)(inherited.labels, inherited.ours);
                }
                None => (self.settings.on_assign)(i64::MIN, false),
            }
        }
    }

    /// Moves the records the aligner lets out into the batch (none while
    /// consumption is paused: no batch can go out then). While records
    /// stream in, only every [`RELEASE_EVERY`] of them or [`RELEASE_AFTER`]:
    /// working out the order on every record cost 11% of the throughput
    /// (benches/kafka_pipeline.py).
    fn release_aligned(&mut self, streaming: bool) {
        let Some(aligner) = &mut self.aligner else { return };
        let room = self.settings.kafka.batch_max_records.saturating_sub(self.batch.len());
        let soon = aligner.len() < RELEASE_EVERY && self.released_at.elapsed() < RELEASE_AFTER;
        if self.paused || room == 0 || (streaming && soon) {
            return;
        }
        self.released_at = Instant::now();
        let before = self.batch.len();
        aligner.release(&mut self.batch, room, Instant::now());
        if self.batch.len() > before {
            self.opened.get_or_insert_with(Instant::now);
        }
    }

    /// Pauses partitions whose aligner buffers are full, resumes them once
    /// drained to half (unless everything is paused for the sinks).
    fn hold_full(&mut self) {
        let (Some(aligner), false) = (&self.aligner, self.paused) else { return };
        let (full, drained) = aligner.full();
        let topic = &self.settings.kafka.topic;
        let list = |partitions: &[i32]| {
            let mut list = TopicPartitionList::new();
            for p in partitions {
                list.add_partition(topic, *p);
            }
            list
        };
        let pause: Vec<i32> = full.into_iter().filter(|p| !self.held.contains(p)).collect();
        let resume: Vec<i32> = drained.into_iter().filter(|p| self.held.contains(p)).collect();
        if !pause.is_empty() {
            if let Err(e) = self.consumer.pause(&list(&pause)) {
                tracing::warn!(error = %e, "cannot pause partitions ahead in event time");
            }
            self.held.extend(pause);
        }
        if !resume.is_empty() {
            if let Err(e) = self.consumer.resume(&list(&resume)) {
                tracing::warn!(error = %e, "cannot resume partitions");
            }
            for p in resume {
                self.held.remove(&p);
            }
        }
    }

    /// Adds a polled record to the batch, or reports the error.
    fn take(&mut self, polled: Option<Result<RawRecord, KafkaError>>) -> Flow {
        match polled {
            Some(Ok(record)) => match &mut self.aligner {
                Some(aligner) => aligner.push(record, Instant::now()),
                None => {
                    self.batch.push(record);
                    self.opened.get_or_insert_with(Instant::now);
                }
            },
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(aligner) = &mut self.aligner {
                    aligner.end(partition, Instant::now());
                }
            }
            // Fatal: the consumer is finished (another member took our
            // group.instance.id). Polling on would consume nothing while
            // looking alive; stop the process and say why.
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                tracing::error!(
                    error = %e,
                    instance_id = self.settings.instance_id.as_deref().unwrap_or(""),
                    "Kafka consumer failed for good (another instance with the same kafka.instance_id?); shutting down"
                );
                self.shutdown.trigger();
                return Flow::Stop;
            }
            // Broker down, topic missing, ...: librdkafka reconnects itself.
            Some(Err(e)) if self.last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                self.last_error = Some(Instant::now());
            }
            Some(Err(_)) | None => {}
        }
        Flow::Continue
    }

    /// Hands the batch to scoring once an in-flight permit is free; pauses
    /// the partitions when none frees up for [`PAUSE_AFTER`].
    fn dispatch(&mut self) -> Flow {
        // A permit frees up quickly unless a sink is down: wait for one
        // briefly without polling. Only a longer wait pauses the partitions
        // (pausing drops librdkafka's prefetched records, so doing it on
        // every momentary shortage would thrash).
        let permits = &self.permits;
        let permit = permits.clone().try_acquire_owned().ok().or_else(|| {
            self.runtime
                .block_on(async { tokio::time::timeout(PAUSE_AFTER, permits.clone().acquire_owned()).await.ok()?.ok() })
        });
        match permit {
            Some(permit) => {
                let max_records = self.settings.kafka.batch_max_records;
                let records = std::mem::replace(&mut self.batch, Vec::with_capacity(max_records));
                self.opened = None;
                if let Some(dispatched) = register(&self.shared, self.next_id, records, permit) {
                    self.next_id += 1;
                    if self.batches.blocking_send(dispatched).is_err() {
                        tracing::error!("scoring stage stopped; source stops");
                        return Flow::Stop;
                    }
                }
            }
            None if !self.paused => {
                tracing::debug!("every in-flight batch is waiting on a sink; pausing consumption");
                set_paused(&self.consumer, true);
                self.paused = true;
            }
            None => {}
        }
        Flow::Continue
    }

    /// Shutdown: records not dispatched are simply not committed (the next
    /// owner reads them); dispatched ones get a bounded time to be stored.
    fn finish(mut self, abandon: tokio_util::sync::CancellationToken) {
        let left = self.shared.wait_idle(None, Instant::now() + self.settings.drain);
        if left > 0 {
            tracing::warn!(batches = left, "shutdown deadline passed; unfinished batches will be re-read on restart");
        }
        abandon.cancel();
        self.shared.closing.store(true, Ordering::SeqCst);
        let offsets = self.shared.tracker.lock().expect("tracker lock").take_committable(None);
        self.commit(&offsets, CommitMode::Sync);
        tracing::info!(?offsets, "source stopped; final offsets committed");
    }
}

/// Registers a batch with the tracker; records of partitions no longer owned
/// are dropped (their next owner reads them).
fn register(
    shared: &Shared,
    id: BatchId,
    mut records: Vec<RawRecord>,
    permit: OwnedSemaphorePermit,
) -> Option<Dispatched> {
    let mut tracker = shared.tracker.lock().expect("tracker lock");
    records.retain(|r| tracker.is_assigned(r.partition));
    if records.is_empty() {
        return None;
    }
    let spans = spans_of(&records);
    if !tracker.dispatch(id, &spans) {
        return None;
    }
    Some(Dispatched { id, spans, records, permit })
}

/// Per partition, the first and last offset in a batch.
pub fn spans_of(records: &[RawRecord]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for r in records {
        match spans.iter_mut().find(|s| s.partition == r.partition) {
            Some(s) => {
                s.first = s.first.min(r.offset);
                s.last = s.last.max(r.offset);
            }
            None => spans.push(Span { partition: r.partition, first: r.offset, last: r.offset }),
        }
    }
    spans
}

fn set_paused(consumer: &BaseConsumer<SourceContext>, pause: bool) {
    let Ok(assignment) = consumer.assignment() else { return };
    let result = if pause { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
    if let Err(e) = result {
        tracing::warn!(error = %e, pause, "cannot pause/resume partitions");
    }
}

fn raw<M: Message>(m: &M) -> RawRecord {
    RawRecord {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: match m.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
            Timestamp::NotAvailable => None,
        },
    }
}
