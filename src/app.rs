//! The application core that every front end calls: the Kafka source,
//! Flight, HTTP and the demo's simulator loop. It owns the scorer, the
//! in-memory store, the sinks and the live counters; its fields are private,
//! so a front end says what it wants done (score for storage, store, query,
//! load a model) and never reaches into the parts. It knows nothing of
//! tonic, axum or librdkafka (docs/architecture.md, "Layers").

use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::config::QualityConfig;
use crate::features::RowError;
use crate::history::order::Turn;
use crate::metrics::Metrics;
use crate::metrics::SinkState;
use crate::quality::{Quality, VersionInfo};
use crate::score::model::{ModelError, ModelFiles, ParityReport};
use crate::score::registry::{Role, SwitchError, Switched};
use crate::score::{outcome, ScoreError, ScoreOptions, Scored, Scorer};
use crate::sink::{Sinks, Written};
use crate::store::memory::MemoryStore;
use crate::store::Query;

/// Days after a transaction's day that its labels are awaited (the
/// history's label delay).
fn label_delay_days() -> i64 {
    crate::history::definitions::table().label_delay_days
}

/// Score rows one transaction of live quality counts at most (the tallies
/// it writes stay well under Cassandra's largest mutation).
const COUNT_CALL_ROWS: u64 = 200_000;
/// How long measuring waits for a sink (the search engine) to take
/// quality documents.
const QUALITY_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Retraining decisions shown in `model-info` and the summary.
const DECISIONS_SHOWN: usize = 20;

/// Labels not applied because the history's store gave up (at shutdown):
/// not committed, so they are read again.
fn abandoned(last: String) -> crate::retry::Abandoned {
    crate::retry::Abandoned { sink: "history", attempts: 1, last }
}

/// Shared state of a running fraudflight. Front ends reach it only through
/// its methods.
pub struct App {
    scorer: Scorer,
    /// Recent outcomes of this process (the answer to queries when no
    /// store is configured, and the live view's source).
    store: MemoryStore,
    /// Counters and histograms: the summary, the live view, `/metrics`.
    metrics: Arc<Metrics>,
    /// Where ingested outcomes go (`serve`); empty in the demo.
    sinks: Sinks,
    /// Fires when writes still retrying at shutdown must give up.
    abandon: tokio_util::sync::CancellationToken,
    /// Set = card numbers are replaced by their keyed hash before storage.
    cards: Option<crate::security::card::CardHasher>,
    /// Live model quality from labels.
    quality: Arc<Quality>,
    /// `<topic>.labels` when Kafka is on: analysts' labels go there, so
    /// every instance applies them as it applies any label.
    labels_topic: Option<String>,
    /// The service whose model line-up is saved in Cassandra (the Kafka
    /// group), and the model version it was configured to start with: a
    /// restart with the same configuration restores the line-up.
    lineup_service: String,
    configured_model: String,
}

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Read(#[from] crate::store::reader::ReadError),
}

/// Why a DoPut batch was not ingested.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error("not stored: {0}")]
    Abandoned(#[from] crate::retry::Abandoned),
    #[error("scoring task failed: {0}")]
    Task(String),
}

/// The `trans_num` column of outcomes.
fn trans_nums(outcomes: &RecordBatch) -> arrow::array::StringArray {
    use arrow::array::AsArray;
    outcomes.column_by_name(crate::record::column::trans_num).expect("outcome column").as_string::<i32>().clone()
}

/// Why labels were refused.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error(transparent)]
    Invalid(#[from] crate::history::labels::LabelError),
    #[error("labels feed the history features, which are off here (history.enabled)")]
    NoHistory,
    #[error("label row {row}: `decided_by` is {by:?}, but an analyst's token labels only in its own name")]
    NotTheDecider { row: usize, by: String },
    #[error("labels not stored: {0}")]
    Abandoned(#[from] crate::retry::Abandoned),
}

/// What a labels call reports.
#[derive(Debug, Serialize)]
pub struct LabelsApplied {
    pub labels: usize,
    /// Of them, labels whose transaction has not been seen (yet): kept, and
    /// applied when it arrives.
    pub pending: usize,
}

/// Why an analyst's label was refused.
#[derive(Debug, thiserror::Error)]
pub enum AnalystLabelError {
    #[error("no alert {0} is held here (the dashboard labels the alerts it shows)")]
    NotHeld(String),
    #[error("card numbers are stored hashed here (privacy.card_hash_key), and a label needs the card: send it to <topic>.labels with the card number")]
    CardsHashed,
    #[error("`by` must be 1 to 64 printable characters (who decided)")]
    BadAnalyst,
    #[error(transparent)]
    Labels(#[from] LabelsError),
    #[error("the label was not sent: {0}")]
    NotSent(String),
}

/// What labelling an alert did.
#[derive(Debug, Serialize)]
pub struct AnalystLabelled {
    pub trans_num: String,
    pub is_fraud: bool,
    pub by: String,
    /// Unix seconds.
    pub reported_at: i64,
    /// "kafka": sent to the labels topic (every instance applies it);
    /// "applied": applied and stored here (no Kafka).
    pub via: &'static str,
}

/// How long an analyst's label may wait for Kafka.
const ANALYST_LABEL_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// A batch had rows that are not valid transactions.
#[derive(Debug, thiserror::Error)]
#[error("{} invalid row(s); first: {}", .0.len(), .0[0])]
pub struct InvalidRows(pub Vec<RowError>);

/// Why scoring a client's batch failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Invalid(#[from] InvalidRows),
}

/// Where a new model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Dir(PathBuf),
    Files(ModelFiles),
}

/// What `load-model` reports.
#[derive(Debug, Serialize)]
pub struct Loaded {
    pub version: String,
    /// The champion before the load.
    pub previous: String,
    pub parity: ParityReport,
    /// Champion, shadow and previous after it.
    pub lineup: Switched,
}

/// What an ingest call reports.
#[derive(Debug, Serialize)]
pub struct Ingested {
    pub accepted: usize,
    pub alerts: usize,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    pub row: usize,
    pub error: String,
}

impl App {
    pub fn new(scorer: Scorer, store: MemoryStore) -> Self {
        Self {
            scorer,
            store,
            metrics: Arc::new(Metrics::new()),
            sinks: Sinks::default(),
            abandon: tokio_util::sync::CancellationToken::new(),
            cards: None,
            quality: Arc::new(Quality::in_memory(QualityConfig::default(), label_delay_days())),
            labels_topic: None,
            lineup_service: "fraudflight".into(),
            configured_model: String::new(),
        }
    }

    /// The same app saving its model line-up under `service`, configured
    /// to start with model version `configured`.
    pub fn with_lineup_service(mut self, service: &str, configured: &str) -> Self {
        self.lineup_service = service.to_string();
        self.configured_model = configured.to_string();
        self
    }

    /// The same app sending analysts' labels to `topic` (the labels topic
    /// the Kafka source reads); without it they are applied here.
    pub fn with_labels_topic(mut self, topic: Option<String>) -> Self {
        self.labels_topic = topic;
        self
    }

    /// The same app measuring live quality with `config`: its book in
    /// Cassandra when that sink is on (call after [`Self::with_sinks`]),
    /// in memory otherwise.
    pub fn with_quality(mut self, config: QualityConfig) -> Self {
        self.quality = Arc::new(match self.sinks.quality_book {
            Some(_) => Quality::stored(config, label_delay_days()),
            None => Quality::in_memory(config, label_delay_days()),
        });
        self
    }

    /// The same app storing keyed hashes of card numbers.
    pub fn with_card_hasher(mut self, cards: Option<crate::security::card::CardHasher>) -> Self {
        self.cards = cards;
        self
    }

    /// Outcomes as they may be stored: card numbers hashed if so configured.
    fn protect(&self, outcomes: RecordBatch) -> RecordBatch {
        match &self.cards {
            Some(cards) => cards.protect(outcomes),
            None => outcomes,
        }
    }

    /// The same app writing to `sinks`.
    pub fn with_sinks(mut self, sinks: Sinks, abandon: tokio_util::sync::CancellationToken) -> Self {
        self.sinks = sinks;
        self.abandon = abandon;
        self
    }

    /// Live counters, for front ends that show or export them.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Version of the model in service.
    pub fn model_version(&self) -> String {
        self.scorer.registry().current().version().to_string()
    }

    /// True when card numbers are stored as keyed hashes.
    pub fn card_hashing(&self) -> bool {
        self.cards.is_some()
    }

    /// Alerts newer than `seq` (at most `max`, newest first) and the newest
    /// sequence number, for a follower of the live view.
    pub fn alerts_since(&self, seq: u64, max: usize) -> (Vec<RecordBatch>, u64) {
        self.store.alerts_since(seq, max)
    }

    /// Labels against predictions over the outcomes held in memory.
    pub fn labelled(&self) -> crate::store::memory::Labelled {
        self.store.labelled()
    }

    /// (recent outcomes, alerts) held in memory.
    pub fn memory_rows(&self) -> (usize, usize) {
        self.store.len()
    }

    /// Each sink: "off", "ok" or "failing".
    pub fn sink_health(&self) -> serde_json::Value {
        self.sinks.health()
    }

    /// The enabled sinks' health and error counts, for `/metrics`.
    pub fn sink_states(&self) -> Vec<SinkState> {
        self.sinks.states()
    }

    /// True when every enabled sink answers now and none is failing.
    pub async fn ready(&self) -> bool {
        self.sinks.ready().await
    }

    /// Scores a batch on its way to storage with the model in service:
    /// outcomes of the valid rows with card numbers protected as configured,
    /// and the invalid rows. Not counted: the caller knows what else it
    /// dropped (see [`Metrics::scored`]).
    /// Each valid row is recorded in the history; with a `turn` (from
    /// [`Self::history_turn`]), after every batch dispatched before it.
    pub fn score_for_storage(&self, batch: &RecordBatch, turn: Option<&Turn>) -> Result<Scored, ScoreError> {
        let Scored { outcomes, invalid } = self.scorer.score_and_record(batch, &ScoreOptions::default(), turn)?;
        Ok(Scored { outcomes: self.protect(outcomes), invalid })
    }

    /// Applies and stores a batch of labels (Flight DoPut `["labels"]`):
    /// all of it, or none when a row is bad. With a `decider` (an analyst's
    /// token), every label is decided by them: one naming someone else is
    /// refused.
    pub async fn put_labels(&self, batch: &RecordBatch, decider: Option<&str>) -> Result<LabelsApplied, LabelsError> {
        if self.scorer.history().is_none() {
            return Err(LabelsError::NoHistory);
        }
        let mut labels = crate::history::labels::from_batch(batch, self.scorer.time_bound().latest())?;
        if let Some(name) = decider {
            for (row, label) in labels.iter_mut().enumerate() {
                match label.decided_by.as_deref() {
                    Some(by) if by != name => return Err(LabelsError::NotTheDecider { row, by: by.to_string() }),
                    _ => label.decided_by = Some(name.to_string()),
                }
            }
        }
        Ok(self.store_labels(&labels, crate::metrics::unix_ms(), false).await?)
    }

    /// An analyst's decision on a held alert becomes a label: sent to the
    /// labels topic when Kafka is on, else applied and stored here; either
    /// way stored, counted in live quality and used by retraining.
    pub async fn label_alert(
        &self,
        trans_num: &str,
        is_fraud: bool,
        by: &str,
    ) -> Result<AnalystLabelled, AnalystLabelError> {
        if by.trim().is_empty() || by.chars().count() > 64 || by.chars().any(char::is_control) {
            return Err(AnalystLabelError::BadAnalyst);
        }
        if self.cards.is_some() {
            return Err(AnalystLabelError::CardsHashed);
        }
        // Without history nothing here reads the labels topic, and nothing
        // applies a label: refused, not accepted and lost.
        if self.scorer.history().is_none() {
            return Err(LabelsError::NoHistory.into());
        }
        let alert = self.store.alert(trans_num).ok_or_else(|| AnalystLabelError::NotHeld(trans_num.to_string()))?;
        let cc_num = alert
            .column_by_name(crate::record::column::cc_num)
            .map(|c| arrow::array::AsArray::as_string::<i32>(c).value(0).to_string())
            .ok_or_else(|| AnalystLabelError::NotHeld(trans_num.to_string()))?;
        let now_ms = crate::metrics::unix_ms();
        let label = crate::history::LabelRecord {
            trans_num: trans_num.to_string(),
            cc_num,
            is_fraud,
            reported_at: Some(now_ms / 1000),
            decided_by: Some(by.trim().to_string()),
        };
        let via = match (&self.labels_topic, &self.sinks.kafka) {
            (Some(topic), Some(kafka)) => {
                let value = serde_json::json!({
                    "trans_num": label.trans_num, "cc_num": label.cc_num, "is_fraud": i32::from(is_fraud),
                    "reported_at": label.reported_at, "decided_by": label.decided_by,
                })
                .to_string();
                let sent = kafka.send_keyed(topic, &label.cc_num, value.as_bytes(), &self.abandon);
                match tokio::time::timeout(ANALYST_LABEL_WAIT, sent).await {
                    Ok(Ok(())) => "kafka",
                    Ok(Err(e)) => return Err(AnalystLabelError::NotSent(e.to_string())),
                    Err(_) => {
                        return Err(AnalystLabelError::NotSent(format!(
                            "Kafka did not take it within {ANALYST_LABEL_WAIT:?}"
                        )))
                    }
                }
            }
            _ => {
                self.store_labels(std::slice::from_ref(&label), now_ms, false).await.map_err(LabelsError::from)?;
                "applied"
            }
        };
        tracing::info!(trans_num, is_fraud, by = %by.trim(), via, "analyst label");
        Ok(AnalystLabelled {
            trans_num: label.trans_num,
            is_fraud,
            by: by.trim().to_string(),
            reported_at: now_ms / 1000,
            via,
        })
    }

    /// Applies labels to the history (a label without `reported_at` was
    /// reported when received), stores them in Cassandra `labels` (card
    /// numbers protected as configured) and sends `dead` ones to the
    /// labels' DLQ (`topics` = (labels topic, its DLQ)); Ok once all are
    /// stored, so a Kafka source may commit them. `from_stream`: they come
    /// from the labels topic every instance reads (else from this process's
    /// callers only).
    pub async fn store_labels(
        &self,
        labels: &[crate::history::LabelRecord],
        received_ms: i64,
        from_stream: bool,
    ) -> Result<LabelsApplied, crate::retry::Abandoned> {
        // Kept before they are applied: a card reloaded meanwhile reads
        // them from `labels` (docs/architecture.md, "History").
        if !self.sinks.outcomes.is_empty() {
            let stored: Vec<_> = labels.iter().map(|l| self.stored_label(l)).collect();
            self.sinks.keep_labels(&stored, received_ms, &self.abandon).await?;
        }
        let applied = match self.scorer.history() {
            // The history may ask the store (blocking calls).
            Some(history) => {
                let (history, owned) = (history.clone(), labels.to_vec());
                tokio::task::spawn_blocking(move || match from_stream {
                    true => history.apply_stream_labels(&owned, received_ms / 1000),
                    false => history.apply_labels(&owned, received_ms / 1000),
                })
                .await
                .map_err(|e| abandoned(format!("labels task failed: {e}")))?
                .map_err(|e| abandoned(e.to_string()))?
            }
            None => Vec::new(),
        };
        let pending = applied.iter().filter(|a| **a == crate::history::Applied::Pending).count();
        // Labels that are now their transaction's: its stored outcome shows them.
        let current: Vec<crate::history::Settled> = labels
            .iter()
            .zip(&applied)
            .filter_map(|(l, a)| match a {
                crate::history::Applied::Current { unix_time } => Some(crate::history::Settled {
                    label: crate::history::LabelRecord {
                        reported_at: Some(l.reported_at_or(received_ms / 1000)),
                        ..l.clone()
                    },
                    unix_time: *unix_time,
                }),
                _ => None,
            })
            .collect();
        self.show_labels(&current).await?;
        Ok(LabelsApplied { labels: labels.len(), pending })
    }

    /// Sends labels that can never be stored, read from `source`, to
    /// `dlq`; Ok once Kafka has them all. One instance of a cluster does
    /// this for each labels partition (`source::labels_dlq`).
    pub async fn labels_dead_letters(
        &self,
        dead: &[crate::sink::kafka::DeadLetter],
        source: &str,
        dlq: &str,
    ) -> Result<(), crate::retry::Abandoned> {
        match &self.sinks.kafka {
            Some(kafka) => kafka.dead_letters_to(dlq, source, dead, &self.abandon).await,
            None => Err(abandoned(format!("{} dead letters of {source}: no Kafka to send them to", dead.len()))),
        }
    }

    /// Sets the stored outcomes of these transactions to their current
    /// labels in every sink, in the list's order (Cassandra: `transactions`,
    /// `alerts` rows that exist, `scores` rows; the search documents), then
    /// live quality and memory. Each label carries its `reported_at`.
    async fn show_labels(&self, current: &[crate::history::Settled]) -> Result<(), crate::retry::Abandoned> {
        if current.is_empty() {
            return Ok(());
        }
        if !self.sinks.outcomes.is_empty() {
            let stored: Vec<_> = current
                .iter()
                .map(|c| crate::history::Settled { label: self.stored_label(&c.label), unix_time: c.unix_time })
                .collect();
            self.sinks.show_labels(&stored, &self.abandon).await?;
        }
        self.show_in_memory(current);
        Ok(())
    }

    /// Live quality's and memory's side of [`Self::show_labels`].
    fn show_in_memory(&self, current: &[crate::history::Settled]) {
        self.quality.labelled(&crate::quality::row_labels(current));
        self.store.set_labels(current);
    }

    /// [`Self::settle_labels`] for outcomes kept in memory only (the demo).
    fn settle_in_memory(&self, outcomes: &RecordBatch) {
        let Some(history) = self.scorer.history() else { return };
        // In memory, tiles are the history's own: nothing held back.
        let settled = history.settle(trans_nums(outcomes).iter().flatten()).labels;
        if !settled.is_empty() {
            self.show_in_memory(&settled);
        }
    }

    /// Outcomes just stored: labels applied while they were on their way
    /// are written again, after them, and the fraud marks held back for
    /// their tiles (`History::settle`); for Kafka, before the batch counts
    /// as stored (its turn passes), so no later batch reads a tile
    /// without them.
    async fn settle_labels(&self, outcomes: &RecordBatch) -> Result<(), crate::retry::Abandoned> {
        let Some(history) = self.scorer.history() else { return Ok(()) };
        let settlement = history.settle(trans_nums(outcomes).iter().flatten());
        if !settlement.tiles.is_empty() {
            let (history, tiles) = (history.clone(), settlement.tiles);
            tokio::task::spawn_blocking(move || history.write_tiles(&tiles))
                .await
                .map_err(|e| abandoned(format!("tile marks task failed: {e}")))?
                .map_err(|e| abandoned(e.to_string()))?;
        }
        self.show_labels(&settlement.labels).await
    }

    /// A label as the sinks store it: its card a keyed hash if so configured.
    fn stored_label(&self, label: &crate::history::LabelRecord) -> crate::history::LabelRecord {
        crate::history::LabelRecord { cc_num: self.stored_card(&label.cc_num), ..label.clone() }
    }

    /// The card number as the sinks store it (a keyed hash if configured).
    fn stored_card(&self, cc_num: &str) -> String {
        match &self.cards {
            Some(cards) => cards.hash(cc_num),
            None => cc_num.to_string(),
        }
    }

    /// The history, when it is on.
    pub fn history(&self) -> Option<&Arc<crate::history::History>> {
        self.scorer.history()
    }

    /// How far ahead of the clock transactions and labels may be dated.
    pub fn time_bound(&self) -> crate::record::limits::TimeBound {
        self.scorer.time_bound()
    }

    /// The history's counters, for /metrics; None without history.
    pub fn history_stats(&self) -> Option<&crate::history::HistoryStats> {
        self.scorer.history().map(|h| h.stats())
    }

    /// Kafka assigned partitions: cards held may have changed elsewhere
    /// since, so the history reloads them when next seen; their previous
    /// owners applied every label reported before `applied_before`. Not
    /// when this process made the last commit of every one (`ours`): a
    /// rebalance that gives an instance back what it had (another one
    /// joining, or restarting under its name) made both instances reload
    /// every card at once, and Cassandra, also taking the writes, answered
    /// neither for minutes (docs/performance.md, "The soak").
    pub fn partitions_assigned(&self, applied_before: i64, ours: bool) {
        if let Some(history) = self.scorer.history().filter(|_| !ours) {
            history.forget_cards(applied_before);
        }
    }

    /// A place in the order of history updates, taken when a batch is
    /// dispatched; None without history.
    pub fn history_turn(&self) -> Option<Turn> {
        self.scorer.history().map(|h| h.turn())
    }

    /// Keeps outcomes in memory and writes them, with the dead letters, to
    /// every sink; Ok once every sink has them.
    pub async fn store(
        &self,
        outcomes: &RecordBatch,
        dead: Vec<crate::sink::kafka::DeadLetter>,
    ) -> Result<Written, crate::retry::Abandoned> {
        self.store.insert(outcomes);
        let written = self.sinks.write(outcomes, dead, &self.abandon).await?;
        self.note_quality(outcomes);
        self.settle_labels(outcomes).await?;
        Ok(written)
    }

    /// Tells live quality of stored outcomes (its book is Cassandra, which
    /// the sink wrote, or memory, kept here).
    fn note_quality(&self, outcomes: &RecordBatch) {
        self.quality.recorded_batch(outcomes);
    }

    /// Scores a client's batch for DoExchange: every row must be valid, and
    /// the answer has the same rows in the same order. Scored rows are not
    /// stored: exchange is a pure function.
    pub fn score_exchange(&self, batch: &RecordBatch, options: &ScoreOptions) -> Result<RecordBatch, ExchangeError> {
        let Scored { outcomes, invalid } = self.scorer.answer(batch, options)?;
        if !invalid.is_empty() {
            return Err(InvalidRows(invalid).into());
        }
        self.metrics.exchanged(outcomes.num_rows());
        Ok(outcomes)
    }

    /// Scores and keeps a batch in memory (the demo's simulator). Invalid
    /// rows are reported back, never dropped silently. `created_ms` is when
    /// the batch's transactions came to be (Unix ms), for the latency measure.
    pub fn ingest(&self, batch: &RecordBatch, created_ms: i64) -> Result<Ingested, ScoreError> {
        let started = std::time::Instant::now();
        let Scored { outcomes, invalid } = self.score_for_storage(batch, None)?;
        let alerts = outcome::count_alerts(&outcomes);
        self.metrics.scored(batch.num_rows(), &outcomes, invalid.len(), started.elapsed());
        self.store.insert(&outcomes);
        self.note_quality(&outcomes);
        self.settle_in_memory(&outcomes);
        self.metrics.stored(outcomes.num_rows(), 0, std::iter::repeat_n(created_ms, outcomes.num_rows()));
        // One line a batch, not one a row: a flood of bad input must not
        // flood the log too (the caller gets every row's reason).
        if let Some(first) = invalid.first() {
            tracing::warn!(rejected = invalid.len(), first_row = first.row, first_error = %first.error, "records rejected");
        }
        Ok(Ingested {
            accepted: outcomes.num_rows(),
            alerts,
            rejected: invalid.into_iter().map(|e| Rejected { row: e.row, error: e.error.to_string() }).collect(),
        })
    }

    /// DoPut: scores a batch and writes it through the same sinks as Kafka
    /// records; answers once every sink has it. Invalid rows are reported.
    pub async fn put(self: &Arc<Self>, batch: RecordBatch) -> Result<Ingested, PutError> {
        let arrived = crate::metrics::unix_ms();
        let app = self.clone();
        let scored = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let scored = app.score_for_storage(&batch, None)?;
            app.metrics.scored(batch.num_rows(), &scored.outcomes, scored.invalid.len(), started.elapsed());
            Ok::<_, ScoreError>(scored)
        })
        .await
        .map_err(|e| PutError::Task(e.to_string()))??;
        let Scored { outcomes, invalid } = scored;
        // Stored in a task of its own: a client that goes away mid-store
        // must not cut it between the outcomes and what follows them (the
        // tiles' fraud marks held until then, `History::settle`).
        let (app, stored) = (self.clone(), outcomes.clone());
        tokio::spawn(async move { app.store(&stored, Vec::new()).await })
            .await
            .map_err(|e| PutError::Task(e.to_string()))??;
        // DoPut rows have no creation time of their own: time them from arrival.
        self.metrics.stored(outcomes.num_rows(), 0, std::iter::repeat_n(arrived, outcomes.num_rows()));
        let alerts = outcome::count_alerts(&outcomes);
        Ok(Ingested {
            accepted: outcomes.num_rows(),
            alerts,
            rejected: invalid.into_iter().map(|e| Rejected { row: e.row, error: e.error.to_string() }).collect(),
        })
    }

    /// Answers a query, newest first, from the first store that answers
    /// its kind (`alerts` and card history: Cassandra; `recent`: the
    /// search engine), from this process's memory otherwise.
    pub async fn query(&self, query: &Query) -> Result<Vec<RecordBatch>, QueryError> {
        let hashed;
        let query = match (query, &self.cards) {
            (Query::Card { cc_num, limit }, Some(cards)) => {
                hashed = Query::Card { cc_num: cards.hash(cc_num), limit: *limit };
                &hashed
            }
            _ => query,
        };
        match self.sinks.readers.iter().find(|r| r.answers(query)) {
            Some(reader) => Ok(reader.query(query).await?),
            None => Ok(self.store.query(query)),
        }
    }

    /// Records the models in service, with their roles, in Cassandra's
    /// `models` table (every version ever served stays listed there; one
    /// no longer in the line-up is `retired`), and saves the line-up with
    /// its models' files, so that a restart restores it.
    pub async fn record_models(&self) {
        if let Some(log) = &self.sinks.model_log {
            log.record_lineup(&self.lineup_service, &self.configured_model, &self.scorer.registry().lineup()).await;
        }
    }

    /// The memory book's rows held and rows not kept (no Cassandra).
    pub fn quality_book_stats(&self) -> Option<(usize, u64)> {
        self.quality.book_stats()
    }

    /// Live quality per version and day, and drift.
    pub fn model_quality(&self) -> crate::quality::Summary {
        self.quality.summary()
    }

    /// Measures again the days whose outcomes or labels changed, saves
    /// them, and shows what every instance saved. A day that cannot be
    /// measured now is measured at the next call.
    pub async fn refresh_quality(&self) -> Result<(), QueryError> {
        let config = self.quality.config().clone();
        let versions = self.version_infos().await;
        match &self.sinks.quality_book {
            Some(book) => self.count_quality(book.as_ref(), &versions, &config).await?,
            None => {
                for day in self.quality.take_touched() {
                    let rows = self.quality.memory().map(|book| book.rows(day)).unwrap_or_default();
                    let mut measured = crate::quality::measure_day(day, &rows, &versions, &config);
                    self.quality.mark_complete(&mut measured);
                    self.quality.keep(day, measured.clone());
                    self.index_quality(&measured).await;
                }
            }
        }
        if let Some(book) = &self.sinks.quality_book {
            self.quality.show(book.saved(config.days).await?);
            self.quality.show_decisions(book.recent_decisions(DECISIONS_SHOWN).await?);
        }
        Ok(())
    }

    /// Cassandra's book: counts again the minutes changed of the days to
    /// count, at most `quality.max_rows_per_round` rows read, and saves each
    /// day whose tallies changed here.
    async fn count_quality(
        &self,
        book: &dyn crate::store::quality_book::QualityBook,
        versions: &std::collections::HashMap<String, VersionInfo>,
        config: &crate::config::QualityConfig,
    ) -> Result<(), QueryError> {
        let days = self.quality.days_to_count();
        let mut budget = config.max_rows_per_round;
        for (i, &day) in days.iter().enumerate() {
            loop {
                let counted = match book.count_day(day, versions, budget.min(COUNT_CALL_ROWS), config.card_k).await {
                    Ok(counted) => counted,
                    Err(e) => {
                        self.quality.retry(days[i..].iter().copied());
                        return Err(e.into());
                    }
                };
                self.metrics.quality_counted(counted.rows_read, counted.minutes);
                budget = budget.saturating_sub(counted.rows_read);
                if counted.minutes > 0 {
                    let mut measured =
                        crate::quality::measure_tallies(day, &counted.day, &counted.fraud_cards, versions, config);
                    self.quality.mark_complete(&mut measured);
                    let gone: Vec<String> =
                        counted.day.iter().filter(|(_, t)| t.transactions() == 0).map(|(v, _)| v.clone()).collect();
                    if let Err(e) = book.save_counted(&measured, &gone, day, counted.revision).await {
                        self.quality.retry(days[i..].iter().copied());
                        return Err(e.into());
                    }
                    self.index_quality(&measured).await;
                }
                if !counted.more {
                    break;
                }
                if budget == 0 {
                    // The rest of this day, and the days after, next round.
                    self.quality.retry(days[i..].iter().copied());
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Indexes measured days for the dashboards (the numbers live in
    /// Cassandra or memory): a cluster that is down does not hold quality
    /// up for long.
    async fn index_quality(&self, measured: &[crate::quality::DayQuality]) {
        for sink in &self.sinks.outcomes {
            let saved = tokio::time::timeout(QUALITY_INDEX_WAIT, sink.index_quality(measured, &self.abandon));
            match saved.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, sink = sink.name(), "cannot index live quality"),
                Err(_) => tracing::warn!(
                    sink = sink.name(),
                    "indexing live quality timed out; the next change of the day retries"
                ),
            }
        }
    }

    /// Measures quality every `quality.interval_ms` until shutdown (and
    /// once at the start, to show what other instances saved).
    pub async fn run_quality(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let every = std::time::Duration::from_millis(self.quality.config().interval_ms);
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait() => return,
            }
            if let Err(e) = self.refresh_quality().await {
                tracing::warn!(error = %e, "measuring model quality failed; retrying at the next interval");
            }
        }
    }

    /// Deletes what is past `retention` every hour until shutdown, in
    /// every sink that does not expire its own data (Cassandra's rows carry
    /// a time to live; the search engine's indices are deleted).
    pub async fn run_retention(
        self: Arc<Self>,
        retention: crate::config::RetentionConfig,
        shutdown: crate::shutdown::Shutdown,
    ) {
        let mut interval = tokio::time::interval(crate::sink::retention::EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait() => return,
            }
            for sink in &self.sinks.outcomes {
                if let Err(e) = sink.expire(&retention).await {
                    tracing::warn!(error = %e, sink = sink.name(), "cannot delete data past its retention; trying again in an hour");
                }
            }
        }
    }

    /// Threshold and training reference of every version known: those
    /// loaded, and those in Cassandra's `models`.
    async fn version_infos(&self) -> std::collections::HashMap<String, VersionInfo> {
        let mut metas = Vec::new();
        if let Some(log) = &self.sinks.model_log {
            match log.model_metas().await {
                Ok(saved) => metas.extend(saved),
                Err(e) => tracing::warn!(error = %e, "cannot read the models table; measuring with loaded models only"),
            }
        }
        metas.extend(self.scorer.registry().loaded());
        metas.into_iter().map(|m| (m.version.clone(), VersionInfo::of(&m))).collect()
    }

    /// The model in service, as JSON.
    pub fn model_info(&self) -> serde_json::Value {
        let model = self.scorer.registry().current();
        let meta = &model.meta;
        let mut info = serde_json::json!({
            "version": meta.version,
            "created_at": meta.created_at,
            "threshold": meta.threshold,
            "metrics": meta.metrics,
            "features": meta.inputs.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
            "inputs": meta.inputs,
            "output": meta.output,
        });
        for (k, v) in &meta.extra {
            info[k] = v.clone();
        }
        let lineup = crate::score::registry::Switched::from(&*self.scorer.registry().lineup());
        info["shadow"] = serde_json::json!(lineup.shadow);
        info["previous"] = serde_json::json!(lineup.previous);
        info["retraining"] = serde_json::json!(self.quality.summary().decisions);
        info
    }

    /// Verifies a new model and puts it in service (`Role::Champion`) or
    /// beside the champion (`Role::Shadow`); nothing changes on error.
    pub fn load_model(&self, source: ModelSource, role: Role) -> Result<Loaded, ModelError> {
        let previous = self.scorer.registry().current().version().to_string();
        let files = match source {
            ModelSource::Dir(dir) => ModelFiles::read_dir(&dir)?,
            ModelSource::Files(files) => files,
        };
        let (model, parity, lineup) = self.scorer.registry().load(&files, role)?;
        Ok(Loaded { version: model.version().to_string(), previous, parity, lineup })
    }

    /// The shadow model becomes the champion, at once.
    pub fn promote(&self) -> Result<Switched, SwitchError> {
        self.scorer.registry().promote()
    }

    /// The previous champion serves again, at once.
    pub fn rollback(&self) -> Result<Switched, SwitchError> {
        self.scorer.registry().rollback()
    }
}
