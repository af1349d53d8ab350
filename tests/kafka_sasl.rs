//! `serve` consuming through the local Kafka's authenticated listeners (user
//! `fraudflight`, set up by scripts/services.sh): SASL_PLAINTEXT + SCRAM on
//! 127.0.0.1:9094 and SASL_SSL + PLAIN on 127.0.0.1:9095 (the test CA):
//! every record scored and written back through the same authenticated
//! connection; with a wrong password nothing is consumed and the failure is
//! logged; the password never reaches the log. Run by `make test-services`.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::Message;
use support::stack::{self, Names, Serve};

const SASL_BROKERS: &str = "127.0.0.1:9094";
const USER: &str = "fraudflight";
const PASSWORD: &str = "fraudflight-scram-test";
const N: usize = 1_000;

fn sasl_env(names: &Names, password: &str) -> Vec<(String, String)> {
    let properties = format!(
        "security.protocol=SASL_PLAINTEXT;sasl.mechanism=SCRAM-SHA-512;sasl.username={USER};sasl.password={password}"
    );
    env_with(names, SASL_BROKERS, properties)
}

fn env_with(names: &Names, brokers: &str, properties: String) -> Vec<(String, String)> {
    let mut env = stack::standalone();
    env.extend([
        ("FRAUDFLIGHT_KAFKA_BROKERS".to_string(), brokers.to_string()),
        ("FRAUDFLIGHT_KAFKA_TOPIC".into(), names.topic.clone()),
        ("FRAUDFLIGHT_KAFKA_GROUP".into(), names.group.clone()),
        ("FRAUDFLIGHT_KAFKA_OUTCOME_TOPIC".into(), "true".into()),
        ("FRAUDFLIGHT_KAFKA_PROPERTIES".into(), properties),
    ]);
    env
}

#[tokio::test]
#[ignore = "needs Kafka with its SASL listener (make test-services starts it)"]
async fn serve_consumes_and_produces_through_sasl_scram() {
    consumes_and_produces_through("sasl", |names| sasl_env(names, PASSWORD)).await;
}

#[tokio::test]
#[ignore = "needs Kafka with its SASL_SSL listener (make test-services starts it)"]
async fn serve_consumes_and_produces_through_sasl_plain_over_tls() {
    let properties = format!(
        "security.protocol=SASL_SSL;sasl.mechanism=PLAIN;sasl.username={USER};sasl.password={PASSWORD};\
         ssl.ca.location={}",
        support::test_ca()
    );
    consumes_and_produces_through("saslssl", |names| env_with(names, "127.0.0.1:9095", properties.clone())).await;
}

async fn consumes_and_produces_through(test: &str, env: impl Fn(&Names) -> Vec<(String, String)>) {
    let names = Names::new(test);
    stack::create_topic(&names.topic, 2).await;
    let records = stack::simulated(31, N);
    stack::produce(&names.topic, &records).await;
    let serve = Serve::start(&env(&names));

    let reader = stack::reader(&format!("{}.scored", names.topic));
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < N {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(left, reader.recv()).await.expect("all outcomes within 120 s").unwrap();
        let outcome: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        seen.insert(outcome["trans_num"].as_str().unwrap().to_string());
    }
    let sent: HashSet<String> = records.iter().map(|r| r.trans_num.clone()).collect();
    assert_eq!(seen, sent);
    assert_eq!(serve.metrics().value("fraudflight_records_stored_total", &[]), Some(N as f64));

    let log = serve.log_text();
    assert!(serve.terminate().success());
    assert!(!log.contains(PASSWORD), "the SASL password is in the log:\n{log}");
}

#[tokio::test]
#[ignore = "needs Kafka with its SASL listener (make test-services starts it)"]
async fn a_wrong_password_consumes_nothing_says_why_and_is_not_logged() {
    const WRONG: &str = "not-the-password-93b1";
    let names = Names::new("saslbad");
    stack::create_topic(&names.topic, 1).await;
    stack::produce(&names.topic, &stack::simulated(32, 100)).await;
    let serve = Serve::start(&sasl_env(&names, WRONG));
    stack::wait_until(Duration::from_secs(60), "an authentication error in the log", || async {
        serve.log_text().to_lowercase().contains("authentication")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(serve.metrics().value("fraudflight_records_in_total", &[]), Some(0.0));
    let log = serve.log_text();
    assert!(serve.terminate().success());
    assert!(!log.contains(WRONG), "the SASL password is in the log:\n{log}");
}
