//! Smoke test of the real Kafka from `scripts/services.sh`: create a topic,
//! produce 1,000 keyed messages with rdkafka, consume all 1,000 back.
//! Run by `make test-services` (ignored by a plain `cargo test`).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

#[tokio::test]
#[ignore = "needs Kafka: scripts/services.sh up kafka (make test-services runs it)"]
async fn produce_and_consume_a_thousand_messages() {
    let brokers = support::kafka_brokers();
    let topic = support::unique("smoke");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("admin client");
    let created = admin
        .create_topics(&[NewTopic::new(&topic, 4, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create_topics answered");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for i in 0..1_000 {
        let key = format!("key-{i}");
        let value = format!("{{\"n\":{i}}}");
        producer
            .send(FutureRecord::to(&topic).key(&key).payload(&value), Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("message {i} not acknowledged: {e}"));
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", support::unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = HashSet::new();
    while seen.len() < 1_000 {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 1000 messages consumed within 30 s", seen.len()))
            .expect("consume");
        let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
        let n: usize = key.trim_start_matches("key-").parse().unwrap();
        assert_eq!(msg.payload_view::<str>().unwrap().unwrap(), format!("{{\"n\":{n}}}"));
        seen.insert(n);
    }
    assert_eq!(seen, (0..1_000).collect());
}
