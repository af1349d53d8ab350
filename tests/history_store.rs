//! The history over a real Cassandra, in every state a writer killed
//! mid-store leaves behind. `history_orders` kills an instance at a random
//! moment; here, at the library level, each crash point is exact.
//!
//! A batch's outcomes go to `transactions` (then `transaction_keys`), then
//! to `merchant_days`, then its tiles get their fraud marks. A writer can
//! die between any two of these, before its commit, and its records are
//! read again by the next owner of their partition, whose first batch, in a
//! backlog, may span more than a week: it reads the tile of its own first
//! day and then records that day's transactions. Each must count once in
//! the tile (and its fraud once), whatever of it was stored, for the
//! features to follow the definitions (the shared DESIGN.md, "History
//! features and labels"). A CI run found one of these states counting a
//! transaction twice: a fraud mark written before its outcome, which
//! creates the tile's row.
//!
//! Run: `cargo test --test history_store -- --include-ignored` with
//! Cassandra up and its test login in the environment (`make test-services`).

mod support;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use scylla::client::session::Session;
use scylla::value::{CqlDate, CqlTimestamp, CqlValue};
use tokio_util::sync::CancellationToken;

use fraudflight::history::{History, LabelRecord, Store, Use};
use fraudflight::record::Transaction;
use fraudflight::sink::cassandra::history::CassandraHistory;
use fraudflight::sink::cassandra::Cassandra;
use support::stack;

const DAY: i64 = 86_400;
/// The crash's day (UTC days since the epoch); the next owner's batch runs
/// to eight days later, whose transactions read this day's tile.
const D0: i64 = 20_000;

/// What the killed writer stored of transaction `r` before it died.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    Nothing,
    /// Its outcome row (and key), not its tile row.
    Outcome,
    /// Its tile row only (not this writer's order, outcome first; the
    /// reader must not depend on it).
    TileRow,
    /// Its fraud mark only: the tile's row created by the label's update.
    FraudMark,
    /// Outcome, key, tile row and fraud mark.
    Everything,
}

struct Keyspace {
    cassandra: Arc<Cassandra>,
    session: Session,
    name: String,
}

async fn keyspace() -> Keyspace {
    let name = support::unique("history_store").to_lowercase();
    let config = support::cassandra_config(&name);
    let cassandra = Cassandra::connect(&config, &CancellationToken::new()).await.expect("connect and create tables");
    Keyspace { cassandra: Arc::new(cassandra), session: stack::cassandra().await, name }
}

impl Keyspace {
    /// A history of a new process over this keyspace (built inside the
    /// runtime its store calls block on).
    fn history(&self) -> Arc<History> {
        let store = CassandraHistory::new(self.cassandra.clone(), None, CancellationToken::new());
        Arc::new(History::with_store(NonZeroUsize::new(10_000).unwrap(), Arc::new(store) as Arc<dyn Store>))
    }

    async fn cql(&self, cql: String, values: Vec<CqlValue>) {
        self.session.query_unpaged(cql, values).await.expect("CQL runs");
    }

    /// Leaves what a writer killed at `stored` left of `t`, fraud-labelled.
    async fn crash(&self, t: &Transaction, stored: Stored) {
        let ks = &self.name;
        let at = t.unix_time.expect("timed");
        let merchant = t.merchant.clone().expect("a merchant");
        let day = CqlValue::Date(CqlDate((1u32 << 31) + (at.div_euclid(DAY) as u32)));
        let tile_key = || {
            vec![
                CqlValue::Text(merchant.clone()),
                CqlValue::BigInt(at.div_euclid(DAY).div_euclid(7)),
                day.clone(),
                CqlValue::Text(t.cc_num.clone()),
                CqlValue::Text(t.trans_num.clone()),
            ]
        };
        if matches!(stored, Stored::Outcome | Stored::Everything) {
            let row = vec![
                CqlValue::Text(t.cc_num.clone()),
                CqlValue::Timestamp(CqlTimestamp(at * 1000)),
                CqlValue::Text(t.trans_num.clone()),
                CqlValue::Double(t.amt),
                CqlValue::Double(t.merch_lat),
                CqlValue::Double(t.merch_long),
                CqlValue::Text(merchant.clone()),
            ];
            self.cql(
                format!(
                    "INSERT INTO {ks}.transactions (cc_num, trans_time, trans_num, amt, merch_lat, merch_long, merchant) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                row,
            )
            .await;
            let key = vec![
                CqlValue::Text(t.cc_num.clone()),
                CqlValue::Text(t.trans_num.clone()),
                CqlValue::Timestamp(CqlTimestamp(at * 1000)),
                CqlValue::Text(merchant.clone()),
            ];
            self.cql(
                format!(
                    "INSERT INTO {ks}.transaction_keys (cc_num, trans_num, trans_time, merchant) VALUES (?, ?, ?, ?)"
                ),
                key,
            )
            .await;
        }
        if matches!(stored, Stored::TileRow | Stored::Everything) {
            self.cql(
                format!(
                    "INSERT INTO {ks}.merchant_days (merchant, week, day, cc_num, trans_num) VALUES (?, ?, ?, ?, ?)"
                ),
                tile_key(),
            )
            .await;
        }
        if matches!(stored, Stored::FraudMark | Stored::Everything) {
            // As the history writes it: the report's version as the
            // write's timestamp (a newer report wins).
            let version = fraudflight::history::card::version(at + DAY, true, None);
            let mut values = vec![CqlValue::BigInt(version), CqlValue::Boolean(true)];
            values.extend(tile_key());
            self.cql(
                format!(
                    "UPDATE {ks}.merchant_days USING TIMESTAMP ? SET fraud = ? \
                     WHERE merchant = ? AND week = ? AND day = ? AND cc_num = ? AND trans_num = ?"
                ),
                values,
            )
            .await;
        }
    }

    /// (merchant, day) rows of `merchant_days` for one transaction, with
    /// its fraud mark.
    async fn tile_row(&self, t: &Transaction) -> Option<Option<bool>> {
        let at = t.unix_time.expect("timed");
        let rows: Vec<(Option<bool>,)> = stack::select(
            &self.session,
            format!(
                "SELECT fraud FROM {}.merchant_days WHERE merchant = '{}' AND week = {} AND day = '{}' \
                 AND cc_num = '{}' AND trans_num = '{}'",
                self.name,
                t.merchant.as_deref().unwrap(),
                at.div_euclid(DAY).div_euclid(7),
                chrono::DateTime::from_timestamp(at, 0).unwrap().format("%Y-%m-%d"),
                t.cc_num,
                t.trans_num
            ),
        )
        .await;
        rows.into_iter().next().map(|(fraud,)| fraud)
    }
}

fn tx(card: &str, trans_num: &str, at: i64, merchant: &str) -> Transaction {
    Transaction {
        trans_num: trans_num.into(),
        cc_num: card.into(),
        unix_time: Some(at),
        amt: 25.0,
        merch_lat: 40.0,
        merch_long: -75.0,
        merchant: Some(merchant.into()),
        ..stack::simulated(1, 1).remove(0)
    }
}

fn fraud_label(t: &Transaction) -> LabelRecord {
    LabelRecord {
        trans_num: t.trans_num.clone(),
        cc_num: t.cc_num.clone(),
        is_fraud: true,
        reported_at: Some(t.unix_time.unwrap() + DAY),
        decided_by: None,
    }
}

/// The history features of a batch, recorded (ingest), by `trans_num`.
async fn record(history: &Arc<History>, stream: &[Transaction]) -> HashMap<String, HashMap<String, f64>> {
    let (history, stream) = (history.clone(), stream.to_vec());
    tokio::task::spawn_blocking(move || {
        let batch = fraudflight::record::conform::conform(&fraudflight::record::to_batch(&stream)).unwrap();
        let features = fraudflight::features::derive(&batch);
        let columns = history.compute(&batch, &features, Use::Update, None).expect("history step");
        stream
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let row = columns.columns.iter().map(|(name, c)| (name.to_string(), c.value(i))).collect();
                (t.trans_num.clone(), row)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Labels as the service takes them (`App::store_labels`): kept in
/// `labels`, then applied.
async fn apply(keyspace: &Keyspace, history: &Arc<History>, labels: Vec<LabelRecord>) {
    keyspace.cassandra.write_labels(&labels, D0 * DAY * 1000, &CancellationToken::new()).await.expect("labels kept");
    let history = history.clone();
    tokio::task::spawn_blocking(move || history.apply_stream_labels(&labels, D0 * DAY).expect("labels applied"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: make test-services"]
async fn a_transaction_read_again_after_its_writer_died_counts_once_in_its_tile() {
    let keyspace = keyspace().await;
    let states = [Stored::Nothing, Stored::Outcome, Stored::TileRow, Stored::FraudMark, Stored::Everything];
    // r's label read again: fraud, not fraud, none (but a fraud mark is
    // only ever written for a label kept before).
    let cases: Vec<(Stored, Option<bool>)> = states
        .into_iter()
        .flat_map(|s| [(s, Some(true)), (s, Some(false)), (s, None)])
        .filter(|(s, label)| label.is_some() || !matches!(s, Stored::FraudMark | Stored::Everything))
        .collect();
    let mut wrong = Vec::new();
    for (i, (stored, labelled)) in cases.into_iter().enumerate() {
        // A merchant and two cards per case: the cases do not meet.
        let merchant = format!("shop-{i}");
        let r = tx(&format!("4000000000001{i:02}0"), &format!("r{i}"), D0 * DAY + 3_600, &merchant);
        let s = tx(&format!("4000000000001{i:02}1"), &format!("s{i}"), (D0 + 8) * DAY + 3_600, &merchant);
        keyspace.crash(&r, stored).await;
        // The next owner: a new process, the label (reported the next day,
        // on time) read again from the labels topic, then one batch from
        // the crash's day to the day that reads its tile. Not fraud, a
        // fraud mark left behind is an older report's, withdrawn since.
        let next = keyspace.history();
        if let Some(fraud) = labelled {
            let mut label = fraud_label(&r);
            label.is_fraud = fraud;
            label.reported_at = label.reported_at.map(|at| at + 60);
            apply(&keyspace, &next, vec![label]).await;
        }
        let features = record(&next, &[r.clone(), s.clone()]).await;
        let (tx_1d, rate_1d) = (features[&s.trans_num]["merch_tx_1d"], features[&s.trans_num]["merch_fraud_rate_1d"]);
        let defined = (1.0, if labelled == Some(true) { 1.0 } else { 0.0 });
        if (tx_1d, rate_1d) != defined {
            wrong.push(format!("{stored:?}, label {labelled:?}: merch_tx_1d {tx_1d}, merch_fraud_rate_1d {rate_1d}"));
        }
    }
    assert!(wrong.is_empty(), "defined: merch_tx_1d 1 (r once), merch_fraud_rate_1d as its label says: {wrong:#?}");
    keyspace.cql(format!("DROP KEYSPACE {}", keyspace.name), vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: make test-services"]
async fn a_tiles_fraud_mark_is_written_once_its_outcome_is_stored() {
    let keyspace = keyspace().await;
    let history = keyspace.history();
    let r = tx("4000000000000200", "mark-r", D0 * DAY + 3_600, "shop-mark");
    // The label first (pending), then the transaction: recorded, not stored.
    apply(&keyspace, &history, vec![fraud_label(&r)]).await;
    record(&history, std::slice::from_ref(&r)).await;
    assert_eq!(keyspace.tile_row(&r).await, None, "no tile row before the outcome is stored");
    // Stored: the writer settles the batch and writes the marks.
    let settlement = history.settle(std::iter::once(r.trans_num.as_str()));
    assert_eq!(settlement.tiles.len(), 1, "the mark held back: {:?}", settlement.tiles);
    let tiles = settlement.tiles;
    let writer = history.clone();
    tokio::task::spawn_blocking(move || writer.write_tiles(&tiles)).await.unwrap().expect("marks written");
    assert_eq!(keyspace.tile_row(&r).await, Some(Some(true)), "marked fraud once settled");

    // More outcomes on their way than the card cache holds (a DoPut batch
    // of a backfill), labelled while they are: every mark is held.
    let small = {
        let store = CassandraHistory::new(keyspace.cassandra.clone(), None, CancellationToken::new());
        Arc::new(History::with_store(NonZeroUsize::new(2).unwrap(), Arc::new(store) as Arc<dyn Store>))
    };
    let many: Vec<Transaction> =
        (0..5).map(|i| tx("4000000000000300", &format!("many-{i}"), D0 * DAY + 60 * i, "shop-many")).collect();
    record(&small, &many).await;
    apply(&keyspace, &small, many.iter().map(fraud_label).collect()).await;
    for t in &many {
        assert_eq!(keyspace.tile_row(t).await, None, "{}: no tile row before its outcome is stored", t.trans_num);
    }
    let settled = small.settle(many.iter().map(|t| t.trans_num.as_str()));
    let mut marked: Vec<&str> = settled.tiles.iter().map(|m| m.trans_num.as_str()).collect();
    marked.sort();
    assert_eq!(marked, ["many-0", "many-1", "many-2", "many-3", "many-4"], "every held mark, none forgotten");
    keyspace.cql(format!("DROP KEYSPACE {}", keyspace.name), vec![]).await;
}
