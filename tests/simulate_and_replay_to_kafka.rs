//! `fraudflight simulate --brokers` and `fraudflight replay` against the real
//! Kafka from `scripts/services.sh`: every record arrives once, keyed by its
//! card number, as the JSON the pipeline decodes; `simulate --labels` sends
//! one label per fraud to `<topic>.labels`. Run by `make test-services`.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use fraudflight::history::LabelRecord;
use fraudflight::record::kaggle_csv::KaggleCsv;
use fraudflight::record::{decode_json, Transaction};
use fraudflight::simulate::{FraudModel, SimConfig, Simulator};
use rdkafka::Message;

async fn topic(partitions: i32) -> String {
    let name = support::unique("fraudflight_test");
    support::stack::create_topic(&name, partitions).await;
    name
}

/// Consumes `n` records; returns trans_num -> (key, record).
async fn consume(topic: &str, n: usize) -> HashMap<String, (String, Transaction)> {
    let consumer = support::stack::reader(topic);
    let mut seen = HashMap::new();
    let mut total = 0;
    while total < n {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {total} of {n} records arrived"))
            .unwrap();
        let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
        let record = decode_json(msg.payload().unwrap()).expect("value is a transaction");
        seen.insert(record.trans_num.clone(), (key, record));
        total += 1;
    }
    seen
}

fn fraudflight(args: &[&str]) -> std::process::Output {
    Command::new(support::fraudflight_bin()).args(args).output().unwrap()
}

#[tokio::test]
#[ignore = "needs Kafka: scripts/services.sh up kafka (make test-services runs it)"]
async fn simulate_writes_every_record_once_keyed_by_card() {
    let topic = topic(4).await;
    let brokers = support::kafka_brokers();
    let out = fraudflight(&["simulate", "--brokers", &brokers, "--topic", &topic, "--count", "5000", "--seed", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = consume(&topic, 5000).await;
    assert_eq!(seen.len(), 5000, "duplicates or losses");
    let expected: Vec<_> = Simulator::new(SimConfig { seed: 3, ..SimConfig::default() }).take(5000).collect();
    for t in &expected {
        let (key, got) = seen.get(&t.trans_num).expect("every simulated record arrives");
        assert_eq!(key, &t.cc_num);
        assert_eq!(got, t);
    }
}

#[tokio::test]
#[ignore = "needs Kafka: scripts/services.sh up kafka (make test-services runs it)"]
async fn simulate_labels_reports_every_fraud_once_after_it() {
    let topic = topic(2).await;
    let brokers = support::kafka_brokers();
    let args = ["simulate", "--brokers", &brokers, "--topic", &topic, "--count", "20000", "--seed", "9"];
    let out = fraudflight(&[&args[..], &["--fraud", "handbook", "--customers", "300", "--labels"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = SimConfig { seed: 9, customers: 300, fraud: FraudModel::Handbook, ..SimConfig::default() };
    let frauds: HashMap<String, Transaction> = Simulator::new(config)
        .take(20_000)
        .filter(|t| t.is_fraud == Some(1))
        .map(|t| (t.trans_num.clone(), t))
        .collect();
    assert!(frauds.len() > 50, "{} frauds", frauds.len());
    let consumer = support::stack::reader(&format!("{topic}.labels"));
    let mut seen = HashMap::new();
    while seen.len() < frauds.len() {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} labels arrived", seen.len(), frauds.len()))
            .unwrap();
        let label: LabelRecord = serde_json::from_slice(msg.payload().unwrap()).expect("a label");
        assert_eq!(msg.key(), Some(label.cc_num.as_bytes()), "keyed by card");
        let t = frauds.get(&label.trans_num).expect("a label of a simulated fraud");
        assert!(label.is_fraud && label.cc_num == t.cc_num);
        assert!(label.reported_at.unwrap() > t.unix_time.unwrap(), "reported after the purchase");
        assert!(seen.insert(label.trans_num.clone(), label).is_none(), "one label per fraud");
    }
}

#[tokio::test]
#[ignore = "needs Kafka: scripts/services.sh up kafka (make test-services runs it)"]
async fn replay_streams_a_kaggle_csv_and_names_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("replay.csv");
    let out = fraudflight(&["simulate", "--count", "2000", "--seed", "4", "--csv", csv.to_str().unwrap()]);
    assert!(out.status.success());
    // Damage one row: its amount is no longer a number.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let bad_fields: Vec<String> = lines[10].split(',').map(String::from).collect();
    let amt_index = 5;
    lines[10] = bad_fields
        .iter()
        .enumerate()
        .map(|(i, f)| if i == amt_index { "lots".to_string() } else { f.clone() })
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();

    let topic = topic(2).await;
    let brokers = support::kafka_brokers();
    let out = fraudflight(&["replay", csv.to_str().unwrap(), "--brokers", &brokers, "--topic", &topic]);
    assert!(!out.status.success(), "a bad row makes replay report failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 row(s)") && err.contains("line 11"), "{err}");

    let seen = consume(&topic, 1999).await;
    let good: Vec<Transaction> = KaggleCsv::open(&csv).unwrap().filter_map(Result::ok).collect();
    assert_eq!(good.len(), 1999);
    for t in &good {
        assert_eq!(&seen.get(&t.trans_num).expect("replayed").1, t);
    }
}
