//! The Kafka source of `fraudflight serve`, a front end over the app core
//! (docs/architecture.md, "A record's way from Kafka to Cassandra"):
//!
//! ```text
//! source thread (Kafka, batches) -> scoring stage (2 at once, in order) -> sink tasks (concurrent)
//!        ^                                                          |
//!        +------------- acknowledgement: offsets committable -------+
//! ```
//!
//! [`kafka`] polls and batches (with history on, [`align`] lets records
//! out in event-time order across partitions); [`decode`] turns records into outcomes and
//! dead letters (scored by the app); the app's sinks write them everywhere;
//! [`offsets`] decides what may be committed. At most `max_in_flight_batches` batches exist at once,
//! which bounds memory whatever the sinks do.

pub mod align;
pub mod decode;
pub mod kafka;
pub mod labels;
pub mod labels_dlq;
pub mod offsets;
pub mod peers;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::KafkaConfig;
use crate::history::order::Turn;
use crate::retry::Retry;
use crate::shutdown::Shutdown;
use kafka::{Dispatched, Shared, SourceSettings};

/// How a batch waits for the labels stream (`history.labels_wait_ms`,
/// `history.labels_idle_ms`; `crate::history::progress`).
#[derive(Debug, Clone, Copy)]
pub struct LabelsWait {
    /// The longest wait of a batch; zero = never wait.
    pub max: Duration,
    /// How long a partition read to its end stays silent before it has
    /// nothing earlier to deliver.
    pub idle: Duration,
}

/// A running pipeline.
pub struct Pipeline {
    source: std::thread::JoinHandle<()>,
    scoring: tokio::task::JoinHandle<()>,
    /// The labels consumer and the labels' dead-letter consumer, when
    /// history is on.
    labels: Vec<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    /// Starts consuming. Stops when `shutdown` fires: drains in-flight
    /// batches for at most `drain`, then abandons what is left (through
    /// `abandon`) and commits what was stored. With history, a batch waits
    /// for the labels its merchant risk counts as `labels_wait` says.
    pub fn start(
        app: Arc<App>,
        kafka: &KafkaConfig,
        instance_id: Option<String>,
        drain: Duration,
        labels_wait: LabelsWait,
        shutdown: Shutdown,
        abandon: CancellationToken,
    ) -> Result<Self, kafka::SourceError> {
        // Every instance reads all labels, under a group of its own: the
        // static instance id, else this host's name. The bad ones are
        // dead-lettered by one member of a shared group.
        let labels = match app.history() {
            Some(_) => {
                let instance = instance_id.clone().unwrap_or_else(crate::config::hostname);
                vec![
                    labels::start(app.clone(), kafka, &instance, labels_wait.max, labels_wait.idle, shutdown.clone())?,
                    labels_dlq::start(app.clone(), kafka, instance_id.as_deref(), shutdown.clone())?,
                ]
            }
            None => Vec::new(),
        };
        let permits = Arc::new(Semaphore::new(kafka.max_in_flight_batches));
        let (tx, rx) = mpsc::channel(kafka.max_in_flight_batches);
        let on_assign = {
            let app = app.clone();
            Arc::new(move |applied_before, ours| app.partitions_assigned(applied_before, ours))
        };
        let settings = SourceSettings {
            kafka: kafka.clone(),
            instance_id,
            drain,
            metrics: app.metrics().clone(),
            on_assign,
            align: app.history().is_some(),
            labels_applied: {
                let history = app.history().cloned();
                Arc::new(move || {
                    history.as_ref().map_or(peers::LabelsApplied::NONE, |h| peers::LabelsApplied {
                        through: h.labels_applied_through(),
                        in_order: h.labels_applied_in_order(),
                    })
                })
            },
        };
        let source = kafka::start(settings, tx, permits, shutdown, abandon.clone())?;
        let scoring = tokio::spawn(scoring_stage(app, rx, source.shared.clone(), kafka.max_record_bytes, abandon));
        Ok(Self { source: source.thread, scoring, labels })
    }

    /// Waits for the source thread (it returns after its final commit) and
    /// the scoring stage.
    pub async fn join(self) {
        let (source, labels) = (self.source, self.labels);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = source.join();
            labels.into_iter().for_each(|l| {
                let _ = l.join();
            });
        })
        .await;
        let _ = self.scoring.await;
    }
}

/// Batches scored at once: one per core of the 2-core machine this was
/// measured on (one at a time left a core idle: scoring is most of the work).
const SCORING_CONCURRENCY: usize = 2;

/// Scores batches, up to [`SCORING_CONCURRENCY`] at once but handed on in
/// dispatch order (the stage that will own per-card state), and gives each
/// to its own sink task.
async fn scoring_stage(
    app: Arc<App>,
    batches: mpsc::Receiver<Dispatched>,
    shared: Arc<Shared>,
    max_record_bytes: usize,
    abandon: CancellationToken,
) {
    let mut writers = tokio::task::JoinSet::new();
    let scored = tokio_stream::wrappers::ReceiverStream::new(batches)
        .map(|batch| {
            let (app, abandon) = (app.clone(), abandon.clone());
            // Taken here, in dispatch order: the history is updated in the
            // order batches were read, though two are scored at once.
            let turn = app.history_turn().map(Arc::new);
            async move {
                let records = Arc::new(batch.records);
                let scored = score_with_retry(&app, &records, max_record_bytes, turn.clone(), &abandon).await;
                (batch.spans, batch.id, batch.permit, records, scored, turn)
            }
        })
        .buffered(SCORING_CONCURRENCY);
    futures::pin_mut!(scored);
    while let Some((spans, id, permit, records, scored, turn)) = scored.next().await {
        let Some(scored) = scored else { continue };
        let (app, shared) = (app.clone(), shared.clone());
        writers.spawn(async move {
            let outcomes = scored.outcomes;
            // Held until stored: later batches read merchant tiles only once
            // this batch's rows are in them (history::order).
            let _turn = turn;
            match app.store(&outcomes, scored.dead).await {
                Ok(written) => {
                    shared.ack(id, &spans);
                    // Every record of the batch is done now, stored or dead-lettered.
                    let created = records.iter().filter_map(|r| r.timestamp_ms);
                    app.metrics().stored(outcomes.num_rows(), written.dead_letters, created);
                }
                Err(e) => tracing::warn!(error = %e, batch = id, "batch not stored; it will be re-read"),
            }
            drop(permit);
        });
        // Reap finished writers so the set does not grow.
        while writers.try_join_next().is_some() {}
    }
    while writers.join_next().await.is_some() {}
}

/// Scores one batch on the blocking pool, retrying with backoff while the
/// model fails; None once `abandon` fires.
async fn score_with_retry(
    app: &Arc<App>,
    records: &Arc<Vec<decode::RawRecord>>,
    max_record_bytes: usize,
    turn: Option<Arc<Turn>>,
    abandon: &CancellationToken,
) -> Option<decode::ScoredRecords> {
    let mut retry = Retry::new("scoring", abandon);
    loop {
        let (app, records, turn) = (app.clone(), records.clone(), turn.clone());
        let result = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let scored = decode::score_records(&records, max_record_bytes, |batch| {
                app.score_for_storage(batch, turn.as_deref())
            })?;
            app.metrics().scored(records.len(), &scored.outcomes, scored.dead.len(), started.elapsed());
            Ok::<_, crate::score::ScoreError>(scored)
        })
        .await;
        let error = match result {
            Ok(Ok(scored)) => return Some(scored),
            Ok(Err(e)) => format!("scoring a batch failed: {e}"),
            Err(e) => format!("scoring task panicked: {e}"),
        };
        tracing::error!(error, "batch not scored; retrying");
        retry.failed(error).await.ok()?;
    }
}
