//! Helpers shared by the integration tests that talk to real services
//! (started by `scripts/services.sh up`; found through the same environment
//! variables the server reads, with the local defaults).

#![allow(dead_code)]

/// Kafka bootstrap servers.
pub fn kafka_brokers() -> String {
    env_or("FRAUDFLIGHT_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// Cassandra contact point.
pub fn cassandra_node() -> String {
    env_or("FRAUDFLIGHT_CASSANDRA_NODES", "127.0.0.1:9042").split(',').next().unwrap_or_default().trim().to_string()
}

/// OpenSearch / Elasticsearch URL.
pub fn opensearch_url() -> String {
    env_or("FRAUDFLIGHT_OPENSEARCH_URL", "http://127.0.0.1:9200")
}

/// Cassandra login (the local node requires one; scripts/with-services.sh
/// exports the test role's).
pub fn cassandra_login() -> (String, String) {
    (
        env_or("FRAUDFLIGHT_CASSANDRA_USERNAME", "fraudflight"),
        env_or("FRAUDFLIGHT_CASSANDRA_PASSWORD", "fraudflight-cql-test"),
    )
}

/// The sink's configuration for `keyspace` on the local Cassandra, with
/// the test login (the library connects and creates the tables itself).
pub fn cassandra_config(keyspace: &str) -> fraudflight::config::CassandraConfig {
    let (username, password) = cassandra_login();
    fraudflight::config::CassandraConfig {
        nodes: cassandra_node(),
        keyspace: keyspace.to_string(),
        username,
        password: fraudflight::config::Secret::new(password),
        ..Default::default()
    }
}

/// The CA of the local services' TLS certificates (scripts/services.sh).
pub fn test_ca() -> String {
    let default = format!("{}/.services/tls/ca.pem", manifest_dir());
    env_or("FRAUDFLIGHT_TEST_CA", &default)
}

/// This clone's directory. Read when the test runs (cargo sets it): the
/// compile-time value is the clone that built the binary, and clones share
/// their test binaries through the shared target (scripts/shared-target.sh).
pub fn manifest_dir() -> String {
    env_or("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
}

/// The `fraudflight` binary beside this test binary (`target/debug`), for
/// the same reason: `CARGO_BIN_EXE_fraudflight` names the path of the clone
/// that built the test, which may be gone.
pub fn fraudflight_bin() -> std::path::PathBuf {
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.join("fraudflight")));
    beside.filter(|p| p.exists()).unwrap_or_else(|| env!("CARGO_BIN_EXE_fraudflight").into())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// A name no earlier run used, so reruns never see old data.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}
pub mod stack;

/// Card precision at k as `train.py` defines it, computed here
/// independently of the server: cards by their highest score, fraud if any
/// of their transactions is, ties at the k-th sharing its places.
pub fn card_precision(rows: &[(&str, f32, bool)], k: usize) -> Option<f64> {
    let mut cards: std::collections::HashMap<&str, (f32, bool)> = std::collections::HashMap::new();
    for &(card, score, fraud) in rows {
        let c = cards.entry(card).or_insert((score, fraud));
        *c = (c.0.max(score), c.1 || fraud);
    }
    let mut cards: Vec<(f32, bool)> = cards.into_values().collect();
    cards.sort_by(|a, b| b.0.total_cmp(&a.0));
    let frauds = |c: &[(f32, bool)]| c.iter().filter(|c| c.1).count() as f64;
    match cards.len() {
        0 => None,
        n if n <= k => Some(frauds(&cards) / n as f64),
        _ => {
            let kth = cards[k - 1].0;
            let above = cards.iter().take_while(|c| c.0 > kth).count();
            let tied: Vec<(f32, bool)> = cards.iter().copied().filter(|c| c.0 == kth).collect();
            Some((frauds(&cards[..above]) + frauds(&tied) * (k - above) as f64 / tied.len() as f64) / k as f64)
        }
    }
}
