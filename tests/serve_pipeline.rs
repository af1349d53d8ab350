//! `fraudflight serve` end to end against the real Kafka, Cassandra and
//! OpenSearch from `scripts/services.sh`: every record stored exactly once in
//! both stores with the score DoExchange gives, bad input in the DLQ, Flight
//! queries answered from the stores, DoPut through the sinks, two processes
//! sharing a consumer group. Run by `make test-services` (one at a time).

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

use support::stack::{self, Names, Serve};

const N: usize = 100_000;

async fn do_get(serve: &Serve, ticket: Vec<u8>) -> Vec<RecordBatch> {
    let mut client = serve.client().await;
    let stream = client.do_get(Ticket::new(ticket)).await.expect("do_get").into_inner();
    FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into)).try_collect().await.expect("batches")
}

fn ids(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("trans_num").unwrap().as_string::<i32>();
            (0..b.num_rows()).map(|i| c.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs Kafka, Cassandra, OpenSearch (make test-services starts them)"]
async fn every_record_is_stored_once_in_both_stores_with_the_exchange_score() {
    let names = Names::new("e2e");
    stack::create_topic(&names.topic, 4).await;
    let records = stack::simulated(7, N);
    stack::produce(&names.topic, &records).await;
    let serve = Serve::start(&names.env());
    let (os, cs) = (stack::opensearch(), stack::cassandra().await);

    stack::wait_for_documents(&os, &names, N, Duration::from_secs(600), "100,000 documents in OpenSearch").await;
    stack::wait_for_rows(&cs, &names, N, Duration::from_secs(120), "100,000 rows in Cassandra").await;

    let rows = stack::cassandra_rows(&cs, &names.keyspace, "transactions").await;
    assert_eq!(rows.len(), N, "one row per record, none twice");
    let stored: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let sent: HashSet<&str> = records.iter().map(|r| r.trans_num.as_str()).collect();
    assert_eq!(stored, sent);

    let alerts = stack::cassandra_rows(&cs, &names.keyspace, "alerts").await;
    let predicted: HashSet<&str> = rows.iter().filter(|r| r.2).map(|r| r.0.as_str()).collect();
    let alert_ids: HashSet<&str> = alerts.iter().map(|r| r.0.as_str()).collect();
    assert!(!predicted.is_empty());
    assert_eq!(alerts.len(), alert_ids.len());
    assert_eq!(alert_ids, predicted, "alerts holds exactly the predicted frauds");

    let exchanged = stack::exchange_scores(&serve, &records).await;
    assert_eq!(exchanged.len(), N);
    for (id, score, _) in &rows {
        assert_eq!(exchanged[id], *score, "Cassandra score of {id} differs from DoExchange");
    }
    let indexed = stack::opensearch_scores(&os, &names.index_prefix).await;
    assert_eq!(indexed.len(), N);
    for (id, score) in &indexed {
        assert_eq!(exchanged[id], *score, "OpenSearch score of {id} differs from DoExchange");
    }

    // Flight queries answer from the stores.
    let alerts_answer = do_get(&serve, b"alerts".to_vec()).await;
    let answered = ids(&alerts_answer);
    assert_eq!(answered.len(), predicted.len().min(fraudflight::store::DEFAULT_LIMIT));
    assert!(answered.iter().all(|id| predicted.contains(id.as_str())));
    let times: Vec<i64> = alerts_answer
        .iter()
        .flat_map(|b| b.column_by_name("unix_time").unwrap().as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "alerts come newest first");

    let card = records[0].cc_num.clone();
    let card_txns: HashSet<&str> = records.iter().filter(|r| r.cc_num == card).map(|r| r.trans_num.as_str()).collect();
    let query = fraudflight::proto::Query {
        target: Some(fraudflight::proto::query::Target::Card(card.clone())),
        limit: 10_000,
    };
    let mut client = serve.client().await;
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(query.encode_to_vec()))
        .await
        .expect("card flight info")
        .into_inner();
    let ticket = info.endpoint[0].ticket.as_ref().unwrap().ticket.to_vec();
    let history = ids(&do_get(&serve, ticket).await);
    assert_eq!(history.iter().map(String::as_str).collect::<HashSet<_>>(), card_txns);

    let recent = do_get(&serve, b"recent".to_vec()).await;
    assert_eq!(ids(&recent).len(), fraudflight::store::DEFAULT_LIMIT);

    // /metrics counts every record once, both stores up, and the consumer
    // lag of every partition drops to 0 once offsets are committed.
    stack::wait_until(Duration::from_secs(30), "consumer lag 0 on all 4 partitions", || async {
        let m = serve.metrics();
        ["0", "1", "2", "3"].iter().all(|p| m.value("fraudflight_consumer_lag", &[("partition", p)]) == Some(0.0))
    })
    .await;
    let m = serve.metrics();
    for counter in
        ["fraudflight_records_in_total", "fraudflight_records_scored_total", "fraudflight_records_stored_total"]
    {
        assert_eq!(m.value(counter, &[]), Some(N as f64), "{counter}");
    }
    assert_eq!(m.value("fraudflight_alerts_total", &[]), Some(predicted.len() as f64));
    assert_eq!(m.value("fraudflight_dead_letters_total", &[]), Some(0.0));
    for sink in ["cassandra", "opensearch"] {
        assert_eq!(m.value("fraudflight_sink_up", &[("sink", sink)]), Some(1.0), "{sink} up");
    }
    let (_, summary) = serve.http_get("/api/summary");
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["consumer_lag"].as_array().map(Vec::len), Some(4), "{summary}");
    assert_eq!(summary["sinks"]["cassandra"], "ok");

    // DoPut goes through the same scorer and sinks.
    let extra = stack::simulated(8, 1_000);
    let put = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["transactions".into()])))
        .build(futures::stream::iter([Ok(fraudflight::record::to_batch(&extra))]))
        .map(|d| d.unwrap());
    let results: Vec<_> = client.do_put(put).await.unwrap().into_inner().try_collect().await.unwrap();
    let report: serde_json::Value = serde_json::from_slice(&results[0].app_metadata).unwrap();
    assert_eq!(report["accepted"], 1_000);
    assert_eq!(stack::cassandra_count(&cs, &names.keyspace, "transactions").await, N + 1_000);
    assert_eq!(stack::opensearch_count(&os, &names.index_prefix).await, N + 1_000);

    assert!(serve.terminate().success());
}

/// A record value that is not a valid transaction, and why.
fn garbage() -> Vec<(&'static str, Option<Vec<u8>>)> {
    let valid = serde_json::to_value(&stack::simulated(99, 1)[0]).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = valid.clone();
        f(&mut v);
        Some(serde_json::to_vec(&v).unwrap())
    };
    vec![
        ("not JSON", Some(b"this is not json {".to_vec())),
        ("missing field", with(&|v| drop(v.as_object_mut().unwrap().remove("amt")))),
        // JSON has no NaN; a producer writing one sends this text.
        (
            "NaN amount",
            Some(
                String::from_utf8(with(&|v| v["amt"] = 1.0.into()).unwrap())
                    .unwrap()
                    .replace("\"amt\":1.0", "\"amt\":NaN")
                    .into_bytes(),
            ),
        ),
        ("latitude 123", with(&|v| v["lat"] = 123.0.into())),
        ("negative amount", with(&|v| v["amt"] = (-5.0).into())),
        ("1 MB value", Some(vec![b'x'; 1_000_000])),
        ("empty value", Some(Vec::new())),
        ("no value", None),
    ]
}

#[tokio::test]
#[ignore = "needs Kafka, Cassandra, OpenSearch (make test-services starts them)"]
async fn bad_records_go_to_the_dlq_with_a_reason_and_valid_ones_are_stored() {
    let names = Names::new("bad");
    stack::create_topic(&names.topic, 4).await;
    let valid = stack::simulated(11, 2_000);
    let mut env = names.env();
    env.push(("FRAUDFLIGHT_KAFKA_OUTCOME_TOPIC".into(), "true".into()));
    let serve = Serve::start(&env);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let bad = garbage();
    // Interleave: valid, bad, valid, bad, ...
    let mut expected_bad = 0;
    for (i, t) in valid.iter().enumerate() {
        let json = serde_json::to_vec(t).unwrap();
        producer
            .send(FutureRecord::to(&names.topic).key(&t.cc_num).payload(&json), Duration::from_secs(10))
            .await
            .unwrap();
        if i % 100 == 0 {
            let (what, value) = &bad[(i / 100) % bad.len()];
            let key = format!("bad-{i}-{what}");
            let mut record = FutureRecord::to(&names.topic).key(&key);
            if let Some(v) = value {
                record = record.payload(v);
            }
            producer.send(record, Duration::from_secs(10)).await.unwrap();
            expected_bad += 1;
        }
    }
    let (os, cs) = (stack::opensearch(), stack::cassandra().await);
    let n = valid.len();
    stack::wait_for_rows(&cs, &names, n, Duration::from_secs(300), "valid records stored").await;
    stack::wait_for_documents(&os, &names, n, Duration::from_secs(120), "valid records indexed").await;
    assert_eq!(stack::cassandra_count(&cs, &names.keyspace, "transactions").await, valid.len());

    // Every bad record is in the DLQ, with its original bytes and a reason.
    let consumer = stack::reader(&format!("{}.dlq", names.topic));
    let originals: HashMap<String, Option<Vec<u8>>> = (0..valid.len())
        .step_by(100)
        .map(|i| {
            let (what, value) = &bad[(i / 100) % bad.len()];
            (format!("bad-{i}-{what}"), value.clone())
        })
        .collect();
    let mut seen = HashMap::new();
    while seen.len() < expected_bad {
        let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected_bad} dead letters arrived", seen.len()))
            .unwrap();
        let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
        let headers = msg.headers().expect("dead letters carry headers");
        let error = headers
            .iter()
            .find(|h| h.key == "error")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .expect("an error header");
        let original = originals.get(&key).unwrap_or_else(|| panic!("unexpected dead letter {key}"));
        let payload = msg.payload().unwrap_or_default();
        assert!(
            payload == original.as_deref().unwrap_or_default(),
            "{key}: not the original bytes ({} bytes)",
            payload.len()
        );
        seen.insert(key, error);
    }
    for (key, error) in &seen {
        let expect = match key.rsplit('-').next().unwrap() {
            "not JSON" | "NaN amount" => "invalid transaction JSON",
            "missing field" => "missing field `amt`",
            "latitude 123" => "field `lat` is 123",
            "negative amount" => "field `amt`",
            "1 MB value" => "more than kafka.max_record_bytes",
            "empty value" | "no value" => "empty record value",
            other => panic!("unknown case {other}"),
        };
        assert!(error.contains(expect), "{key}: error {error:?} should mention {expect:?}");
    }

    // With outcome_topic on, every valid record's outcome is on <topic>.scored.
    let scored = stack::reader(&format!("{}.scored", names.topic));
    let mut outcomes = HashSet::new();
    while outcomes.len() < valid.len() {
        let msg = tokio::time::timeout(Duration::from_secs(60), scored.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} outcomes arrived", outcomes.len(), valid.len()))
            .unwrap();
        let outcome: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        assert!(outcome["fraud_score"].is_f64() && outcome["is_fraud_predicted"].is_boolean(), "{outcome}");
        assert_eq!(msg.key().unwrap(), outcome["cc_num"].as_str().unwrap().as_bytes(), "keyed by card");
        outcomes.insert(outcome["trans_num"].as_str().unwrap().to_string());
    }
    assert_eq!(outcomes, valid.iter().map(|t| t.trans_num.clone()).collect::<HashSet<_>>());

    let mut serve = serve;
    assert!(serve.running(), "bad input must not stop the server");
    assert!(serve.terminate().success());
}

#[tokio::test]
#[ignore = "needs Kafka, Cassandra, OpenSearch (make test-services starts them)"]
async fn two_processes_in_one_group_split_the_partitions_and_store_everything() {
    let names = Names::new("pair");
    stack::create_topic(&names.topic, 4).await;
    let records = stack::simulated(13, 50_000);
    stack::produce(&names.topic, &records).await;
    // The second process joins while the first is mid-run: the rebalance
    // revokes partitions with batches in flight.
    let first = Serve::start(&names.env());
    let second = Serve::start(&names.env());
    let (os, cs) = (stack::opensearch(), stack::cassandra().await);
    let n = records.len();
    stack::wait_for_rows(&cs, &names, n, Duration::from_secs(300), "every record stored").await;
    stack::wait_for_documents(&os, &names, n, Duration::from_secs(120), "every record indexed").await;
    assert_eq!(stack::cassandra_count(&cs, &names.keyspace, "transactions").await, n);

    let assigned = |log: &str| -> Vec<String> {
        log.lines().filter(|l| l.contains("partitions assigned")).map(String::from).collect()
    };
    let (a, b) = (assigned(&first.log_text()), assigned(&second.log_text()));
    assert!(a.len() >= 2, "the first process was rebalanced when the second joined: {a:?}");
    assert!(!b.is_empty(), "the second process got partitions: {b:?}");
    assert!(first.terminate().success());
    assert!(second.terminate().success());

    // Every partition's committed offset is exactly its end: nothing left
    // uncommitted, nothing committed beyond what exists.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .set("group.id", &names.group)
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        list.add_partition(&names.topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for e in committed.elements() {
        let (_, high) = consumer.fetch_watermarks(&names.topic, e.partition(), Duration::from_secs(10)).unwrap();
        assert_eq!(e.offset(), rdkafka::Offset::Offset(high), "partition {}", e.partition());
        total += high;
    }
    assert_eq!(total as usize, n);
}

/// HMAC-SHA256(key, card) as hex, computed here independently of the server.
fn keyed_hash(key: &str, card: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(card.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
#[ignore = "needs Kafka, Cassandra, OpenSearch (make test-services starts them)"]
async fn with_a_card_hash_key_no_store_and_no_log_holds_a_card_number() {
    const KEY: &str = "test-card-hash-key-7c1d";
    let names = Names::new("cards");
    stack::create_topic(&names.topic, 2).await;
    let records = stack::simulated(21, 2_000);
    stack::produce(&names.topic, &records).await;
    let mut env = names.env();
    env.push(("FRAUDFLIGHT_PRIVACY_CARD_HASH_KEY".into(), KEY.into()));
    env.push(("FRAUDFLIGHT_KAFKA_OUTCOME_TOPIC".into(), "true".into()));
    let serve = Serve::start(&env);
    let (os, cs) = (stack::opensearch(), stack::cassandra().await);
    stack::wait_for_rows(&cs, &names, records.len(), Duration::from_secs(300), "2,000 rows in Cassandra").await;
    stack::wait_for_documents(&os, &names, records.len(), Duration::from_secs(300), "2,000 documents").await;

    let cards: HashSet<&str> = records.iter().map(|r| r.cc_num.as_str()).collect();
    let hashes: HashSet<String> = cards.iter().map(|c| keyed_hash(KEY, c)).collect();
    let pager = cs.query_iter(format!("SELECT cc_num FROM {}.transactions", names.keyspace), &[]).await.unwrap();
    let stored: Vec<(String,)> = pager.rows_stream::<(String,)>().unwrap().try_collect().await.unwrap();
    assert_eq!(stored.len(), records.len());
    assert!(stored.iter().all(|(c,)| hashes.contains(c)), "Cassandra holds something other than the keyed hashes");
    let index = format!("{}-*", names.index_prefix);
    let page = stack::search(&os, &index, serde_json::json!({ "size": 10000, "_source": ["cc_num"] })).await;
    let hits = page["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), records.len());
    assert!(hits.iter().all(|h| hashes.contains(h["_source"]["cc_num"].as_str().unwrap())));

    // The outcome topic is keyed and filled with hashes too.
    let reader = stack::reader(&format!("{}.scored", names.topic));
    let first = tokio::time::timeout(Duration::from_secs(60), reader.recv()).await.unwrap().unwrap();
    let key = String::from_utf8(first.key().unwrap().to_vec()).unwrap();
    assert!(hashes.contains(&key), "outcome key {key}");

    // A query by card number hashes it: the history comes back.
    let card = records[0].cc_num.clone();
    let expected: HashSet<&str> = records.iter().filter(|r| r.cc_num == card).map(|r| r.trans_num.as_str()).collect();
    let query =
        fraudflight::proto::Query { target: Some(fraudflight::proto::query::Target::Card(card.clone())), limit: 1000 };
    let mut client = serve.client().await;
    let info = client.get_flight_info(FlightDescriptor::new_cmd(query.encode_to_vec())).await.unwrap().into_inner();
    let history = do_get(&serve, info.endpoint[0].ticket.as_ref().unwrap().ticket.to_vec()).await;
    assert_eq!(ids(&history).iter().map(String::as_str).collect::<HashSet<_>>(), expected);

    // Nothing the process logged carries a card number.
    let log = serve.log_text();
    assert!(serve.terminate().success());
    let leaked: Vec<&&str> = cards.iter().filter(|c| log.contains(**c)).collect();
    assert!(leaked.is_empty(), "card numbers in the log: {leaked:?}");
}
