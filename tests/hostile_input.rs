//! Hostile input at the head of every partition, against real Kafka and
//! Cassandra: transactions and labels that no store can ever take (text
//! over the limits, times far ahead of the clock, wrong types, not JSON)
//! come first in each of the four partitions of both topics, and the good
//! ones after them. Each bad one must reach its DLQ with the reason, and
//! every good transaction must be stored with its label: one value that can
//! never be written must not stop the loop (it used to be retried for
//! ever, never committed, on every instance).
//!
//! A flood of 100,000 hostile labels (oversized, wrong types, far ahead,
//! names over the limit, not JSON, unknown cards, redeliveries) before the
//! good ones: the good ones are applied, every bad one and only those are
//! in the DLQ, every valid one is counted once.
//!
//! An analyst's label that nothing would apply (history off) is refused
//! with a 4xx, not answered 200 and lost.
//!
//! Run by `make test-services` (needs Kafka and Cassandra up).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use fraudflight::record::Transaction;
use support::stack::{self, Names};

const PARTITIONS: i32 = 4;
const GOOD: usize = 600;
const DAY: i64 = 86_400;

async fn send(producer: &FutureProducer, topic: &str, partition: i32, value: &str) {
    let record = FutureRecord::to(topic).partition(partition).key("hostile").payload(value);
    producer.send(record, Duration::from_secs(10)).await.unwrap();
}

/// The transactions no store can take, as JSON values, and the words their
/// dead letters' reasons must contain.
fn hostile_transactions(sample: &Transaction, now: i64) -> Vec<(String, &'static str)> {
    let json = |t: Transaction| serde_json::to_string(&t).unwrap();
    vec![
        // Under kafka.max_record_bytes (64 KiB), over the text limit.
        (json(Transaction { trans_num: "9".repeat(1_000), ..sample.clone() }), "`trans_num` is 1000 bytes"),
        (json(Transaction { merchant: Some("m".repeat(1_000)), ..sample.clone() }), "`merchant` is 1000 bytes"),
        (
            json(Transaction { trans_num: "future".into(), unix_time: Some(4_000_000_000_000), ..sample.clone() }),
            "later than",
        ),
        (
            json(Transaction { trans_num: "next-week".into(), unix_time: Some(now + 7 * DAY), ..sample.clone() }),
            "later than",
        ),
        ("not json".into(), "JSON"),
    ]
}

/// The labels no store can take, and the words their reasons must contain.
fn hostile_labels(sample: &Transaction) -> Vec<(String, &'static str)> {
    let (t, c) = (&sample.trans_num, &sample.cc_num);
    let big = "9".repeat(70_000);
    vec![
        (format!(r#"{{"trans_num":"{t}","cc_num":"{big}","is_fraud":1}}"#), "not a card number"),
        (format!(r#"{{"trans_num":"{big}","cc_num":"{c}","is_fraud":1}}"#), "`trans_num` is 70000 bytes"),
        (format!(r#"{{"trans_num":"{t}","cc_num":"{c}","is_fraud":1,"reported_at":4000000000000}}"#), "`reported_at`"),
        (format!(r#"{{"trans_num":"{t}","cc_num":"{c}","is_fraud":"maybe"}}"#), "is_fraud"),
        (
            format!(r#"{{"trans_num":"{t}","cc_num":"{c}","is_fraud":1,"decided_by":"{}"}}"#, "a".repeat(100)),
            "`decided_by`",
        ),
        ("{not json".into(), "JSON"),
    ]
}

/// The `error` headers of `n` dead letters of `topic`.
async fn dead_letters(topic: &str, n: usize) -> Vec<String> {
    let reader = stack::reader(topic);
    let mut reasons = Vec::new();
    while reasons.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(120), reader.recv())
            .await
            .unwrap_or_else(|_| panic!("{topic}: {} of {n} dead letters after 120 s: {reasons:?}", reasons.len()))
            .unwrap();
        let error = msg.headers().and_then(|h| h.iter().find(|h| h.key == "error")).and_then(|h| h.value);
        reasons.push(String::from_utf8_lossy(error.unwrap_or_default()).into_owned());
    }
    reasons
}

fn assert_reasons(what: &str, reasons: &[String], expected: &[(String, &'static str)]) {
    for (_, words) in expected {
        let found = reasons.iter().filter(|r| r.contains(words)).count();
        assert!(
            found >= PARTITIONS as usize,
            "{what}: {found} dead letters say {words:?}, want one per partition: {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn hostile_values_at_the_head_of_every_partition_go_to_the_dlq_and_the_good_ones_are_labelled() {
    let names = Names::new("hostile");
    let labels_topic = format!("{}.labels", names.topic);
    stack::create_topic(&names.topic, PARTITIONS).await;
    stack::create_topic(&labels_topic, PARTITIONS).await;
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", support::kafka_brokers()).create().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let good: Vec<Transaction> =
        stack::simulated(27, GOOD).into_iter().map(|t| Transaction { is_fraud: None, ..t }).collect();
    let (bad_tx, bad_labels) = (hostile_transactions(&good[0], now), hostile_labels(&good[0]));
    for p in 0..PARTITIONS {
        for (value, _) in &bad_tx {
            send(&producer, &names.topic, p, value).await;
        }
        for (value, _) in &bad_labels {
            send(&producer, &labels_topic, p, value).await;
        }
    }
    let serve = stack::instance(&names, "a");
    stack::produce(&names.topic, &good).await;
    // Each label reported a day after its transaction; every one twice (a
    // redelivery), and one for a card the service never saw.
    let truth: HashMap<&str, bool> = good.iter().enumerate().map(|(i, t)| (t.trans_num.as_str(), i % 7 == 0)).collect();
    for round in 0..2 {
        for t in &good {
            let value = serde_json::json!({
                "trans_num": t.trans_num, "cc_num": t.cc_num, "is_fraud": i32::from(truth[t.trans_num.as_str()]),
                "reported_at": t.unix_time.unwrap() + DAY + round,
            });
            let value = value.to_string();
            let partition = t.cc_num.bytes().map(i32::from).sum::<i32>().rem_euclid(PARTITIONS);
            let record = FutureRecord::to(&labels_topic).key(&t.cc_num).payload(&value).partition(partition);
            producer.send(record, Duration::from_secs(10)).await.unwrap();
        }
    }
    send(&producer, &labels_topic, 0, r#"{"trans_num":"nobody","cc_num":"4000000000000002","is_fraud":0}"#).await;

    let session = stack::cassandra().await;
    stack::wait_for_rows(&session, &names, GOOD, Duration::from_secs(180), "the good transactions").await;
    let keyspace = names.keyspace.clone();
    let query = format!("SELECT trans_num, is_fraud FROM {keyspace}.transactions");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rows: Vec<(String, Option<i64>)> = stack::select(&session, query.clone()).await;
        let wrong: Vec<String> = rows
            .into_iter()
            .filter(|(n, flag)| *flag != truth.get(n.as_str()).map(|f| i64::from(*f)))
            .map(|(n, flag)| format!("{n}: {flag:?}"))
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} outcomes without their label: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(stack::cassandra_count(&session, &keyspace, "transactions").await, GOOD);

    let tx_reasons = dead_letters(&format!("{}.dlq", names.topic), bad_tx.len() * PARTITIONS as usize).await;
    assert_reasons("transactions", &tx_reasons, &bad_tx);
    let label_reasons = dead_letters(&format!("{labels_topic}.dlq"), bad_labels.len() * PARTITIONS as usize).await;
    assert_reasons("labels", &label_reasons, &bad_labels);

    let metrics = serve.metrics();
    // Every good label twice and the stranger's; none of the bad ones.
    assert_eq!(metrics.value("fraudflight_labels_total", &[]), Some((2 * GOOD + 1) as f64));
    assert!(serve.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: make test-services"]
async fn an_analysts_label_nothing_would_apply_is_refused_not_accepted() {
    // Kafka on, history off: nothing here reads the labels topic.
    let names = Names::new("nowhere");
    stack::create_topic(&names.topic, 1).await;
    let mut env = names.env();
    // Later entries win over names.env()'s.
    env.extend(
        [
            ("FRAUDFLIGHT_HISTORY_ENABLED", "false"),
            ("FRAUDFLIGHT_CASSANDRA_NODES", ""),
            ("FRAUDFLIGHT_OPENSEARCH_URL", ""),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let serve = stack::Serve::start(&env);
    let (status, answer) =
        serve.http_post("/api/labels", r#"{"trans_num": "t1", "is_fraud": true, "by": "analyst-1"}"#);
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("history"), "{answer}");
    assert!(serve.terminate().success());
}

/// How many hostile labels the flood sends.
const FLOOD: usize = 100_000;

/// The flood's hostile label number `i`, and whether it can never be
/// stored (its DLQ reason's words), cycling through the kinds a careless
/// or hostile producer sends: oversized numbers (one in 500: 70 KB each),
/// wrong types, dates far ahead, names over the limit, not JSON; and valid
/// ones that must not reach the DLQ: cards the service never saw, and
/// redeliveries of good labels.
fn flood_label(i: usize, good: &[Transaction]) -> (String, Option<&'static str>) {
    let t = &good[i % good.len()];
    let (n, c) = (&t.trans_num, &t.cc_num);
    if i.is_multiple_of(500) {
        let big = "9".repeat(70_000);
        return (format!(r#"{{"trans_num":"{n}","cc_num":"{big}","is_fraud":1}}"#), Some("not a card number"));
    }
    match i % 8 {
        0 => (format!(r#"{{"trans_num":"{}","cc_num":"{c}","is_fraud":1}}"#, "7".repeat(300)), Some("`trans_num`")),
        1 => (format!(r#"{{"trans_num":"{n}","cc_num":"{c}","is_fraud":"maybe"}}"#), Some("is_fraud")),
        2 => (
            format!(r#"{{"trans_num":"{n}","cc_num":"{c}","is_fraud":1,"reported_at":9{i:011}}}"#),
            Some("`reported_at`"),
        ),
        3 => (
            format!(r#"{{"trans_num":"{n}","cc_num":"{c}","is_fraud":0,"decided_by":"{}"}}"#, "b".repeat(65)),
            Some("`decided_by`"),
        ),
        4 => (format!("{{\"trans_num\":\"{n}\",\"cc_num\":{i}"), Some("JSON")),
        5 => (format!(r#"{{"trans_num":"{n}","is_fraud":1}}"#), Some("cc_num")),
        // Valid: an unknown card's transaction (pending), a redelivery.
        6 => (format!(r#"{{"trans_num":"stranger-{i}","cc_num":"4{i:015}","is_fraud":1}}"#), None),
        _ => (format!(r#"{{"trans_num":"{n}","cc_num":"{c}","is_fraud":{},"reported_at":1}}"#, i % 2), None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn a_flood_of_hostile_labels_leaves_the_good_ones_applied_and_every_bad_one_in_the_dlq() {
    let names = Names::new("flood");
    let labels_topic = format!("{}.labels", names.topic);
    stack::create_topic(&names.topic, PARTITIONS).await;
    stack::create_topic(&labels_topic, PARTITIONS).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .set("message.max.bytes", "1000000")
        .create()
        .unwrap();
    let good: Vec<Transaction> =
        stack::simulated(31, GOOD).into_iter().map(|t| Transaction { is_fraud: None, ..t }).collect();
    // Two instances: each reads every label, one dead-letters each partition.
    let serves = [stack::instance(&names, "a"), stack::instance(&names, "b")];
    labels_dlq_shared(&names.group, serves.len()).await;
    stack::produce(&names.topic, &good).await;
    // The flood first, spread over the partitions, then the good labels,
    // reported a day after their transactions (newer than any redelivery
    // in the flood, which says 1970).
    let mut expected: HashMap<&'static str, usize> = HashMap::new();
    let flood: Vec<(String, Option<&'static str>)> = (0..FLOOD).map(|i| flood_label(i, &good)).collect();
    for (_, reason) in &flood {
        if let Some(words) = reason {
            *expected.entry(words).or_default() += 1;
        }
    }
    for chunk in flood.chunks(10_000) {
        let sends = chunk.iter().enumerate().map(|(i, (value, _))| {
            let record =
                FutureRecord::to(&labels_topic).partition(i as i32 % PARTITIONS).key("flood").payload(value.as_str());
            producer.send(record, Duration::from_secs(60))
        });
        for sent in futures::future::join_all(sends).await {
            sent.expect("flood label sent");
        }
    }
    let truth: HashMap<&str, bool> = good.iter().enumerate().map(|(i, t)| (t.trans_num.as_str(), i % 5 == 0)).collect();
    for t in &good {
        let value = serde_json::json!({
            "trans_num": t.trans_num, "cc_num": t.cc_num, "is_fraud": i32::from(truth[t.trans_num.as_str()]),
            "reported_at": t.unix_time.unwrap() + DAY,
        })
        .to_string();
        let record = FutureRecord::to(&labels_topic).key(&t.cc_num).payload(&value);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }

    let session = stack::cassandra().await;
    stack::wait_for_rows(&session, &names, GOOD, Duration::from_secs(180), "the good transactions").await;
    let query = format!("SELECT trans_num, is_fraud FROM {}.transactions", names.keyspace);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let rows: Vec<(String, Option<i64>)> = stack::select(&session, query.clone()).await;
        let wrong = rows.iter().filter(|(n, flag)| *flag != truth.get(n.as_str()).map(|f| i64::from(*f))).count();
        if wrong == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{wrong} outcomes without their good label after the flood");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let bad: usize = expected.values().sum();
    let reasons = dead_letters(&format!("{labels_topic}.dlq"), bad).await;
    for (words, n) in &expected {
        let found = reasons.iter().filter(|r| r.contains(words)).count();
        assert!(found >= *n, "{found} dead letters say {words:?}, {n} sent");
    }
    // Exactly the bad ones, once (not once per instance): the DLQ holds
    // nothing else.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(topic_size(&format!("{labels_topic}.dlq")), bad, "each bad label a dead letter once, nothing else");
    for serve in serves {
        assert_eq!(
            serve.metrics().value("fraudflight_labels_total", &[]),
            Some((FLOOD - bad + GOOD) as f64),
            "every valid label applied once by each instance"
        );
        assert!(serve.terminate().success());
    }
}

/// Waits until `n` members share the labels' dead-letter group of the
/// transactions' `group`, each with its partitions (a rebalance while the
/// flood is dead-lettered may send some twice: at least once).
async fn labels_dlq_shared(group: &str, n: usize) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", support::kafka_brokers()).create().unwrap();
    let group = format!("{group}.labels.dlq");
    stack::wait_until(Duration::from_secs(60), &format!("{n} members in {group}"), || {
        let list = consumer.fetch_group_list(Some(&group), Duration::from_secs(5)).ok();
        let g = list.as_ref().and_then(|l| l.groups().first().map(|g| (g.state().to_string(), g.members().len())));
        std::future::ready(g == Some(("Stable".to_string(), n)))
    })
    .await;
}

/// Records in a topic, over all its partitions.
fn topic_size(topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", support::kafka_brokers()).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            (high - low) as usize
        })
        .sum()
}
