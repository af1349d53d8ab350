//! `fraudflight serve` without Kafka, Cassandra or OpenSearch (every one
//! switched off by an empty setting) is a pure Flight scoring server; and
//! `--check-config` refuses a bad configuration with the key's name. Needs
//! no external service.

mod support;

use std::process::Command;

use support::stack::{self, Serve};

#[tokio::test]
async fn with_everything_off_serve_is_a_flight_scoring_server() {
    let serve = Serve::start(&stack::standalone());
    let records = stack::simulated(3, 500);
    let scores = stack::exchange_scores(&serve, &records).await;
    assert_eq!(scores.len(), 500);
    assert!(scores.values().all(|s| (0.0..=1.0).contains(s)));
    let (status, body) = serve.http_get("/ready");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""cassandra":"off""#) && body.contains(r#""opensearch":"off""#), "{body}");
    assert!(serve.terminate().success());
}

#[test]
fn check_config_names_the_unknown_key_and_suggests_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[kafka]\nbatch_max_recrods = 5\n").unwrap();
    let out = Command::new(support::fraudflight_bin())
        .args(["serve", "--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_max_recrods") && err.contains("did you mean `batch_max_records`?"), "{err}");

    let good = Command::new(support::fraudflight_bin())
        .args(["serve", "--check-config", "--config", &format!("{}/fraudflight.toml", support::manifest_dir())])
        .env("FRAUDFLIGHT_KAFKA_TOPIC", "from-env")
        .output()
        .unwrap();
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(String::from_utf8_lossy(&good.stdout).contains(r#"topic = "from-env""#));
}
