//! Labels from Kafka, against real Kafka and Cassandra: `serve` reads
//! `<topic>.labels`, stores every label in Cassandra `labels`, sends a bad
//! one to `<topic>.labels.dlq` with its reason, keeps a label for an unseen
//! transaction (pending), counts a late one, and the labels on time reach
//! the merchant risk of a transaction eight days later; the stored outcome
//! (Cassandra `transactions`, the search document) shows its label.
//!
//! Run by `make test-services` (needs Kafka, Cassandra and OpenSearch up).

mod support;

use std::time::Duration;

use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use fraudflight::record::Transaction;
use support::stack::{self, Names, Serve};

const DAY: i64 = 86_400;
const SHOP: &str = "fraud_Compromised Corner Shop";

/// Four cards' purchases at the shop on `day` (Unix day number).
fn purchases(day: i64) -> Vec<Transaction> {
    stack::simulated(41, 4)
        .into_iter()
        .enumerate()
        .map(|(i, t)| Transaction {
            merchant: Some(SHOP.into()),
            unix_time: Some(day * DAY + 3_600 * (i as i64 + 1)),
            trans_date_trans_time: None,
            trans_num: format!("shop-{day}-{i}"),
            cc_num: format!("41110000000{i}"),
            is_fraud: Some(0),
            ..t
        })
        .collect()
}

/// `columns` of the stored outcome of `t`.
async fn stored<R>(session: &scylla::client::session::Session, keyspace: &str, t: &Transaction, columns: &str) -> R
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    session
        .query_unpaged(
            format!(
                "SELECT {columns} FROM {keyspace}.transactions WHERE cc_num = ? AND trans_time = ? AND trans_num = ?"
            ),
            (&t.cc_num, scylla::value::CqlTimestamp(t.unix_time.unwrap() * 1000), &t.trans_num),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap()
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, value: &str) {
    producer.send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn labels_are_stored_dead_lettered_pending_or_late_and_move_merchant_risk() {
    let names = Names::new("labels");
    stack::create_topic(&names.topic, 2).await;
    let serve = Serve::start(&names.env());
    let session = stack::cassandra().await;
    let day = 20_100;
    let first = purchases(day);
    stack::produce(&names.topic, &first).await;
    stack::wait_for_rows(&session, &names, first.len(), Duration::from_secs(120), "the shop's purchases").await;
    let search = stack::opensearch();
    stack::wait_for_documents(&search, &names, first.len(), Duration::from_secs(120), "the shop's purchases").await;
    let alerts = stack::cassandra_count(&session, &names.keyspace, "alerts").await;

    let labels = format!("{}.labels", names.topic);
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", support::kafka_brokers()).create().unwrap();
    let on_time = (day + 3) * DAY;
    for (t, reported) in [(&first[0], Some(on_time)), (&first[1], Some(on_time)), (&first[2], None)] {
        let reported = reported.map_or(String::new(), |r| format!(r#","reported_at":{r}"#));
        // The second names its card as the record does: a JSON number.
        let card = if t.trans_num == first[1].trans_num { t.cc_num.clone() } else { format!(r#""{}""#, t.cc_num) };
        let value = format!(r#"{{"trans_num":"{}","cc_num":{card},"is_fraud":1{reported}}}"#, t.trans_num);
        send(&producer, &labels, &t.cc_num, &value).await;
    }
    // Not a label; and a label for a transaction the service never saw.
    send(&producer, &labels, "4111", r#"{"trans_num":"x","cc_num":"4111","is_fraud":7}"#).await;
    send(&producer, &labels, "4222", r#"{"trans_num":"unseen","cc_num":"4222","is_fraud":0,"reported_at":1}"#).await;
    let keyspace = names.keyspace.clone();
    stack::wait_until(Duration::from_secs(60), "four labels in Cassandra", || {
        let (session, keyspace) = (&session, &keyspace);
        async move { stack::cassandra_count(session, keyspace, "labels").await == 4 }
    })
    .await;
    // The label without reported_at was reported at its Kafka timestamp
    // (now): long after the shop's tile was final, so it is late.
    let rows: Vec<(String, i32, scylla::value::CqlTimestamp)> =
        stack::select(&session, format!("SELECT trans_num, is_fraud, reported_at FROM {keyspace}.labels")).await;
    let stamp = |n: &str| rows.iter().find(|r| r.0 == n).map(|r| r.2 .0 / 1000).unwrap();
    assert_eq!(stamp(&first[0].trans_num), on_time);
    assert!(stamp(&first[2].trans_num) > (day + 8) * DAY, "Kafka timestamp used");

    // Eight days later, a purchase at the shop reads day `day`'s tile: two
    // on-time frauds of four purchases.
    let later = Transaction { trans_num: "shop-later".into(), ..purchases(day + 8).remove(0) };
    stack::produce(&names.topic, std::slice::from_ref(&later)).await;
    stack::wait_for_rows(&session, &names, first.len() + 1, Duration::from_secs(120), "the later purchase").await;
    let (rate, tx): (Option<f64>, Option<f64>) =
        stored(&session, &keyspace, &later, "merch_fraud_rate_1d, merch_tx_1d").await;
    assert_eq!((rate, tx), (Some(0.5), Some(4.0)));

    // The stored outcomes show their labels (the second's card was a JSON
    // number); no alert row appeared for them.
    for (t, want) in [(&first[0], 1), (&first[1], 1), (&first[3], 0)] {
        let (flag,): (Option<i64>,) = stored(&session, &keyspace, t, "is_fraud").await;
        assert_eq!(flag, Some(want), "{}", t.trans_num);
    }
    assert_eq!(stack::cassandra_count(&session, &names.keyspace, "alerts").await, alerts);
    let index = format!("{}-*", names.index_prefix);
    let query = serde_json::json!({"query": {"term": {"trans_num": first[0].trans_num}}});
    stack::wait_until(Duration::from_secs(30), "the search document's label", || {
        let (search, index, query) = (&search, &index, &query);
        async move { stack::search(search, index, query.clone()).await["hits"]["hits"][0]["_source"]["is_fraud"] == 1 }
    })
    .await;

    let dlq = stack::reader(&format!("{labels}.dlq"));
    let msg = tokio::time::timeout(Duration::from_secs(60), dlq.recv()).await.expect("a dead letter").unwrap();
    let error = msg.headers().and_then(|h| h.iter().find(|h| h.key == "error")).and_then(|h| h.value).unwrap();
    assert!(String::from_utf8_lossy(error).contains("is_fraud"), "{}", String::from_utf8_lossy(error));

    // No write left a tombstone (a null bound is one, and a card read with
    // thousands heads for Cassandra's failure threshold): the labelled
    // card's outcomes, its labels and the label lookup's key rows.
    let card = &first[0].cc_num;
    for table in ["transactions", "labels", "transaction_keys"] {
        let (live, dead) = stack::read_cells(
            &session,
            &format!("SELECT * FROM {keyspace}.{table} WHERE cc_num = '{card}' ALLOW FILTERING"),
        )
        .await;
        assert!(live > 0, "{table}: nothing read");
        assert_eq!(dead, 0, "{table}: {dead} tombstone cells with {live} live rows");
    }

    let metrics = serve.metrics();
    assert_eq!(metrics.value("fraudflight_labels_total", &[]), Some(4.0));
    assert_eq!(metrics.value("fraudflight_labels_pending", &[]), Some(1.0));
    assert_eq!(metrics.value("fraudflight_labels_late_total", &[]), Some(1.0));
    assert!(serve.terminate().success());
}

/// Two reports of one transaction read in one poll (a correction right
/// behind the first verdict) are both current when applied; written side
/// by side, the older could land last. Every store must show the newer
/// report, whichever write lands last: `transactions`, `alerts`, `scores`
/// and the search document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Cassandra and OpenSearch: make test-services"]
async fn a_correction_read_with_its_first_report_wins_in_every_store() {
    const N: usize = 300;
    let names = Names::new("corrections");
    stack::create_topic(&names.topic, 2).await;
    let labels = format!("{}.labels", names.topic);
    stack::create_topic(&labels, 2).await;
    // The shipped model at threshold 0: every outcome an alert, so that
    // `alerts` has a row to label too.
    let model = tempfile::tempdir().unwrap();
    let shipped = fraudflight::score::registry::model_dir_or_newest(None).unwrap();
    for f in ["model.onnx", "parity.jsonl"] {
        std::fs::copy(shipped.join(f), model.path().join(f)).unwrap();
    }
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped.join("model.json")).unwrap()).unwrap();
    meta["threshold"] = 0.0.into();
    std::fs::write(model.path().join("model.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    let mut env = names.env();
    env.push(("FRAUDFLIGHT_MODEL".into(), model.path().display().to_string()));
    let serve = Serve::start(&env);
    let session = stack::cassandra().await;
    let day = 20_200;
    let records: Vec<Transaction> = stack::simulated(43, N)
        .into_iter()
        .enumerate()
        .map(|(i, t)| Transaction {
            unix_time: Some(day * DAY + i as i64),
            trans_date_trans_time: None,
            trans_num: format!("fix-{i}"),
            cc_num: format!("4555000000{i:04}"),
            is_fraud: Some(0),
            ..t
        })
        .collect();
    stack::produce(&names.topic, &records).await;
    stack::wait_for_rows(&session, &names, N, Duration::from_secs(120), "the transactions").await;
    let search = stack::opensearch();
    stack::wait_for_documents(&search, &names, N, Duration::from_secs(120), "the transactions").await;

    // Each transaction's first report, then its correction a second later
    // (half turn a fraud genuine, half the other way), produced together.
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", support::kafka_brokers()).create().unwrap();
    let reported = (day + 1) * DAY;
    let newest = |i: usize| i.is_multiple_of(2);
    let mut sends = Vec::new();
    for (i, t) in records.iter().enumerate() {
        for (at, fraud) in [(reported, !newest(i)), (reported + 1, newest(i))] {
            let value = format!(
                r#"{{"trans_num":"{}","cc_num":"{}","is_fraud":{},"reported_at":{at}}}"#,
                t.trans_num,
                t.cc_num,
                i32::from(fraud)
            );
            sends.push((t.cc_num.clone(), value));
        }
    }
    for (key, value) in &sends {
        producer.send_result(FutureRecord::to(&labels).key(key).payload(value)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let keyspace = names.keyspace.clone();
    stack::wait_until(Duration::from_secs(60), "every label in Cassandra", || {
        let (session, keyspace) = (&session, &keyspace);
        async move { stack::cassandra_count(session, keyspace, "label_reports").await == 2 * N }
    })
    .await;
    // Settled: what shows now stays (a few seconds for the last writes).
    tokio::time::sleep(Duration::from_secs(5)).await;

    let want = |trans_num: &str| -> i64 {
        let i: usize = trans_num.trim_start_matches("fix-").parse().unwrap();
        i64::from(newest(i))
    };
    let outcomes: Vec<(String, Option<i64>, Option<i64>)> =
        stack::select(&session, format!("SELECT trans_num, is_fraud, label_reported_at FROM {keyspace}.transactions"))
            .await;
    let alerts: Vec<(String, Option<i64>, Option<i64>)> =
        stack::select(&session, format!("SELECT trans_num, is_fraud, label_reported_at FROM {keyspace}.alerts")).await;
    let scores: Vec<(String, Option<bool>, Option<i64>)> =
        stack::select(&session, format!("SELECT trans_num, label, label_reported_at FROM {keyspace}.quality_rows"))
            .await;
    assert_eq!((outcomes.len(), alerts.len()), (N, N), "every outcome an alert");
    let wrong = |rows: Vec<(String, Option<i64>, Option<i64>)>| -> Vec<String> {
        rows.into_iter()
            .filter(|(n, flag, at)| (*flag, *at) != (Some(want(n)), Some(reported + 1)))
            .map(|(n, flag, at)| format!("{n}: {flag:?} at {at:?}"))
            .collect()
    };
    let (wrong_outcomes, wrong_alerts) = (wrong(outcomes), wrong(alerts));
    let wrong_scores: Vec<String> = scores
        .into_iter()
        .map(|(n, l, at)| (n, l.map(i64::from), at))
        .filter(|(n, flag, at)| (*flag, *at) != (Some(want(n)), Some(reported + 1)))
        .map(|(n, flag, at)| format!("{n}: {flag:?} at {at:?}"))
        .collect();
    assert!(wrong_outcomes.is_empty(), "transactions show an older report: {wrong_outcomes:?}");
    assert!(wrong_alerts.is_empty(), "alerts show an older report: {wrong_alerts:?}");
    assert!(wrong_scores.is_empty(), "scores show an older report: {wrong_scores:?}");

    // A search sees an update once its index refreshed (every 5 s): the
    // documents are read again until they settle or 30 s have passed.
    let index = format!("{}-*", names.index_prefix);
    let wrong_docs = || async {
        let _ = search.indices().refresh(opensearch::indices::IndicesRefreshParts::Index(&[&index])).send().await;
        let hits = stack::search(
            &search,
            &index,
            serde_json::json!({"size": N, "_source": ["trans_num", "is_fraud", "label_reported_at"]}),
        )
        .await;
        hits["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| &h["_source"])
            .filter(|s| {
                let n = s["trans_num"].as_str().unwrap();
                (s["is_fraud"].as_i64(), s["label_reported_at"].as_i64()) != (Some(want(n)), Some(reported + 1))
            })
            .map(|s| s.to_string())
            .collect::<Vec<String>>()
    };
    let mut wrong = wrong_docs().await;
    for _ in 0..30 {
        if wrong.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        wrong = wrong_docs().await;
    }
    assert!(wrong.is_empty(), "search documents show an older report: {wrong:?}");
    assert!(serve.terminate().success());
}
