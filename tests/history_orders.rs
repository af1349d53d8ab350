//! History features and labels in any order of arrival, against real Kafka
//! and Cassandra, checked against the *definitions* rather than against the
//! library.
//!
//! `tests/history_instances.rs` compares the service with the library's own
//! `History`; a mistake the two share would go unseen there. Here the
//! expected value of every one of the 15 history features of every stored
//! row comes from [`reference`], a small independent implementation of
//! the shared DESIGN.md, "History features and labels", written in this file
//! (no fraudflight feature code: the library only simulates the data and
//! names the columns). Every row must be stored once, every feature within
//! 1e-9 of the reference, and every stored outcome must show its newest
//! label (`is_fraud`, `label_reported_at`).
//!
//! The data: 45 days of handbook fraud on 300 cards, and a label for every
//! transaction (its simulated `is_fraud`) reported one day after it, half of
//! them with `cc_num` as a JSON number. DESIGN.md ("Labels in event time")
//! promises features independent of how fast, in what order and by how many
//! instances the two topics are consumed; each scenario is one such order:
//!
//! 1. both topics replayed at full speed at once, one instance;
//! 2. the same over two instances, one killed with SIGKILL mid-replay and
//!    restarted;
//! 3. labels ten times slower than transactions;
//! 4. every label first, then the transactions;
//! 5. a backlog whose partitions are 20 days apart in event time, two
//!    instances started together;
//! 6. a backlog on one labels partition ahead of another's label that a
//!    transaction needs (a made-certain case of a failure of 1).
//!
//! Run: `cargo test --test history_orders -- --include-ignored
//! --test-threads=1` with Kafka and Cassandra up and their test logins in
//! the environment (`make test-services`, or the command under
//! `scripts/with-services.sh --services "kafka cassandra"`).
//! Each scenario prints its measurements (rows, differing features per
//! name, unsettled labels, time) on stderr; `--nocapture` shows them.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use scylla::client::session::Session;
use scylla::value::{CqlValue, Row};

use fraudflight::record::Transaction;
use fraudflight::simulate::{FraudModel, SimConfig, Simulator};
use reference::{Features, Label};
use support::stack::{self, Names, Serve};

const DAY: i64 = 86_400;
const SEED: u64 = 2024;
const CARDS: usize = 300;
const DAYS: i64 = 45;
const PARTITIONS: i32 = 4;
/// Longest wait for every row to be stored (the slowest scenario needs
/// about two minutes).
const ROWS_LIMIT: Duration = Duration::from_secs(300);
/// Longest wait, once every row is stored, for the labels to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// The reference: the history features as DESIGN.md defines them, computed
/// from the whole stream and its labels at once (no state, no order).
mod reference {
    use std::collections::HashMap;

    use fraudflight::record::Transaction;

    const DAY: i64 = 86_400;
    /// Card windows and merchant windows, in days.
    pub const WINDOWS: [i64; 3] = [1, 7, 30];
    /// Merchant windows end this many days before the transaction's day.
    const LABEL_DELAY_DAYS: i64 = 7;
    const EARTH_RADIUS_KM: f64 = 6371.0;

    /// A label as the test sends it.
    #[derive(Debug, Clone)]
    pub struct Label {
        pub trans_num: String,
        pub cc_num: String,
        pub is_fraud: bool,
        pub reported_at: i64,
    }

    /// The 15 history features of one transaction.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    pub struct Features {
        pub card_tx: [f64; 3],
        pub card_amt_mean: [f64; 3],
        pub card_amt_ratio_30d: f64,
        pub card_secs_since_prev: f64,
        pub card_km_from_prev: f64,
        pub merch_tx: [f64; 3],
        pub merch_fraud_rate: [f64; 3],
    }

    impl Features {
        /// The feature of a stored column; an unknown name fails the test,
        /// so a feature added to the table cannot go unchecked.
        pub fn get(&self, name: &str) -> f64 {
            match name {
                "card_tx_1d" => self.card_tx[0],
                "card_tx_7d" => self.card_tx[1],
                "card_tx_30d" => self.card_tx[2],
                "card_amt_mean_1d" => self.card_amt_mean[0],
                "card_amt_mean_7d" => self.card_amt_mean[1],
                "card_amt_mean_30d" => self.card_amt_mean[2],
                "card_amt_ratio_30d" => self.card_amt_ratio_30d,
                "card_secs_since_prev" => self.card_secs_since_prev,
                "card_km_from_prev" => self.card_km_from_prev,
                "merch_tx_1d" => self.merch_tx[0],
                "merch_tx_7d" => self.merch_tx[1],
                "merch_tx_30d" => self.merch_tx[2],
                "merch_fraud_rate_1d" => self.merch_fraud_rate[0],
                "merch_fraud_rate_7d" => self.merch_fraud_rate[1],
                "merch_fraud_rate_30d" => self.merch_fraud_rate[2],
                other => panic!("the reference does not define {other}"),
            }
        }
    }

    /// Every transaction's features, by `trans_num`; `labels` in the order
    /// they are sent (of two reports at the same time, the later sent wins).
    pub fn features(stream: &[Transaction], labels: &[Label]) -> HashMap<String, Features> {
        let mut out: HashMap<String, Features> = HashMap::new();
        for t in stream {
            out.entry(t.trans_num.clone()).or_default();
        }
        card_features(stream, &mut out);
        merchant_features(stream, labels, &mut out);
        out
    }

    /// The label a transaction shows: its newest, by report time.
    pub fn newest(labels: &[Label]) -> HashMap<&str, &Label> {
        newest_before(labels, |_| i64::MAX)
    }

    /// Each transaction's newest label among those reported before
    /// `cutoff(label)`.
    fn newest_before(labels: &[Label], cutoff: impl Fn(&Label) -> i64) -> HashMap<&str, &Label> {
        let mut out: HashMap<&str, &Label> = HashMap::new();
        for l in labels.iter().filter(|l| l.reported_at < cutoff(l)) {
            let slot = out.entry(l.trans_num.as_str()).or_insert(l);
            if l.reported_at >= slot.reported_at {
                *slot = l;
            }
        }
        out
    }

    /// The UTC day of a Unix time.
    pub fn day(unix_time: i64) -> i64 {
        unix_time.div_euclid(DAY)
    }

    /// Integer cents, `round(amt * 100)` (half away from zero).
    fn cents(amt: f64) -> i64 {
        (amt * 100.0).round() as i64
    }

    fn haversine_km(lat1: f64, long1: f64, lat2: f64, long2: f64) -> f64 {
        let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
        let half_dphi = (lat2 - lat1).to_radians() / 2.0;
        let half_dlambda = (long2 - long1).to_radians() / 2.0;
        let a = half_dphi.sin().powi(2) + phi1.cos() * phi2.cos() * half_dlambda.sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }

    /// Per card: the card's transactions sorted by `(unix_time, trans_num)`
    /// (so the last one before a second is the "previous", ties in that
    /// second going to the greatest `trans_num`), prefix sums of cents,
    /// and binary searches for the window bounds.
    fn card_features(stream: &[Transaction], out: &mut HashMap<String, Features>) {
        let mut cards: HashMap<&str, Vec<&Transaction>> = HashMap::new();
        for t in stream {
            cards.entry(t.cc_num.as_str()).or_default().push(t);
        }
        for mut txs in cards.into_values() {
            txs.sort_by(|a, b| (a.unix_time, &a.trans_num).cmp(&(b.unix_time, &b.trans_num)));
            let times: Vec<i64> = txs.iter().map(|t| t.unix_time.unwrap()).collect();
            let mut prefix = vec![0i64];
            for t in &txs {
                prefix.push(prefix.last().unwrap() + cents(t.amt));
            }
            for t in &txs {
                let now = t.unix_time.unwrap();
                // Earlier = strictly earlier seconds.
                let end = times.partition_point(|&s| s < now);
                let f = out.get_mut(&t.trans_num).unwrap();
                for (w, days) in WINDOWS.iter().enumerate() {
                    let start = times.partition_point(|&s| s < now - days * DAY);
                    let count = (end - start) as i64;
                    let sum = prefix[end] - prefix[start];
                    f.card_tx[w] = count as f64;
                    f.card_amt_mean[w] = if count == 0 { 0.0 } else { sum as f64 / count as f64 / 100.0 };
                }
                let mean30 = f.card_amt_mean[2];
                f.card_amt_ratio_30d = if f.card_tx[2] == 0.0 || mean30 == 0.0 { -1.0 } else { t.amt / mean30 };
                match end.checked_sub(1).map(|i| txs[i]) {
                    Some(p) => {
                        f.card_secs_since_prev = (now - p.unix_time.unwrap()).min(30 * DAY) as f64;
                        f.card_km_from_prev = haversine_km(p.merch_lat, p.merch_long, t.merch_lat, t.merch_long);
                    }
                    None => {
                        f.card_secs_since_prev = (30 * DAY + 1) as f64;
                        f.card_km_from_prev = -1.0;
                    }
                }
            }
        }
    }

    /// Per (merchant, UTC day): transactions and frauds, a fraud being a
    /// transaction whose newest label reported before its tile is final
    /// (the start of day `d + 8`) says fraud; a transaction on day `D`
    /// reads days `[D - 7 - w, D - 7)`. No merchant: zeros.
    fn merchant_features(stream: &[Transaction], labels: &[Label], out: &mut HashMap<String, Features>) {
        let day_of: HashMap<&str, i64> =
            stream.iter().map(|t| (t.trans_num.as_str(), day(t.unix_time.unwrap()))).collect();
        let final_at =
            |l: &Label| day_of.get(l.trans_num.as_str()).map_or(i64::MIN, |d| (d + LABEL_DELAY_DAYS + 1) * DAY);
        let on_time = newest_before(labels, final_at);
        let mut tiles: HashMap<(&str, i64), (u64, u64)> = HashMap::new();
        for t in stream {
            let Some(merchant) = t.merchant.as_deref() else { continue };
            let tile = tiles.entry((merchant, day(t.unix_time.unwrap()))).or_default();
            tile.0 += 1;
            tile.1 += u64::from(on_time.get(t.trans_num.as_str()).is_some_and(|l| l.is_fraud));
        }
        for t in stream {
            let Some(merchant) = t.merchant.as_deref() else { continue };
            let d = day(t.unix_time.unwrap());
            let f = out.get_mut(&t.trans_num).unwrap();
            for (w, days) in WINDOWS.iter().enumerate() {
                let (mut n, mut frauds) = (0u64, 0u64);
                for tile_day in d - LABEL_DELAY_DAYS - days..d - LABEL_DELAY_DAYS {
                    if let Some((tx, fr)) = tiles.get(&(merchant, tile_day)) {
                        n += tx;
                        frauds += fr;
                    }
                }
                f.merch_tx[w] = n as f64;
                f.merch_fraud_rate[w] = if n == 0 { 0.0 } else { frauds as f64 / n as f64 };
            }
        }
    }
}

/// The 15 stored history columns, in table order (the only use of the
/// library's history code: names, not values).
fn feature_names() -> Vec<&'static str> {
    fraudflight::history::definitions::table().names().collect()
}

/// One scenario's data: the transactions, their labels in report order,
/// and what the reference expects of them.
struct Data {
    stream: Vec<Transaction>,
    labels: Vec<Label>,
    expected: HashMap<String, Features>,
}

impl Data {
    fn new(stream: Vec<Transaction>) -> Self {
        let labels = labels_one_day_later(&stream);
        let expected = reference::features(&stream, &labels);
        let data = Self { stream, labels, expected };
        data.assert_not_vacuous();
        data
    }

    /// Handbook fraud on `CARDS` cards over `DAYS` days (time-ordered).
    fn simulated() -> Self {
        Self::new(simulate(DAYS))
    }

    /// Not vacuous: many cards, and labels that move merchant risk.
    fn assert_not_vacuous(&self) {
        let cards: std::collections::HashSet<&str> = self.stream.iter().map(|t| t.cc_num.as_str()).collect();
        assert!(cards.len() >= CARDS, "only {} cards", cards.len());
        let risky = self.expected.values().filter(|f| f.merch_fraud_rate.iter().any(|r| *r > 0.0)).count();
        assert!(risky >= 10, "only {risky} transactions see a merchant fraud rate: labels would not be tested");
    }
}

/// `days` days of handbook fraud on `CARDS` cards, in time order.
fn simulate(days: i64) -> Vec<Transaction> {
    let config = SimConfig { seed: SEED, customers: CARDS, fraud: FraudModel::Handbook, ..SimConfig::default() };
    let end = config.start_unix + days * DAY;
    Simulator::new(config).take_while(|t| t.unix_time.unwrap() < end).collect()
}

/// A label for every transaction (its simulated `is_fraud`), reported one
/// day after it, in report order (as a bank sends them); and corrections:
/// every 13th transaction's label flipped on time (three days after it),
/// every 4th fraud reversed late (ten days after it, once its tile is
/// final: the on-time fraud must still count in merchant risk).
fn labels_one_day_later(stream: &[Transaction]) -> Vec<Label> {
    let label = |t: &Transaction, is_fraud: bool, after: i64| Label {
        trans_num: t.trans_num.clone(),
        cc_num: t.cc_num.clone(),
        is_fraud,
        reported_at: t.unix_time.unwrap() + after,
    };
    let mut labels: Vec<Label> = stream.iter().map(|t| label(t, t.is_fraud == Some(1), DAY)).collect();
    for (i, t) in stream.iter().enumerate() {
        let fraud = t.is_fraud == Some(1);
        if i % 13 == 0 {
            labels.push(label(t, !fraud, 3 * DAY));
        } else if fraud && i % 4 == 0 {
            labels.push(label(t, false, 10 * DAY));
        }
    }
    labels.sort_by_key(|l| l.reported_at);
    labels
}

/// One Kafka record to send.
struct Message {
    key: String,
    value: Vec<u8>,
    /// None: the default partitioner (by key).
    partition: Option<i32>,
}

/// Transactions as `stack::produce` writes them (key cc_num, JSON value).
fn transaction_messages(stream: &[Transaction], partition: impl Fn(&Transaction) -> Option<i32>) -> Vec<Message> {
    stream
        .iter()
        .map(|t| Message { key: t.cc_num.clone(), value: serde_json::to_vec(t).unwrap(), partition: partition(t) })
        .collect()
}

/// Labels keyed by cc_num; every other one carries `cc_num` as a JSON
/// number (DESIGN.md accepts both, and both must be applied).
fn label_messages(labels: &[Label]) -> Vec<Message> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let cc_num = if numeric_cc_num(i) {
                serde_json::json!(l.cc_num.parse::<u64>().expect("a simulated cc_num is digits"))
            } else {
                serde_json::json!(l.cc_num)
            };
            let value = serde_json::json!({
                "trans_num": l.trans_num,
                "cc_num": cc_num,
                "is_fraud": i32::from(l.is_fraud),
                "reported_at": l.reported_at,
            });
            Message { key: l.cc_num.clone(), value: value.to_string().into_bytes(), partition: None }
        })
        .collect()
}

/// Whether the `i`-th label sent carries `cc_num` as a JSON number.
fn numeric_cc_num(i: usize) -> bool {
    i.is_multiple_of(2)
}

/// Sends `messages` in order, at most `rate` a second (None: as fast as
/// possible), every one acknowledged. Idempotence keeps the order within a
/// partition even when the client retries (labels must stay in report
/// order), and a full queue waits for a delivery instead of reordering.
async fn send(topic: String, messages: Vec<Message>, rate: Option<f64>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut pending = FuturesUnordered::new();
    let delivered = |result: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>| {
        if let Err((e, _)) = result.expect("producer alive") {
            panic!("not delivered to {topic}: {e}");
        }
    };
    for (i, m) in messages.iter().enumerate() {
        if let Some(rate) = rate {
            tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
        }
        let mut record = FutureRecord::to(&topic).key(&m.key).payload(&m.value);
        if let Some(p) = m.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match pending.next().await {
                        Some(result) => delivered(result),
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => panic!("cannot send to {topic}: {e}"),
            }
        }
    }
    while let Some(result) = pending.next().await {
        delivered(result);
    }
}

fn labels_topic(names: &Names) -> String {
    format!("{}.labels", names.topic)
}

/// Both topics, 4 partitions each, before any `serve` starts.
async fn create_topics(names: &Names) {
    stack::create_topic(&names.topic, PARTITIONS).await;
    stack::create_topic(&labels_topic(names), PARTITIONS).await;
}

/// Sends the transactions and the labels at once, from two tasks, each at
/// its own rate; returns when both are acknowledged.
async fn send_both(names: &Names, data: &Data, tx_rate: Option<f64>, label_rate: Option<f64>) {
    let transactions = tokio::spawn(send(names.topic.clone(), transaction_messages(&data.stream, |_| None), tx_rate));
    let labels = tokio::spawn(send(labels_topic(names), label_messages(&data.labels), label_rate));
    transactions.await.unwrap();
    labels.await.unwrap();
}

/// Waits until `transactions` holds `n` rows or `limit` passes; the number
/// of rows seen last (a shortfall is reported by [`Check`], not here, so a
/// failing run still measures what it stored).
async fn wait_for_rows(session: &Session, names: &Names, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let rows = stack::cassandra_count(session, &names.keyspace, "transactions").await;
        if rows >= n || Instant::now() >= deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits until `serve` has received `n` labels (`fraudflight_labels_total`),
/// or its count has stood still for 10 s (a label it refuses never counts:
/// the shortfall shows as unsettled labels in [`Check`]); the count seen
/// last.
async fn wait_for_labels(serve: &Serve, n: usize) -> f64 {
    let (mut last, mut since) = (-1.0, Instant::now());
    loop {
        let count = serve.metrics().value("fraudflight_labels_total", &[]).unwrap_or(0.0);
        if count >= n as f64 || (count == last && since.elapsed() > Duration::from_secs(10)) {
            return count;
        }
        if count != last {
            (last, since) = (count, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One stored outcome: its label columns and its history features.
struct Stored {
    trans_num: String,
    is_fraud: Option<i64>,
    label_reported_at: Option<i64>,
    features: Vec<Option<f64>>,
}

/// Every row of the test's `transactions` table.
async fn stored_rows(session: &Session, names: &Names) -> Vec<Stored> {
    let features = feature_names();
    let cql = format!(
        "SELECT trans_num, is_fraud, label_reported_at, {} FROM {}.transactions",
        features.join(", "),
        names.keyspace
    );
    let bigint = |v: &Option<CqlValue>| match v {
        Some(CqlValue::BigInt(n)) => Some(*n),
        _ => None,
    };
    stack::select::<Row>(session, cql)
        .await
        .into_iter()
        .map(|row| Stored {
            trans_num: match &row.columns[0] {
                Some(CqlValue::Text(s)) => s.clone(),
                other => panic!("trans_num {other:?}"),
            },
            is_fraud: bigint(&row.columns[1]),
            label_reported_at: bigint(&row.columns[2]),
            features: row.columns[3..]
                .iter()
                .map(|v| match v {
                    Some(CqlValue::Double(x)) => Some(*x),
                    _ => None,
                })
                .collect(),
        })
        .collect()
}

/// Rows whose label columns are not those of their newest label.
fn unsettled<'r>(rows: &'r [Stored], newest: &HashMap<&str, &Label>) -> Vec<&'r Stored> {
    rows.iter()
        .filter(|r| match newest.get(r.trans_num.as_str()) {
            Some(l) => r.is_fraud != Some(i64::from(l.is_fraud)) || r.label_reported_at != Some(l.reported_at),
            None => false,
        })
        .collect()
}

/// What a scenario measured.
#[derive(Debug, Default)]
struct Check {
    expected: usize,
    stored: usize,
    missing: usize,
    duplicated: usize,
    unexpected: usize,
    /// Rows whose feature differs from the reference by more than 1e-9 (a
    /// null counts), per feature name.
    differing: BTreeMap<&'static str, usize>,
    examples: Vec<String>,
    unsettled: usize,
}

impl Check {
    /// Waits (up to `SETTLE_LIMIT`) for the labels to settle, then compares
    /// every stored row with the reference.
    async fn run(session: &Session, names: &Names, data: &Data) -> Self {
        let newest = reference::newest(&data.labels);
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut rows = stored_rows(session, names).await;
        while !unsettled(&rows, &newest).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rows = stored_rows(session, names).await;
        }
        let wrong_labels = unsettled(&rows, &newest);
        let mut check = Self {
            expected: data.expected.len(),
            stored: rows.len(),
            unsettled: wrong_labels.len(),
            ..Self::default()
        };
        // Which labels: the position in the labels topic tells whether the
        // label carried cc_num as a number (`label_messages`).
        let sent_at: HashMap<&str, usize> =
            data.labels.iter().enumerate().map(|(i, l)| (l.trans_num.as_str(), i)).collect();
        for r in wrong_labels.iter().take(5) {
            let l = newest[r.trans_num.as_str()];
            let i = sent_at[r.trans_num.as_str()];
            check.examples.push(format!(
                "{} label: stored is_fraud {:?} reported_at {:?}, newest label {} at {} (label #{i}, cc_num as a {})",
                r.trans_num,
                r.is_fraud,
                r.label_reported_at,
                i32::from(l.is_fraud),
                l.reported_at,
                if numeric_cc_num(i) { "number" } else { "string" }
            ));
        }
        check.compare(&rows, &data.expected);
        check
    }

    fn compare(&mut self, rows: &[Stored], expected: &HashMap<String, Features>) {
        let names = feature_names();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for row in rows {
            *seen.entry(row.trans_num.as_str()).or_default() += 1;
            let Some(want) = expected.get(&row.trans_num) else {
                self.unexpected += 1;
                continue;
            };
            for (name, got) in names.iter().zip(&row.features) {
                let want = want.get(name);
                if got.is_none_or(|g| (g - want).abs() > 1e-9) {
                    let count = self.differing.entry(name).or_default();
                    *count += 1;
                    // The first two of each feature, so every kind of
                    // difference shows.
                    if *count <= 2 {
                        self.examples.push(format!("{} {name}: stored {got:?}, defined {want}", row.trans_num));
                    }
                }
            }
        }
        self.missing = expected.keys().filter(|k| !seen.contains_key(k.as_str())).count();
        self.duplicated = seen.values().filter(|n| **n > 1).count();
    }

    fn clean(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.differing.is_empty()
            && self.unsettled == 0
    }

    /// One line for the scenario's report.
    fn summary(&self) -> String {
        let total: usize = self.differing.values().sum();
        format!(
            "rows {}/{} (missing {}, duplicated {}, unexpected {}); features differing: {total} {:?}; unsettled labels: {}",
            self.stored, self.expected, self.missing, self.duplicated, self.unexpected, self.differing, self.unsettled
        )
    }
}

/// A scenario's end: prints the measurements, then fails unless every row
/// is stored once with the defined features and its settled label.
async fn finish(scenario: &str, started: Instant, session: &Session, names: &Names, data: &Data, serves: &[&Serve]) {
    let check = Check::run(session, names, data).await;
    let metric = |name| serves.iter().map(|s| s.metrics().value(name, &[]).unwrap_or(-1.0)).collect::<Vec<_>>();
    let diagnostics = format!(
        "labels_total {:?}, waits {:?}, stalls {:?}, late {:?}, pending {:?}",
        metric("fraudflight_labels_total"),
        metric("fraudflight_labels_waits_total"),
        metric("fraudflight_labels_stalls_total"),
        metric("fraudflight_labels_late_total"),
        metric("fraudflight_labels_pending"),
    );
    let logs: Vec<String> = serves.iter().map(|s| s.log.display().to_string()).collect();
    eprintln!("[{scenario}] {} in {:.0?}; {diagnostics}", check.summary(), started.elapsed());
    assert!(
        check.clean(),
        "{scenario}: {}\nexamples: {:#?}\n{diagnostics}\nlogs: {logs:?}",
        check.summary(),
        check.examples
    );
}

#[test]
fn the_reference_follows_the_definitions_on_a_hand_made_card() {
    // Day 20,000 (UTC); a and b the same card, one minute apart, at one
    // merchant; c eight days later reads day 20,000's tile.
    let t0 = 20_000 * DAY + 3_600;
    let tx = |n: &str, at: i64, amt: f64, lat: f64, long: f64| Transaction {
        trans_num: n.into(),
        cc_num: "4000000000000001".into(),
        unix_time: Some(at),
        amt,
        merch_lat: lat,
        merch_long: long,
        merchant: Some("shop".into()),
        ..stack::simulated(1, 1).remove(0)
    };
    let stream = [tx("a", t0, 10.0, 0.0, 0.0), tx("b", t0 + 60, 30.0, 0.0, 1.0), tx("c", t0 + 8 * DAY, 40.0, 1.0, 1.0)];
    let label = |n: &str, fraud: bool, at: i64| Label {
        trans_num: n.into(),
        cc_num: "4000000000000001".into(),
        is_fraud: fraud,
        reported_at: at,
    };
    let labels = [label("a", true, t0 + DAY), label("b", false, t0 + DAY)];
    let f = reference::features(&stream, &labels);
    let one_degree_km = 6371.0 * std::f64::consts::PI / 180.0;

    let a = f["a"];
    assert_eq!((a.card_tx, a.card_amt_mean), ([0.0; 3], [0.0; 3]), "nothing earlier");
    assert_eq!(
        (a.card_amt_ratio_30d, a.card_secs_since_prev, a.card_km_from_prev),
        (-1.0, (30 * DAY + 1) as f64, -1.0)
    );
    assert_eq!((a.merch_tx, a.merch_fraud_rate), ([0.0; 3], [0.0; 3]));

    let b = f["b"];
    assert_eq!((b.card_tx, b.card_amt_mean, b.card_amt_ratio_30d), ([1.0; 3], [10.0; 3], 3.0));
    assert_eq!(b.card_secs_since_prev, 60.0);
    assert!((b.card_km_from_prev - one_degree_km).abs() < 1e-9, "{}", b.card_km_from_prev);

    let c = f["c"];
    assert_eq!((c.card_tx, c.card_amt_mean, c.card_amt_ratio_30d), ([0.0, 0.0, 2.0], [0.0, 0.0, 20.0], 2.0));
    assert_eq!(c.card_secs_since_prev, (8 * DAY - 60) as f64);
    assert!((c.card_km_from_prev - one_degree_km).abs() < 1e-9, "one degree of latitude from b");
    assert_eq!((c.merch_tx, c.merch_fraud_rate), ([2.0; 3], [0.5; 3]), "day 20,000: two sales, one fraud");

    // A label reported when c's tile becomes final (day + 8) is late: not
    // in merchant risk; but it is what the outcome shows.
    let late = [label("a", false, t0 + DAY), label("a", true, 20_008 * DAY)];
    assert_eq!(reference::features(&stream, &late)["c"].merch_fraud_rate, [0.0; 3]);
    assert!(reference::newest(&late)["a"].is_fraud);
}

#[test]
fn the_reference_ignores_the_same_second_and_breaks_ties_by_trans_num() {
    let t0 = 20_000 * DAY;
    let tx = |n: &str, at: i64, amt: f64, lat: f64| Transaction {
        trans_num: n.into(),
        cc_num: "4000000000000002".into(),
        unix_time: Some(at),
        amt,
        merch_lat: lat,
        merch_long: 0.0,
        merchant: None,
        ..stack::simulated(1, 1).remove(0)
    };
    // x and y in one second: neither is earlier than the other; z's
    // previous is y (the greater trans_num), two degrees away.
    let stream = [tx("y", t0, 1.0, 2.0), tx("x", t0, 3.0, 0.0), tx("z", t0 + 10, 4.0, 0.0)];
    let f = reference::features(&stream, &[]);
    assert_eq!((f["x"].card_tx, f["y"].card_tx), ([0.0; 3], [0.0; 3]));
    assert_eq!((f["z"].card_tx, f["z"].card_amt_mean, f["z"].card_amt_ratio_30d), ([2.0; 3], [2.0; 3], 2.0));
    assert_eq!(f["z"].card_secs_since_prev, 10.0);
    assert!((f["z"].card_km_from_prev - 2.0 * 6371.0 * std::f64::consts::PI / 180.0).abs() < 1e-9);
    assert_eq!(f["z"].merch_tx, [0.0; 3], "no merchant: zeros");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn both_topics_at_full_speed_at_once_give_the_defined_features() {
    let started = Instant::now();
    let data = Data::simulated();
    let names = Names::new("orders_full");
    create_topics(&names).await;
    let session = stack::cassandra().await;
    let a = stack::instance(&names, "a");
    send_both(&names, &data, None, None).await;
    wait_for_rows(&session, &names, data.stream.len(), ROWS_LIMIT).await;
    finish("1 full speed, one instance", started, &session, &names, &data, &[&a]).await;
}

/// Found by CI (2026-12-07, scenario 1 failed once in many runs): the
/// labels consumer read partition 1's end, then partition 1's next labels
/// waited in the consumer's one queue behind partition 0's backlog; the
/// end looked like silence, partition 1 counted as idle, and a transaction
/// read a tile before the label marking it was applied. Made certain here:
/// a fraud, every labels partition silent, then a backlog on partition 0,
/// the fraud's label on partition 1, and a transaction that reads the
/// fraud's tile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn a_backlog_on_one_labels_partition_does_not_hide_another_partitions_labels() {
    const BACKLOG: usize = 60_000;
    let started = Instant::now();
    let names = Names::new("orders_queue");
    create_topics(&names).await;
    let session = stack::cassandra().await;
    let a = stack::instance(&names, "a");
    let day = 20_000 * DAY;
    let tx = |n: &str, cc_num: &str, at: i64| Transaction {
        trans_num: n.into(),
        cc_num: cc_num.into(),
        unix_time: Some(at),
        merchant: Some("queue shop".into()),
        ..stack::simulated(1, 1).remove(0)
    };
    let (fraud, later) = (tx("fraud", "4000000000000011", day + 3_600), tx("later", "4000000000000012", day + 8 * DAY));
    send(names.topic.clone(), transaction_messages(&[fraud], |_| Some(0)), None).await;
    assert_eq!(wait_for_rows(&session, &names, 1, ROWS_LIMIT).await, 1, "the fraud stored");
    // Labels of transactions never sent, reported after `later`'s day
    // began (a partition is past the time `later` needs as soon as one is
    // applied).
    let unknown = |partition: i32, n: std::ops::Range<usize>| -> Vec<Message> {
        n.map(|i| Message {
            key: format!("5000{i:012}"),
            value: serde_json::json!({
                "trans_num": format!("never-{i}"),
                "cc_num": format!("5000{i:012}"),
                "is_fraud": 0,
                "reported_at": day + 9 * DAY,
            })
            .to_string()
            .into_bytes(),
            partition: Some(partition),
        })
        .collect()
    };
    // Every labels partition read to its end, silent past the idle time.
    for p in 1..PARTITIONS {
        send(labels_topic(&names), unknown(p, p as usize..p as usize + 1), None).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    // A backlog on partition 0, one label on 1, and its end read; then
    // more backlog, and the fraud's label on 1 queued behind it.
    send(labels_topic(&names), unknown(0, 100..100 + BACKLOG / 3), None).await;
    send(labels_topic(&names), unknown(1, 10..11), None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(labels_topic(&names), unknown(0, 200_000..200_000 + BACKLOG), None).await;
    let label = serde_json::json!({
        "trans_num": "fraud", "cc_num": "4000000000000011", "is_fraud": 1, "reported_at": day + 7_200,
    });
    let label = Message { key: "4000000000000011".into(), value: label.to_string().into_bytes(), partition: Some(1) };
    send(labels_topic(&names), vec![label], None).await;
    send(names.topic.clone(), transaction_messages(&[later], |_| Some(1)), None).await;
    assert_eq!(wait_for_rows(&session, &names, 2, ROWS_LIMIT).await, 2, "the later transaction stored");
    let names_of = feature_names();
    let rows = stored_rows(&session, &names).await;
    let stored = rows.iter().find(|r| r.trans_num == "later").expect("later stored");
    let feature = |name: &str| stored.features[names_of.iter().position(|n| *n == name).expect(name)];
    let labels = a.metrics().value("fraudflight_labels_total", &[]).unwrap_or(-1.0);
    eprintln!(
        "[queue] merch_tx_1d {:?}, merch_fraud_rate_1d {:?}; {labels} labels applied when checked, {:.0?}",
        feature("merch_tx_1d"),
        feature("merch_fraud_rate_1d"),
        started.elapsed()
    );
    assert_eq!(feature("merch_tx_1d"), Some(1.0), "the fraud's day holds one sale");
    assert_eq!(
        feature("merch_fraud_rate_1d"),
        Some(1.0),
        "the fraud's label, reported on its day, counts in the tile `later` reads (log: {})",
        a.log.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn two_instances_and_a_kill_at_full_speed_give_the_defined_features() {
    let started = Instant::now();
    let data = Data::simulated();
    let names = Names::new("orders_kill");
    create_topics(&names).await;
    let session = stack::cassandra().await;
    let a = stack::instance(&names, "a");
    let b = stack::instance(&names, "b");
    send_both(&names, &data, None, None).await;
    // Mid-replay: a third stored; b dies without committing what it scored
    // since its last commit, and comes back under the same instance id.
    let third = data.stream.len() / 3;
    let at_kill = wait_for_rows(&session, &names, third, ROWS_LIMIT).await;
    b.kill9();
    eprintln!("[2] killed b with {at_kill} rows stored");
    let b = stack::instance(&names, "b");
    wait_for_rows(&session, &names, data.stream.len(), ROWS_LIMIT).await;
    finish("2 two instances, kill -9", started, &session, &names, &data, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn one_instance_killed_and_restarted_at_full_speed_gives_the_defined_features() {
    let started = Instant::now();
    let data = Data::simulated();
    let names = Names::new("orders_restart");
    create_topics(&names).await;
    let session = stack::cassandra().await;
    let a = stack::instance(&names, "a");
    send_both(&names, &data, None, None).await;
    // Mid-replay, the only instance dies: its successor reloads cards that
    // hold transactions later than the records it re-reads.
    let at_kill = wait_for_rows(&session, &names, data.stream.len() / 4, ROWS_LIMIT).await;
    a.kill9();
    eprintln!("[6] killed the only instance with {at_kill} rows stored");
    let a = stack::instance(&names, "a");
    wait_for_rows(&session, &names, data.stream.len(), ROWS_LIMIT).await;
    finish("6 one instance, kill -9", started, &session, &names, &data, &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn labels_ten_times_slower_than_transactions_give_the_defined_features() {
    let started = Instant::now();
    let data = Data::simulated();
    let names = Names::new("orders_slow");
    create_topics(&names).await;
    let session = stack::cassandra().await;
    let a = stack::instance(&names, "a");
    // Rates such that the labels take about a minute and a half.
    send_both(&names, &data, Some(4_000.0), Some(400.0)).await;
    wait_for_rows(&session, &names, data.stream.len(), ROWS_LIMIT).await;
    finish("3 labels 10x slower", started, &session, &names, &data, &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn every_label_before_its_transaction_gives_the_defined_features() {
    let started = Instant::now();
    let data = Data::simulated();
    let names = Names::new("orders_labels_first");
    create_topics(&names).await;
    let session = stack::cassandra().await;
    let a = stack::instance(&names, "a");
    send(labels_topic(&names), label_messages(&data.labels), None).await;
    let consumed = wait_for_labels(&a, data.labels.len()).await;
    eprintln!("[4] {consumed} of {} labels received before the transactions", data.labels.len());
    send(names.topic.clone(), transaction_messages(&data.stream, |_| None), None).await;
    wait_for_rows(&session, &names, data.stream.len(), ROWS_LIMIT).await;
    finish("4 labels first", started, &session, &names, &data, &[&a]).await;
}

/// Scenario 5's stream: 65 days simulated; the cards of partitions 0 and 1
/// keep days 0-44, those of partitions 2 and 3 days 20-64; with the
/// partition of each transaction (card index mod 4, by sorted cc_num).
fn staggered() -> (Vec<Transaction>, HashMap<String, i32>) {
    let all = simulate(DAYS + 20);
    let mut cards: Vec<&str> = all.iter().map(|t| t.cc_num.as_str()).collect();
    cards.sort_unstable();
    cards.dedup();
    let partition: HashMap<String, i32> =
        cards.iter().enumerate().map(|(i, c)| (c.to_string(), (i % PARTITIONS as usize) as i32)).collect();
    let first_day = reference::day(all[0].unix_time.unwrap());
    let kept = all
        .into_iter()
        .filter(|t| {
            let day = reference::day(t.unix_time.unwrap()) - first_day;
            let offset = if partition[&t.cc_num] < 2 { 0 } else { 20 };
            (offset..offset + DAYS).contains(&day)
        })
        .collect();
    (kept, partition)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn a_backlog_with_partitions_20_days_apart_over_two_instances_gives_the_defined_features() {
    let started = Instant::now();
    let (stream, partition) = staggered();
    let data = Data::new(stream);
    let names = Names::new("orders_staggered");
    create_topics(&names).await;
    let session = stack::cassandra().await;
    // Everything is in Kafka before either instance starts.
    send(names.topic.clone(), transaction_messages(&data.stream, |t| Some(partition[&t.cc_num])), None).await;
    send(labels_topic(&names), label_messages(&data.labels), None).await;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| stack::instance(&names, "a"));
        let b = s.spawn(|| stack::instance(&names, "b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    wait_for_rows(&session, &names, data.stream.len(), ROWS_LIMIT).await;
    finish("5 staggered backlog, two instances", started, &session, &names, &data, &[&a, &b]).await;
}
