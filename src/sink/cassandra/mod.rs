//! Cassandra: the durable store of every outcome (`transactions`, a card's
//! history in one partition), of predicted frauds by day (`alerts`) and of
//! deployed models (`models`). docs/architecture.md, "Contracts".
//!
//! Writes are idempotent upserts keyed by `trans_num` (redelivery never
//! duplicates), prepared once, at most `concurrency` in flight over all
//! batches, each retried with backoff until it succeeds or the pipeline
//! abandons it at shutdown.

pub mod history;
pub mod lineup;
pub mod quality;
pub mod rows;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::CassandraConfig;
use crate::history::{LabelRecord, Settled};
use crate::retry::{Abandoned, Health, Retry};
use crate::score::model::ModelMeta;
use crate::score::outcome::IS_FRAUD_PREDICTED;
use crate::store::Query;

/// Why Cassandra could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CassandraError {
    #[error("Cassandra at {nodes}: {message}")]
    Connect { nodes: String, message: String },
    #[error("Cassandra {what}: {source}")]
    Request {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("Cassandra TLS: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
    #[error(transparent)]
    Rows(#[from] rows::RowTypeError),
    #[error("Cassandra cannot answer `{query}`: {reason}")]
    Unsupported { query: &'static str, reason: &'static str },
    #[error("model line-up: {0}")]
    Lineup(String),
    #[error("Cassandra {what}: still changed by other instances after {tries} tries; the next round tries again")]
    Contended { what: &'static str, tries: usize },
    #[error("Cassandra {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

/// Outcomes in `transactions`, `alerts`, `scores` (and `merchant_days`
/// with history); labels in `labels` and `label_reports`, and on the
/// outcomes' rows.
#[async_trait::async_trait]
impl crate::store::sink::OutcomeSink for Cassandra {
    fn name(&self) -> &'static str {
        "cassandra"
    }

    async fn write(
        &self,
        outcomes: &RecordBatch,
        abandon: &CancellationToken,
    ) -> Result<Vec<crate::store::sink::Refused>, Abandoned> {
        Cassandra::write(self, outcomes, abandon).await.map(|()| Vec::new())
    }

    async fn keep_labels(
        &self,
        labels: &[LabelRecord],
        received_ms: i64,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        self.write_labels(labels, received_ms, abandon).await
    }

    async fn show_labels(&self, current: &[Settled], abandon: &CancellationToken) -> Result<(), Abandoned> {
        self.write_outcome_labels(current, abandon).await?;
        self.write_score_labels(&crate::quality::row_labels(current), abandon).await
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    async fn answers(&self) -> bool {
        self.healthy().await
    }
}

/// Alerts (by day) and a card's outcomes; the newest outcomes of all
/// cards are the search engine's.
#[async_trait::async_trait]
impl crate::store::reader::OutcomeReader for Cassandra {
    fn answers(&self, query: &Query) -> bool {
        matches!(query, Query::Alerts { .. } | Query::Card { .. })
    }

    async fn query(&self, query: &Query) -> Result<Vec<RecordBatch>, crate::store::reader::ReadError> {
        Cassandra::query(self, query).await.map_err(|e| crate::store::reader::ReadError::new("cassandra", e))
    }
}

/// Whether Cassandra refused a request for what it is rather than for its
/// state now: retrying cannot make it pass by itself.
pub fn is_permanent(e: &scylla::errors::ExecutionError) -> bool {
    use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
    match e {
        ExecutionError::BadQuery(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::SerializationError(_)) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::SyntaxError
                | DbError::Invalid
                | DbError::Unauthorized
                | DbError::ConfigError
                | DbError::AlreadyExists { .. }
                | DbError::FunctionFailure { .. }
        ),
        _ => false,
    }
}

/// The primary key of a `transactions` row (cc_num, trans_time, trans_num)
/// or of an `alerts` row (day, trans_time, trans_num).
type Key = [Option<CqlValue>; 3];

/// A connected Cassandra with the schema in place and statements prepared.
pub struct Cassandra {
    session: Session,
    keyspace: String,
    insert_transaction: PreparedStatement,
    insert_alert: PreparedStatement,
    insert_model: PreparedStatement,
    insert_label: PreparedStatement,
    insert_label_report: PreparedStatement,
    label_transaction: PreparedStatement,
    label_alert: PreparedStatement,
    held_transaction_label: PreparedStatement,
    held_alert_label: PreparedStatement,
    select_card: PreparedStatement,
    select_alert_day: PreparedStatement,
    history: history::Statements,
    quality: quality::Statements,
    /// `transaction_keys` was added to a keyspace that already held
    /// outcomes: a label whose key is not there may name one of those, so
    /// the card's partition is filtered for it too (slow; only then).
    keys_incomplete: bool,
    /// Set = every outcome also gets its row in `merchant_days` (history on).
    merchant_days: bool,
    in_flight: Arc<Semaphore>,
    concurrency: usize,
    /// `request_timeout_ms`: reads that page (the history's) are bounded
    /// by it per attempt too.
    request_timeout: Duration,
    pub health: crate::retry::Health,
}

fn request<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl Fn(E) -> CassandraError {
    move |e| CassandraError::Request { what, source: Box::new(e) }
}

impl Cassandra {
    /// Connects, retrying while Cassandra is unreachable (until `abandon`),
    /// then creates the keyspace and tables if missing and prepares.
    pub async fn connect(config: &CassandraConfig, abandon: &CancellationToken) -> Result<Self, CassandraError> {
        let nodes = config.node_list();
        let mut builder = SessionBuilder::new().known_nodes(&nodes).connection_timeout(Duration::from_secs(5));
        if !config.username.is_empty() {
            builder = builder.user(&config.username, config.password.expose());
        }
        if !config.tls_ca.is_empty() {
            let tls = crate::security::tls::client_config("cassandra.tls_ca", &config.tls_ca)?;
            builder = builder.tls_context(Some(tls));
        }
        let mut retry = Retry::new("cassandra", abandon);
        let session = loop {
            let built = builder
                .build()
                .await
                .map_err(|e| CassandraError::Connect { nodes: config.nodes.clone(), message: e.to_string() });
            match built {
                Ok(session) => break session,
                // Waiting does not fix a wrong password or an untrusted
                // certificate: say so now rather than retry for ever.
                Err(CassandraError::Connect { nodes, message }) if crate::retry::is_credentials_error(&message) => {
                    let message = format!("{message} (check cassandra.username, cassandra.password, cassandra.tls_ca)");
                    return Err(CassandraError::Connect { nodes, message });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cassandra not reachable yet; retrying");
                    if retry.failed(&e).await.is_err() {
                        return Err(e);
                    }
                }
            }
        };
        let ks = &config.keyspace;
        let statements = all_create_statements(ks, &config.replication);
        for statement in &statements {
            session.query_unpaged(statement.clone(), &[]).await.map_err(request("schema"))?;
        }
        add_missing_columns(&session, ks, &statements).await?;
        let keys_incomplete = keys_incomplete(&session, ks).await?;
        session.await_schema_agreement().await.map_err(request("schema agreement"))?;

        let timeout = Some(Duration::from_millis(config.request_timeout_ms));
        let prepare = |cql: String| {
            let session = &session;
            async move {
                let mut p = session.prepare(cql).await.map_err(request("prepare"))?;
                p.set_is_idempotent(true);
                p.set_request_timeout(timeout);
                Ok::<_, CassandraError>(p)
            }
        };
        let cols = rows::column_list();
        let marks = vec!["?"; rows::columns().len()].join(", ");
        Ok(Self {
            insert_transaction: prepare(format!("INSERT INTO {ks}.transactions ({cols}) VALUES ({marks})")).await?,
            insert_alert: prepare(format!("INSERT INTO {ks}.alerts (day, {cols}) VALUES (?, {marks})")).await?,
            insert_model: prepare(format!(
                "INSERT INTO {ks}.models (version, created_at, deployed_at, threshold, metrics, meta, role) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            // The newest report wins, whichever instance writes last.
            insert_label: prepare(format!(
                "INSERT INTO {ks}.labels (cc_num, trans_num, is_fraud, reported_at, received_at, decided_by) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            insert_label_report: prepare(format!(
                "INSERT INTO {ks}.label_reports (cc_num, trans_num, version, is_fraud, reported_at, decided_by) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            // The label cells carry the report's order as their write
            // timestamp (rows::LabelCells): the newest report wins in every
            // table, whichever instance writes last.
            label_transaction: prepare(format!(
                "UPDATE {ks}.transactions USING TIMESTAMP ? SET is_fraud = ?, label_reported_at = ?, label_by = ? WHERE cc_num = ? AND trans_time = ? AND trans_num = ?"
            ))
            .await?,
            label_alert: prepare(format!(
                "UPDATE {ks}.alerts USING TIMESTAMP ? SET is_fraud = ?, label_reported_at = ?, label_by = ? WHERE day = ? AND trans_time = ? AND trans_num = ?"
            ))
            .await?,
            // What a row holds before a label is written (rows::HeldLabel):
            // only alerts that exist are labelled (a genuine prediction has
            // no alert row), and a row an earlier release wrote has its
            // label cells at the clock's timestamp.
            held_transaction_label: prepare(format!(
                "SELECT is_fraud, label_reported_at, label_by, writetime(is_fraud) FROM {ks}.transactions WHERE cc_num = ? AND trans_time = ? AND trans_num = ?"
            ))
            .await?,
            held_alert_label: prepare(format!(
                "SELECT is_fraud, label_reported_at, label_by, writetime(is_fraud) FROM {ks}.alerts WHERE day = ? AND trans_time = ? AND trans_num = ?"
            ))
            .await?,
            select_card: prepare(format!("SELECT {cols} FROM {ks}.transactions WHERE cc_num = ? LIMIT ?")).await?,
            select_alert_day: prepare(format!("SELECT {cols} FROM {ks}.alerts WHERE day = ? LIMIT ?")).await?,
            history: history::Statements::prepare(ks, &prepare).await?,
            quality: quality::Statements::prepare(ks, &prepare).await?,
            keys_incomplete,
            merchant_days: false,
            in_flight: Arc::new(Semaphore::new(config.concurrency)),
            concurrency: config.concurrency,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            health: crate::retry::Health::new("cassandra"),
            keyspace: ks.clone(),
            session,
        })
    }

    /// The same Cassandra also writing each outcome's row of its merchant
    /// tile (`merchant_days`), which the history reads.
    pub fn with_merchant_days(mut self, on: bool) -> Self {
        self.merchant_days = on;
        self
    }

    /// Writes every outcome (and the predicted frauds to `alerts`, and with
    /// history its `merchant_days` and `transaction_keys` rows); returns
    /// once Cassandra accepted all of them.
    pub async fn write(&self, outcomes: &RecordBatch, abandon: &CancellationToken) -> Result<(), Abandoned> {
        let predicted = outcomes.column_by_name(IS_FRAUD_PREDICTED).expect("outcome column").as_boolean().clone();
        let rows = rows::to_rows(outcomes);
        // The tile rows of one (merchant, week) go as one single-partition
        // batch: a few requests per batch of outcomes, not one per outcome.
        let tiles = if self.merchant_days { history::tile_batches(rows.iter().map(|(v, _)| v)) } else { Vec::new() };
        let mut tile_writes = futures::stream::iter(tiles)
            .map(|values| self.execute_batch(&self.history.insert_tile_row, values, abandon))
            .buffer_unordered(self.concurrency);
        // Live quality's book: a row per outcome, and the labels some came with.
        let (scores, labels) = crate::quality::rows_of(outcomes);
        let book = async {
            self.write_scores(&scores, abandon).await?;
            self.write_score_labels(&labels, abandon).await
        };
        let mut writes = futures::stream::iter(rows.into_iter().enumerate())
            .map(|(i, (mut values, day))| {
                let alert = predicted.value(i);
                // Its label cells go with their own timestamp, in the same
                // single-partition batch as the row.
                let label = rows::take_label(&mut values);
                async move {
                    if alert {
                        let mut with_day = Vec::with_capacity(values.len() + 1);
                        with_day.push(Some(CqlValue::Date(day)));
                        with_day.extend(values.iter().cloned());
                        let mut statements = vec![(&self.insert_alert, with_day)];
                        if let Some(label) = &label {
                            let alert_key = [Some(CqlValue::Date(day)), values[1].clone(), values[2].clone()];
                            statements.push((&self.label_alert, label.values(alert_key)));
                        }
                        self.execute_together(statements, abandon).await?;
                    }
                    // The key after the row: a label that finds its
                    // transaction by key marks its tile, and the card the
                    // new owner reloads (a writer killed in between) must
                    // hold the transaction the tile counts.
                    let key = self.merchant_days.then(|| history::key_row(&values));
                    let label = label.map(|l| (&self.label_transaction, l.values(values[..3].iter().cloned())));
                    let statements = std::iter::once((&self.insert_transaction, values)).chain(label);
                    self.execute_together(statements.collect(), abandon).await?;
                    match key {
                        Some(key) => self.execute(&self.history.insert_key, key, abandon).await,
                        None => Ok(()),
                    }
                }
            })
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        while let Some(result) = tile_writes.next().await {
            result?;
        }
        book.await
    }

    /// One statement for each of `rows`, as an unlogged batch (all in one
    /// partition), retried like [`Self::execute`].
    async fn execute_batch(
        &self,
        statement: &PreparedStatement,
        rows: Vec<rows::Values>,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        self.execute_together(rows.into_iter().map(|values| (statement, values)).collect(), abandon).await
    }

    /// Statements of one partition as one unlogged batch (one statement
    /// alone as itself), retried like [`Self::execute`].
    async fn execute_together(
        &self,
        statements: Vec<(&PreparedStatement, rows::Values)>,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        if statements.len() == 1 {
            let (statement, values) = statements.into_iter().next().expect("one statement");
            return self.execute(statement, values, abandon).await;
        }
        let mut batch = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Unlogged);
        let mut values = Vec::with_capacity(statements.len());
        for (statement, row) in statements {
            batch.append_statement(statement.clone());
            values.push(unset_nulls(row));
        }
        batch.set_is_idempotent(true);
        self.retrying(abandon, || self.session.batch(&batch, &values)).await.map(drop)
    }

    pub(crate) async fn execute(
        &self,
        statement: &PreparedStatement,
        values: rows::Values,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let values = unset_nulls(values);
        self.retrying(abandon, || self.session.execute_unpaged(statement, &values)).await.map(drop)
    }

    /// Runs a request (at most `concurrency` in flight) until it succeeds
    /// or `abandon` fires, keeping the health up to date.
    async fn retrying<T, F, Fut>(&self, abandon: &CancellationToken, request: F) -> Result<T, Abandoned>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, scylla::errors::ExecutionError>>,
    {
        let mut retry = Retry::new("cassandra", abandon);
        loop {
            let result = {
                let _permit = self.in_flight.acquire().await.expect("semaphore never closed");
                request().await
            };
            match result {
                Ok(answer) => {
                    self.health.succeeded();
                    return Ok(answer);
                }
                Err(e) if is_permanent(&e) => {
                    // Held, not dropped: every record that reaches here passed
                    // the input limits, so a refusal is the keyspace's or the
                    // login's (a table altered or dropped, a permission taken),
                    // the same for every record, and fixed by an operator.
                    let message = format!("refused, not transient: {e} (writes are held until the cause is fixed)");
                    self.health.failed(&message);
                    retry.failed(message).await?;
                }
                Err(e) => {
                    self.health.failed(&e.to_string());
                    retry.failed(e).await?;
                }
            }
        }
    }

    /// The keyspace written to.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Runs a schema change (`ALTER TABLE ...`) and waits for the nodes to
    /// agree on it.
    pub async fn alter(&self, cql: &str) -> Result<(), CassandraError> {
        self.session.query_unpaged(cql.to_string(), &[]).await.map_err(request("schema"))?;
        self.session.await_schema_agreement().await.map_err(request("schema agreement"))?;
        Ok(())
    }

    /// Stores labels in `labels` (the newest report of each transaction)
    /// and `label_reports` (every report); upserts, so a redelivered label
    /// writes the same rows. Returns once Cassandra has every one.
    pub async fn write_labels(
        &self,
        labels: &[LabelRecord],
        received_ms: i64,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        // (whether it is the `label_reports` row, its values)
        let mut writes: Vec<(bool, rows::Values)> = Vec::with_capacity(2 * labels.len());
        for l in labels {
            let reported_at = l.reported_at_or(received_ms / 1000);
            let version = crate::history::card::version(reported_at, l.is_fraud, l.decided_by.as_deref());
            let (cc_num, trans_num) =
                (Some(CqlValue::Text(l.cc_num.clone())), Some(CqlValue::Text(l.trans_num.clone())));
            let (flag, reported) = (
                Some(CqlValue::Int(i32::from(l.is_fraud))),
                Some(CqlValue::Timestamp(CqlTimestamp(reported_at.saturating_mul(1000)))),
            );
            // "" when nobody is named: a newer report replaces an older one's decider.
            let by = Some(CqlValue::Text(l.decided_by.clone().unwrap_or_default()));
            writes.push((
                false,
                vec![
                    cc_num.clone(),
                    trans_num.clone(),
                    flag.clone(),
                    reported.clone(),
                    Some(CqlValue::Timestamp(CqlTimestamp(received_ms))),
                    by.clone(),
                    Some(CqlValue::BigInt(version)),
                ],
            ));
            writes.push((true, vec![cc_num, trans_num, Some(CqlValue::BigInt(version)), flag, reported, by]));
        }
        let mut writes = futures::stream::iter(writes)
            .map(|(report, values)| {
                let statement = if report { &self.insert_label_report } else { &self.insert_label };
                self.execute(statement, values, abandon)
            })
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        Ok(())
    }

    /// Sets the stored outcome's `is_fraud` (in `transactions`, and in
    /// `alerts` when it was an alert) to its label.
    pub async fn write_outcome_labels(&self, labels: &[Settled], abandon: &CancellationToken) -> Result<(), Abandoned> {
        // Collected first: a lazy map would tie the stream to a borrowed closure.
        let writes: Vec<(rows::LabelCells, Key, Key)> = labels
            .iter()
            .map(|Settled { label: l, unix_time }| {
                let reported_at = l.reported_at.unwrap_or_default();
                let cells = rows::LabelCells {
                    timestamp: crate::history::card::version(reported_at, l.is_fraud, l.decided_by.as_deref()),
                    flag: CqlValue::BigInt(i64::from(l.is_fraud)),
                    reported_at: Some(CqlValue::BigInt(reported_at)),
                    // "" when nobody is named: unset would keep an older label's decider.
                    by: Some(CqlValue::Text(l.decided_by.clone().unwrap_or_default())),
                };
                let time = Some(CqlValue::Timestamp(CqlTimestamp(unix_time * 1000)));
                let trans_num = Some(CqlValue::Text(l.trans_num.clone()));
                let key = [Some(CqlValue::Text(l.cc_num.clone())), time.clone(), trans_num.clone()];
                let alert_key = [Some(CqlValue::Date(rows::day_of(*unix_time))), time, trans_num];
                (cells, key, alert_key)
            })
            .collect();
        let mut writes = futures::stream::iter(writes)
            .map(|(cells, key, alert_key)| self.label_outcome(cells, key, alert_key, abandon))
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        Ok(())
    }

    /// One outcome's label: its `transactions` row, and its `alerts` row
    /// when it was an alert; each written with the timestamp that orders it
    /// over what the row holds ([`rows::HeldLabel::timestamp_for`]).
    async fn label_outcome(
        &self,
        mut cells: rows::LabelCells,
        key: Key,
        alert_key: Key,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let ours = cells.timestamp;
        for (held, label, key, must_exist) in [
            (&self.held_transaction_label, &self.label_transaction, key, false),
            (&self.held_alert_label, &self.label_alert, alert_key, true),
        ] {
            let row = self.held_label(held, &key, abandon).await?;
            if must_exist && row.is_none() {
                continue;
            }
            let Some(timestamp) = row.unwrap_or_default().timestamp_for(ours, &cells) else { continue };
            cells.timestamp = timestamp;
            self.execute(label, cells.values(key), abandon).await?;
        }
        Ok(())
    }

    /// The label cells a row holds; None when there is no such row.
    async fn held_label(
        &self,
        statement: &PreparedStatement,
        key: &Key,
        abandon: &CancellationToken,
    ) -> Result<Option<rows::HeldLabel>, Abandoned> {
        let values = unset_nulls(key.to_vec());
        let answer = self.retrying(abandon, || self.session.execute_unpaged(statement, &values)).await?;
        type Cells = (Option<i64>, Option<i64>, Option<String>, Option<i64>);
        let row = answer.into_rows_result().ok().and_then(|rows| rows.maybe_first_row::<Cells>().ok().flatten());
        Ok(row.map(|(flag, reported_at, by, written)| rows::HeldLabel { flag, reported_at, by, written }))
    }

    /// Records a model deployment in `models`.
    pub async fn record_model(&self, meta: &ModelMeta, role: &str) -> Result<(), CassandraError> {
        let values = (
            meta.version.clone(),
            meta.created_at.clone(),
            CqlTimestamp(chrono::Utc::now().timestamp_millis()),
            meta.threshold,
            serde_json::to_string(&meta.metrics).unwrap_or_default(),
            serde_json::to_string(meta).unwrap_or_default(),
            role,
        );
        self.session.execute_unpaged(&self.insert_model, values).await.map_err(request("models"))?;
        Ok(())
    }

    /// Every model ever recorded in `models` (rows whose `meta` does not
    /// parse are skipped).
    pub async fn model_metas(&self) -> Result<Vec<ModelMeta>, CassandraError> {
        let metas: Vec<(Option<String>,)> = self
            .session
            .query_iter(format!("SELECT meta FROM {}.models", self.keyspace), &[])
            .await
            .map_err(request("models"))?
            .rows_stream::<(Option<String>,)>()
            .map_err(request("models"))?
            .try_collect()
            .await
            .map_err(request("models"))?;
        Ok(metas.into_iter().filter_map(|(m,)| ModelMeta::parse(m?.as_bytes()).ok()).collect())
    }

    /// Answers `alerts` (newest days first) and card history.
    pub async fn query(&self, query: &Query) -> Result<Vec<RecordBatch>, CassandraError> {
        match query {
            Query::Card { cc_num, limit } => {
                let rows = self.select(&self.select_card, (cc_num.as_str(), *limit as i32), *limit).await?;
                Ok(vec![rows::from_rows(&rows)?])
            }
            Query::Alerts { limit } => {
                let mut days: Vec<scylla::value::CqlDate> = self
                    .session
                    .query_iter(format!("SELECT DISTINCT day FROM {}.alerts", self.keyspace), &[])
                    .await
                    .map_err(request("alerts days"))?
                    .rows_stream::<(scylla::value::CqlDate,)>()
                    .map_err(request("alerts days"))?
                    .map_ok(|(d,)| d)
                    .try_collect()
                    .await
                    .map_err(request("alerts days"))?;
                days.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
                let mut out = Vec::new();
                let mut left = *limit;
                for day in days {
                    if left == 0 {
                        break;
                    }
                    let rows = self.select(&self.select_alert_day, (day, left as i32), left).await?;
                    left -= rows.len();
                    out.push(rows::from_rows(&rows)?);
                }
                Ok(out)
            }
            // A card's partition is ordered, the table as a whole is not:
            // "newest over all cards" is a search (App::query asks the
            // search engine or memory). A caller that asks anyway gets an
            // error, not a panic.
            Query::Recent { .. } => Err(CassandraError::Unsupported {
                query: "recent",
                reason: "outcomes have no global order in Cassandra; ask the search engine or the in-memory store",
            }),
        }
    }

    async fn select(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        limit: usize,
    ) -> Result<Vec<Row>, CassandraError> {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(request("select"))?
            .rows_stream::<Row>()
            .map_err(request("select"))?
            .take(limit)
            .try_collect()
            .await
            .map_err(request("select"))
    }

    /// True if Cassandra answers a trivial query.
    pub async fn healthy(&self) -> bool {
        self.session.query_unpaged("SELECT release_version FROM system.local", &[]).await.is_ok()
    }
}

/// Tables created by an older version lack the columns added since (the
/// history features): `CREATE TABLE IF NOT EXISTS` leaves them as they
/// are, so each missing column is added (an upgrade needs no manual CQL).
/// Values to bind for a write: a None is *unset*, not null. A null written
/// is a tombstone in Cassandra, and a card's partition read with thousands
/// of them (a dozen empty columns an outcome) heads for the read failure
/// threshold; unset writes nothing. A column that must be cleared is bound
/// with a value that reads back as none instead ("" for `label_by`).
fn unset_nulls(values: rows::Values) -> Vec<scylla::value::MaybeUnset<CqlValue>> {
    use scylla::value::MaybeUnset;
    values.into_iter().map(|v| v.map_or(MaybeUnset::Unset, MaybeUnset::Set)).collect()
}

/// Every CREATE statement of a keyspace, in order (the same as
/// `scripts/schema/cassandra.cql`).
pub fn all_create_statements(ks: &str, replication: &str) -> Vec<String> {
    rows::create_statements(ks, replication)
}

/// The table and the columns a CREATE TABLE statement of ours declares
/// (one `name type` per line, up to the PRIMARY KEY line).
fn declared_columns(statement: &str) -> Option<(String, Vec<(String, String)>)> {
    let (head, body) = statement.split_once("(\n")?;
    let table = head.strip_prefix("CREATE TABLE IF NOT EXISTS ")?.trim().rsplit('.').next()?.to_string();
    let columns = body
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .take_while(|l| !l.starts_with("PRIMARY KEY") && !l.starts_with(')'))
        .filter_map(|l| {
            let (name, cql_type) = l.split_once(' ')?;
            Some((name.trim_matches('"').to_string(), cql_type.trim().to_string()))
        })
        .collect();
    Some((table, columns))
}

/// What `transaction_keys`' comment says once this service found the
/// keyspace's `transactions` empty: every outcome stored since has its key
/// row.
const KEYS_COMPLETE: &str = "fraudflight: a row for every outcome";

/// Whether `transaction_keys` may lack outcomes (stored before it existed):
/// unless its comment says it is complete, which the first start that finds
/// `transactions` empty writes. Any other table counts as incomplete: one
/// an upgrade added (by this service or by `scripts/schema/cassandra.cql`
/// run first), whatever crashed or raced in between.
async fn keys_incomplete(session: &Session, ks: &str) -> Result<bool, CassandraError> {
    let comment: Option<String> = session
        .query_unpaged(
            "SELECT comment FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'transaction_keys'",
            (ks,),
        )
        .await
        .map_err(request("schema"))?
        .into_rows_result()
        .map_err(request("schema"))?
        .maybe_first_row::<(Option<String>,)>()
        .map_err(request("schema"))?
        .and_then(|(c,)| c);
    if comment.as_deref() == Some(KEYS_COMPLETE) {
        return Ok(false);
    }
    let any_outcome = session
        .query_unpaged(format!("SELECT cc_num FROM {ks}.transactions LIMIT 1"), &[])
        .await
        .map_err(request("schema"))?
        .into_rows_result()
        .map_err(request("schema"))?
        .rows_num()
        > 0;
    if !any_outcome {
        let cql = format!("ALTER TABLE {ks}.transaction_keys WITH comment = '{KEYS_COMPLETE}'");
        session.query_unpaged(cql, &[]).await.map_err(request("schema"))?;
        return Ok(false);
    }
    tracing::info!(
        "`transaction_keys` may lack outcomes stored before it existed (an upgraded keyspace): a label whose \
         transaction is not found there is looked for by filtering its card's partition too"
    );
    Ok(true)
}

/// Upgrades a keyspace an earlier release created: every column a table of
/// this release declares and the table lacks is added (tables are created
/// IF NOT EXISTS before). Key columns never change, so only regular ones
/// can be missing.
async fn add_missing_columns(session: &Session, ks: &str, statements: &[String]) -> Result<(), CassandraError> {
    for (table, columns) in statements.iter().filter_map(|s| declared_columns(s)) {
        let existing: std::collections::HashSet<String> = session
            .query_unpaged(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
                (ks, table.as_str()),
            )
            .await
            .map_err(request("schema"))?
            .into_rows_result()
            .map_err(request("schema"))?
            .rows::<(String,)>()
            .map_err(request("schema"))?
            .filter_map(|r| r.ok().map(|(name,)| name))
            .collect();
        for (name, cql_type) in columns.iter().filter(|(name, _)| !existing.contains(name)) {
            tracing::info!(table, column = %name, "upgrading the keyspace: adding a column the table lacks");
            let cql = format!("ALTER TABLE {ks}.{table} ADD \"{name}\" {cql_type}");
            session.query_unpaged(cql, &[]).await.map_err(request("schema"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_outages() {
        use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
        let db = |e: DbError| ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, "m".into()));
        assert!(is_permanent(&db(DbError::Invalid)));
        assert!(is_permanent(&db(DbError::Unauthorized)));
        assert!(is_permanent(&db(DbError::SyntaxError)));
        assert!(!is_permanent(&db(DbError::Overloaded)));
        assert!(!is_permanent(&db(DbError::IsBootstrapping)));
        assert!(!is_permanent(&ExecutionError::RequestTimeout(std::time::Duration::from_secs(1))));
        assert!(!is_permanent(&ExecutionError::EmptyPlan));
    }

    #[test]
    fn every_table_declares_its_columns_for_the_upgrade() {
        let statements = all_create_statements("ks", "{'class': 'SimpleStrategy', 'replication_factor': 1}");
        let tables: std::collections::HashMap<String, Vec<(String, String)>> =
            statements.iter().filter_map(|s| declared_columns(s)).collect();
        for table in ["transactions", "alerts", "models", "labels", "merchant_days", "quality_rows", "model_lineup"] {
            assert!(tables.contains_key(table), "{table} not parsed: {:?}", tables.keys());
        }
        let labels = &tables["labels"];
        assert!(labels.contains(&("decided_by".to_string(), "text".to_string())), "{labels:?}");
        assert!(!labels.iter().any(|(n, _)| n.starts_with("PRIMARY")));
        let outcome = &tables["transactions"];
        assert_eq!(outcome.len(), rows::columns().len(), "every outcome column, nothing else");
        assert!(outcome.iter().any(|(n, t)| n == "label_by" && t == "text"), "quoted names unquoted");
        assert!(tables["alerts"].iter().any(|(n, t)| n == "day" && t == "date"));
    }
}
