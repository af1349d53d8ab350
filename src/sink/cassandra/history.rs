//! The history's durable side over Cassandra ([`crate::history::Store`]):
//! a card is reloaded from its `transactions` partition and its `labels`;
//! merchant tiles are the `merchant_days` partitions, one per (merchant,
//! day), a row per transaction written with the outcome, `fraud` set by
//! labels on time with the report's time as the write timestamp (so the
//! newest report wins whichever instance writes last).
//!
//! Card numbers are protected as the outcomes are (keyed hash when
//! configured). Each request is retried until it succeeds or shutdown
//! gives up; the calls block, on the blocking pool the history runs on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimestamp, CqlValue};
use tokio_util::sync::CancellationToken;

use super::{rows, Cassandra, CassandraError};
use crate::history::card::Label;
use crate::history::{CardRequest, Found, Store, StoreError, StoredCard, StoredEvent, StoredTile, TileLabel, Wait};
use crate::retry::Retry;
use crate::security::card::CardHasher;

/// The history's prepared statements.
pub struct Statements {
    card_since: PreparedStatement,
    card_before: PreparedStatement,
    card_labels: PreparedStatement,
    card_reports: PreparedStatement,
    find: PreparedStatement,
    find_scan: PreparedStatement,
    pub(super) insert_key: PreparedStatement,
    tiles: PreparedStatement,
    tile_rows: PreparedStatement,
    tile_label: PreparedStatement,
    pub(super) insert_tile_row: PreparedStatement,
}

/// A `merchant_days` row as read: its day, its `trans_num` if asked, its mark.
type TileRead = (CqlDate, Option<String>, Option<bool>);

const EVENT_COLUMNS: &str = "trans_time, trans_num, amt, merch_lat, merch_long, merchant";
type EventRow = (CqlTimestamp, String, Option<f64>, Option<f64>, Option<f64>, Option<String>);

impl Statements {
    pub(super) async fn prepare<F, Fut>(ks: &str, prepare: F) -> Result<Self, CassandraError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<PreparedStatement, CassandraError>>,
    {
        Ok(Self {
            card_since: prepare(format!(
                "SELECT {EVENT_COLUMNS} FROM {ks}.transactions WHERE cc_num = ? AND trans_time >= ?"
            ))
            .await?,
            // Clustered newest first: the newest before `since`.
            card_before: prepare(format!(
                "SELECT {EVENT_COLUMNS} FROM {ks}.transactions WHERE cc_num = ? AND trans_time < ? LIMIT 1"
            ))
            .await?,
            card_labels: prepare(format!(
                "SELECT trans_num, is_fraud, reported_at, decided_by FROM {ks}.labels WHERE cc_num = ?"
            ))
                .await?,
            card_reports: prepare(format!(
                "SELECT trans_num, is_fraud, reported_at, decided_by FROM {ks}.label_reports WHERE cc_num = ?"
            ))
            .await?,
            // By key: a label names its transaction, not its time.
            find: prepare(format!(
                "SELECT trans_time, merchant FROM {ks}.transaction_keys WHERE cc_num = ? AND trans_num = ?"
            ))
            .await?,
            // Outcomes stored before `transaction_keys` existed: filtering
            // inside one card's partition, only when the key is not found.
            find_scan: prepare(format!(
                "SELECT trans_time, merchant FROM {ks}.transactions WHERE cc_num = ? AND trans_num = ? ALLOW FILTERING"
            ))
            .await?,
            insert_key: prepare(format!(
                "INSERT INTO {ks}.transaction_keys (cc_num, trans_num, trans_time, merchant) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            tiles: prepare(format!(
                "SELECT day, fraud FROM {ks}.merchant_days WHERE merchant = ? AND week IN ? AND day >= ? AND day <= ?"
            ))
            .await?,
            tile_rows: prepare(format!(
                "SELECT day, trans_num, fraud FROM {ks}.merchant_days WHERE merchant = ? AND week IN ? AND day >= ? AND day <= ?"
            ))
            .await?,
            tile_label: prepare(format!(
                "UPDATE {ks}.merchant_days USING TIMESTAMP ? SET fraud = ? WHERE merchant = ? AND week = ? AND day = ? AND cc_num = ? AND trans_num = ?"
            ))
            .await?,
            insert_tile_row: prepare(format!(
                "INSERT INTO {ks}.merchant_days (merchant, week, day, cc_num, trans_num) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
        })
    }
}

/// The `merchant_days` row of a stored outcome row; None without merchant.
fn tile_row(values: &rows::Values) -> Option<rows::Values> {
    let merchant = merchant_at();
    // Key columns come first: cc_num, trans_time, trans_num.
    let Some(CqlValue::Timestamp(time)) = &values[1] else { return None };
    let day = time.0.div_euclid(1000).div_euclid(86_400);
    match &values[merchant] {
        Some(CqlValue::Text(m)) if !m.is_empty() => Some(
            [vec![Some(CqlValue::Text(m.clone()))], week_day(day), vec![values[0].clone(), values[2].clone()]].concat(),
        ),
        _ => None,
    }
}

/// The `transaction_keys` row of a stored outcome row: where a label finds
/// its transaction.
pub(super) fn key_row(values: &rows::Values) -> rows::Values {
    // Key columns come first: cc_num, trans_time, trans_num.
    vec![values[0].clone(), values[2].clone(), values[1].clone(), values[merchant_at()].clone()]
}

fn merchant_at() -> usize {
    static MERCHANT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MERCHANT.get_or_init(|| {
        rows::columns().iter().position(|c| c.name == crate::record::column::merchant).expect("merchant column")
    })
}

/// The `merchant_days` rows of stored outcome rows, grouped by partition
/// (merchant, week), in batches of at most 100.
pub(super) fn tile_batches<'a>(rows: impl Iterator<Item = &'a rows::Values>) -> Vec<Vec<rows::Values>> {
    let mut groups: HashMap<(String, i64), Vec<rows::Values>> = HashMap::new();
    for row in rows.filter_map(tile_row) {
        let (Some(CqlValue::Text(merchant)), Some(CqlValue::BigInt(week))) = (&row[0], &row[1]) else { continue };
        groups.entry((merchant.clone(), *week)).or_default().push(row);
    }
    // Cassandra refuses batches over 50 KiB (batch_size_fail_threshold):
    // at most 100 rows of about 150 bytes each.
    groups.into_values().flat_map(|rows| rows.chunks(100).map(<[_]>::to_vec).collect::<Vec<_>>()).collect()
}

/// How many requests of one call run at once.
const CONCURRENCY: usize = 128;

/// [`Store`] over a connected Cassandra.
pub struct CassandraHistory {
    cassandra: Arc<Cassandra>,
    cards: Option<CardHasher>,
    runtime: tokio::runtime::Handle,
    abandon: CancellationToken,
}

impl CassandraHistory {
    /// Must be built inside the runtime its calls will block on.
    pub fn new(cassandra: Arc<Cassandra>, cards: Option<CardHasher>, abandon: CancellationToken) -> Self {
        Self { cassandra, cards, runtime: tokio::runtime::Handle::current(), abandon }
    }

    fn stored(&self, cc_num: &str) -> String {
        match &self.cards {
            Some(cards) => cards.hash(cc_num),
            None => cc_num.to_string(),
        }
    }

    /// Rows of a statement, retried until read or abandoned.
    async fn rows<R>(&self, statement: &PreparedStatement, values: rows::Values) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send,
    {
        let session = &self.cassandra.session;
        let mut retry = Retry::new("history store", &self.abandon);
        loop {
            let read = async {
                session
                    .execute_iter(statement.clone(), &values)
                    .await
                    .map_err(|e| e.to_string())?
                    .rows_stream::<R>()
                    .map_err(|e| e.to_string())?
                    .try_collect::<Vec<R>>()
                    .await
                    .map_err(|e| e.to_string())
            };
            // A node that stopped answering (draining, overloaded) would
            // otherwise hold the read, and the pipeline, for ever.
            let limit = self.cassandra.request_timeout;
            let read = async {
                tokio::time::timeout(limit, read)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())))
            };
            // Cassandra's health (/ready, /metrics) counts these reads too:
            // while they fail, the pipeline waits on them, not on writes.
            match read.await {
                Ok(rows) => {
                    self.cassandra.health.succeeded();
                    return Ok(rows);
                }
                // A row that does not decode will not decode next time either.
                Err(e) if e.contains("deserializ") || e.contains("type check") => return Err(StoreError(e)),
                Err(e) => {
                    self.cassandra.health.failed(&e);
                    retry.failed(e).await.map_err(|a| StoreError(a.to_string()))?
                }
            }
        }
    }

    async fn card(&self, request: CardRequest<'_>) -> Result<StoredCard, StoreError> {
        let key = Some(CqlValue::Text(self.stored(request.cc_num)));
        let at = Some(CqlValue::Timestamp(CqlTimestamp(request.since.saturating_mul(1000))));
        let (key_at, key) = (vec![key.clone(), at], vec![key]);
        type LabelRow = (String, Option<i32>, Option<CqlTimestamp>, Option<String>);
        // Every report, and the newest of each (labels stored before
        // `label_reports` existed are only there).
        let (recent, newest, reports) = futures::try_join!(
            self.rows::<EventRow>(&self.cassandra.history.card_since, key_at.clone()),
            self.rows::<LabelRow>(&self.cassandra.history.card_labels, key.clone()),
            self.rows::<LabelRow>(&self.cassandra.history.card_reports, key),
        )?;
        let labels: Vec<LabelRow> = newest.into_iter().chain(reports).collect();
        // The previous transaction is among the recent ones unless none is
        // before the first to score: one more read only then.
        let first_ms = request.first.saturating_mul(1000);
        let before = if recent.iter().any(|r| r.0 .0 < first_ms) {
            Vec::new()
        } else {
            self.rows::<EventRow>(&self.cassandra.history.card_before, key_at).await?
        };
        // A row without an amount is no stored outcome: a label's update of
        // an outcome still on its way (its writer died before writing it)
        // creates the row with the label's columns only.
        let events = recent
            .into_iter()
            .chain(before)
            .filter(|(_, _, amt, ..)| amt.is_some())
            .map(|(time, trans_num, amt, lat, long, merchant)| StoredEvent {
                unix_time: time.0.div_euclid(1000),
                trans_num,
                amt: amt.unwrap_or(0.0),
                merch_lat: lat.unwrap_or(f64::NAN),
                merch_long: long.unwrap_or(f64::NAN),
                merchant,
            })
            .collect();
        let labels = labels
            .into_iter()
            .filter_map(|(trans_num, flag, reported, by)| {
                // "" is a label without a decider (the sink stores it so).
                let by = by.filter(|b| !b.is_empty()).map(Arc::from);
                let label = Label { is_fraud: flag? != 0, reported_at: reported?.0.div_euclid(1000), by };
                Some((trans_num, label))
            })
            .collect();
        Ok(StoredCard { events, labels })
    }

    async fn find_one(&self, values: rows::Values) -> Result<Option<Found>, StoreError> {
        let statements = &self.cassandra.history;
        let mut rows = self.rows::<(CqlTimestamp, Option<String>)>(&statements.find, values.clone()).await?;
        // Filtering a card's partition reads all of it: only for keyspaces
        // whose older outcomes have no key row (a label for a transaction
        // not stored yet is the common miss, and must stay cheap).
        if rows.is_empty() && self.cassandra.keys_incomplete {
            rows = self.rows::<(CqlTimestamp, Option<String>)>(&statements.find_scan, values).await?;
        }
        Ok(rows.into_iter().next().map(|(t, merchant)| Found { unix_time: t.0.div_euclid(1000), merchant }))
    }

    fn block<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        self.runtime.block_on(work)
    }

    fn block_within<T>(&self, wait: Wait, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match wait {
            Wait::UntilShutdown => self.block(work),
            Wait::For(limit) => self.block(async {
                tokio::time::timeout(limit, work)
                    .await
                    .map_err(|_| StoreError(format!("Cassandra did not answer within {} s", limit.as_secs())))?
            }),
        }
    }
}

fn day(day: i64) -> Option<CqlValue> {
    Some(CqlValue::Date(rows::day_of(day * 86_400)))
}

/// The `week` and `day` key columns of a Unix day.
fn week_day(d: i64) -> Vec<Option<CqlValue>> {
    vec![Some(CqlValue::BigInt(d.div_euclid(7))), day(d)]
}

/// The Unix day of a CQL date.
fn unix_day(date: CqlDate) -> i64 {
    i64::from(date.0) - (1i64 << 31)
}

impl Store for CassandraHistory {
    fn cards(&self, cards: &[CardRequest], wait: Wait) -> Result<Vec<StoredCard>, StoreError> {
        self.block_within(
            wait,
            futures::stream::iter(cards.iter().map(|request| self.card(*request))).buffered(CONCURRENCY).try_collect(),
        )
    }

    fn tiles(&self, keys: &[(Arc<str>, i64)], rows_from: i64, wait: Wait) -> Result<Vec<StoredTile>, StoreError> {
        // One read per merchant: its weeks' partitions (IN), the days asked.
        let mut ranges: HashMap<&str, (i64, i64)> = HashMap::new();
        for (merchant, d) in keys {
            let range = ranges.entry(merchant).or_insert((*d, *d));
            *range = (range.0.min(*d), range.1.max(*d));
        }
        // Days from `rows_from` on are read with their rows' numbers, the
        // others counted only (most reads: a tile is read a week after its
        // day, its numbers of no use then).
        let mut reads: Vec<(&str, i64, i64, bool)> = Vec::new();
        for (merchant, (first, last)) in ranges {
            if first < rows_from {
                reads.push((merchant, first, last.min(rows_from - 1), false));
            }
            if last >= rows_from {
                reads.push((merchant, first.max(rows_from), last, true));
            }
        }
        let statements = &self.cassandra.history;
        let read = |&(merchant, first, last, numbered): &(&str, i64, i64, bool)| {
            let weeks = (first.div_euclid(7)..=last.div_euclid(7)).map(CqlValue::BigInt).collect();
            let values =
                vec![Some(CqlValue::Text(merchant.to_string())), Some(CqlValue::List(weeks)), day(first), day(last)];
            async move {
                Ok::<_, StoreError>(if numbered {
                    let rows = self.rows::<(CqlDate, String, Option<bool>)>(&statements.tile_rows, values).await?;
                    rows.into_iter().map(|(d, n, fraud)| (d, Some(n), fraud)).collect::<Vec<_>>()
                } else {
                    let rows = self.rows::<(CqlDate, Option<bool>)>(&statements.tiles, values).await?;
                    rows.into_iter().map(|(d, fraud)| (d, None, fraud)).collect()
                })
            }
        };
        let read: Vec<Vec<TileRead>> =
            self.block_within(wait, futures::stream::iter(reads.iter().map(read)).buffered(CONCURRENCY).try_collect())?;
        let rows = reads.iter().zip(read).flat_map(|((merchant, ..), rows)| {
            rows.into_iter().map(|(d, trans_num, fraud)| ((*merchant, unix_day(d)), trans_num, fraud == Some(true)))
        });
        let mut tiles: HashMap<(&str, i64), StoredTile> = HashMap::new();
        for (key, trans_num, fraud) in rows {
            let stored = tiles.entry(key).or_default();
            stored.tile.transactions += 1;
            stored.tile.frauds += u64::from(fraud);
            if let Some(trans_num) = trans_num {
                stored.rows.get_or_insert_with(HashMap::new).insert(trans_num.into(), fraud);
            }
        }
        Ok(keys
            .iter()
            .map(|(m, d)| {
                let mut stored = tiles.remove(&(&**m, *d)).unwrap_or_default();
                if *d >= rows_from {
                    stored.rows.get_or_insert_with(HashMap::new);
                }
                stored
            })
            .collect())
    }

    fn find(&self, transactions: &[(&str, &str)]) -> Result<Vec<Option<Found>>, StoreError> {
        let find = |(cc_num, trans_num): &(&str, &str)| {
            let values = vec![Some(CqlValue::Text(self.stored(cc_num))), Some(CqlValue::Text(trans_num.to_string()))];
            self.find_one(values)
        };
        self.block(futures::stream::iter(transactions.iter().map(find)).buffered(CONCURRENCY).try_collect())
    }

    fn write_tile_labels(&self, labels: &[TileLabel]) -> Result<(), StoreError> {
        let write = |l: &TileLabel| {
            let values = vec![
                Some(CqlValue::BigInt(l.label.version())),
                Some(CqlValue::Boolean(l.label.is_fraud)),
                Some(CqlValue::Text(l.merchant.to_string())),
                Some(CqlValue::BigInt(l.day.div_euclid(7))),
                day(l.day),
                Some(CqlValue::Text(self.stored(&l.cc_num))),
                Some(CqlValue::Text(l.trans_num.clone())),
            ];
            async move {
                self.cassandra
                    .execute(&self.cassandra.history.tile_label, values, &self.abandon)
                    .await
                    .map_err(|a| StoreError(a.to_string()))
            }
        };
        self.block(async {
            let mut writes = futures::stream::iter(labels.iter().map(write)).buffer_unordered(CONCURRENCY);
            while let Some(result) = writes.next().await {
                result?;
            }
            Ok(())
        })
    }
}
