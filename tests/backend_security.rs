//! Backend credentials against the real services of `scripts/services.sh`:
//! Kafka through its SASL_SSL listener (SCRAM over TLS), Cassandra with a login over TLS
//! (the node requires the login; `system_views.clients` shows the TLS
//! session), OpenSearch over HTTPS with basic auth (nginx in front of the
//! node). One full run with every secret set — backend passwords, Flight /
//! HTTP tokens, the card-hash key — then the captured log is searched for
//! each secret and each card number. Wrong passwords and an untrusted CA
//! stop `serve` at start with an error that names the problem, not the
//! secret. Run by `make test-services`.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use arrow_flight::Action;
use futures::TryStreamExt;
use support::stack::{self, Names, Serve};

const SCRAM_PASSWORD: &str = "fraudflight-scram-test";
const CQL_PASSWORD: &str = "fraudflight-cql-test";
const SEARCH_PASSWORD: &str = "fraudflight-search-test";
const READ_TOKEN: &str = "read-token-5b0e9f7d1c2a";
const ADMIN_TOKEN: &str = "admin-token-8d4e2a6c0b13";
const CARD_KEY: &str = "card-hash-key-2f9a61e4";
const SEARCH_TLS_URL: &str = "https://127.0.0.1:9201";
const N: usize = 2_000;

/// `serve` with every backend behind credentials and TLS where the local
/// services offer it.
fn secured_env(names: &Names) -> Vec<(String, String)> {
    let ca = support::test_ca();
    let mut env = names.env();
    env.retain(|(k, _)| k != "FRAUDFLIGHT_KAFKA_BROKERS" && k != "FRAUDFLIGHT_KAFKA_PROPERTIES");
    env.extend(
        [
            ("FRAUDFLIGHT_KAFKA_BROKERS", "127.0.0.1:9095".to_string()),
            (
                "FRAUDFLIGHT_KAFKA_PROPERTIES",
                format!(
                    "security.protocol=SASL_SSL;sasl.mechanism=SCRAM-SHA-512;sasl.username=fraudflight;\
                     sasl.password={SCRAM_PASSWORD};ssl.ca.location={ca}"
                ),
            ),
            ("FRAUDFLIGHT_KAFKA_OUTCOME_TOPIC", "true".into()),
            ("FRAUDFLIGHT_CASSANDRA_USERNAME", "fraudflight".into()),
            ("FRAUDFLIGHT_CASSANDRA_PASSWORD", CQL_PASSWORD.into()),
            ("FRAUDFLIGHT_CASSANDRA_TLS_CA", ca.clone()),
            ("FRAUDFLIGHT_OPENSEARCH_URL", SEARCH_TLS_URL.into()),
            ("FRAUDFLIGHT_OPENSEARCH_USERNAME", "fraudflight".into()),
            ("FRAUDFLIGHT_OPENSEARCH_PASSWORD", SEARCH_PASSWORD.into()),
            ("FRAUDFLIGHT_OPENSEARCH_TLS_CA", ca),
            ("FRAUDFLIGHT_TOKENS_READ", READ_TOKEN.into()),
            ("FRAUDFLIGHT_TOKENS_ADMIN", ADMIN_TOKEN.into()),
            ("FRAUDFLIGHT_PRIVACY_CARD_HASH_KEY", CARD_KEY.into()),
            // Our own code at debug level: the strictest log a run can have
            // without the libraries' wire traces.
            ("RUST_LOG", "info,fraudflight=debug".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

/// Cassandra's own view of the client connections: (username, TLS) pairs.
async fn cassandra_clients(session: &scylla::client::session::Session) -> Vec<(String, bool)> {
    let pager = session.query_iter("SELECT username, ssl_enabled FROM system_views.clients", &[]).await.unwrap();
    let rows: Vec<(Option<String>, Option<bool>)> = pager.rows_stream().unwrap().try_collect().await.unwrap();
    rows.into_iter().map(|(u, s)| (u.unwrap_or_default(), s.unwrap_or(false))).collect()
}

#[tokio::test]
#[ignore = "needs Kafka, Cassandra, OpenSearch with their secured endpoints (make test-services starts them)"]
async fn a_full_run_with_every_credential_logs_no_secret_and_no_card_number() {
    let names = Names::new("secured");
    stack::create_topic(&names.topic, 2).await;
    let records = stack::simulated(41, N);
    stack::produce(&names.topic, &records).await;
    let env = secured_env(&names);
    let serve = Serve::start(&env);

    let (os, cs) = (stack::opensearch(), stack::cassandra().await);
    stack::wait_for_rows(&cs, &names, N, Duration::from_secs(300), "2,000 rows in Cassandra").await;
    stack::wait_for_documents(&os, &names, N, Duration::from_secs(300), "2,000 documents through HTTPS").await;

    // The server's Cassandra sessions are TLS and logged in as fraudflight
    // (this test's own session is the plain-text one).
    let tls_logins: Vec<String> =
        cassandra_clients(&cs).await.into_iter().filter(|(_, tls)| *tls).map(|(user, _)| user).collect();
    assert!(!tls_logins.is_empty(), "no TLS client connection in system_views.clients");
    assert!(tls_logins.iter().all(|u| u == "fraudflight"), "{tls_logins:?}");

    // Flight with the tokens: a read call works, a wrong token is refused.
    let mut client = serve.client().await;
    let mut request = tonic::Request::new(Action { r#type: "model-info".into(), body: Default::default() });
    request.metadata_mut().insert("authorization", format!("Bearer {READ_TOKEN}").parse().unwrap());
    let info: Vec<_> = client.do_action(request).await.unwrap().into_inner().try_collect().await.unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info[0].body).unwrap();
    let info_text = info.to_string();
    assert!(info["version"].is_string(), "{info}");
    let mut request = tonic::Request::new(Action { r#type: "model-info".into(), body: Default::default() });
    request.metadata_mut().insert("authorization", "Bearer not-a-token-71c3a9e0".parse().unwrap());
    assert_eq!(client.do_action(request).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    let check = Command::new(support::fraudflight_bin())
        .args(["serve", "--check-config"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let shown = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);

    let log = serve.log_text();
    assert!(serve.terminate().success());
    assert!(log.contains("DEBUG"), "the run logged at debug level");
    for secret in
        [SCRAM_PASSWORD, CQL_PASSWORD, SEARCH_PASSWORD, READ_TOKEN, ADMIN_TOKEN, CARD_KEY, "not-a-token-71c3a9e0"]
    {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
        assert!(!shown.contains(secret), "{secret} is in --check-config's output:\n{shown}");
        assert!(!info_text.contains(secret), "{secret} is in model-info: {info_text}");
    }
    let cards: HashSet<&str> = records.iter().map(|r| r.cc_num.as_str()).collect();
    let leaked: Vec<&&str> = cards.iter().filter(|c| log.contains(**c)).collect();
    assert!(leaked.is_empty(), "card numbers in the log: {leaked:?}");
}

/// Runs `serve` with only the given backend on; it must exit non-zero
/// within a minute. Returns everything it printed.
fn refused_at_start(env: &[(&str, String)]) -> String {
    let mut command = Command::new(support::fraudflight_bin());
    command.arg("serve").envs(stack::standalone()).env_remove("RUST_LOG");
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let id = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Command::new("kill").arg("-KILL").arg(id.to_string()).status();
    });
    let output = child.wait_with_output().unwrap();
    drop(watchdog);
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve started despite bad credentials:\n{text}");
    assert!(!text.contains("READY"), "{text}");
    text
}

#[test]
#[ignore = "needs Cassandra and OpenSearch with their secured endpoints (make test-services starts them)"]
fn wrong_passwords_and_untrusted_certificates_stop_serve_with_a_clear_error() {
    const WRONG: &str = "wrong-password-4e8c1b";
    let ca = support::test_ca();
    let other_ca = tempfile::NamedTempFile::new().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(other_ca.path(), cert.cert.pem()).unwrap();
    let other_ca = other_ca.path().to_str().unwrap().to_string();
    let cassandra = |password: &str, ca: &str| {
        vec![
            ("FRAUDFLIGHT_CASSANDRA_NODES", support::cassandra_node()),
            ("FRAUDFLIGHT_CASSANDRA_USERNAME", "fraudflight".to_string()),
            ("FRAUDFLIGHT_CASSANDRA_PASSWORD", password.to_string()),
            ("FRAUDFLIGHT_CASSANDRA_TLS_CA", ca.to_string()),
        ]
    };
    let search = |url: &str, password: &str, ca: &str| {
        vec![
            ("FRAUDFLIGHT_OPENSEARCH_URL", url.to_string()),
            ("FRAUDFLIGHT_OPENSEARCH_USERNAME", "fraudflight".to_string()),
            ("FRAUDFLIGHT_OPENSEARCH_PASSWORD", password.to_string()),
            ("FRAUDFLIGHT_OPENSEARCH_TLS_CA", ca.to_string()),
        ]
    };

    let text = refused_at_start(&cassandra(WRONG, &ca));
    assert!(text.contains("Provided username fraudflight and/or password are incorrect"), "{text}");
    assert!(text.contains("check cassandra.username"), "{text}");
    assert!(!text.contains(WRONG), "the password is in the output:\n{text}");

    let text = refused_at_start(&cassandra(CQL_PASSWORD, &other_ca));
    assert!(text.contains("invalid peer certificate: UnknownIssuer"), "{text}");
    assert!(!text.contains(CQL_PASSWORD), "{text}");

    let text = refused_at_start(&search(SEARCH_TLS_URL, WRONG, &ca));
    assert!(text.contains("401 Unauthorized") && text.contains("check opensearch.username"), "{text}");
    assert!(!text.contains(WRONG), "{text}");

    let text = refused_at_start(&search(SEARCH_TLS_URL, SEARCH_PASSWORD, &other_ca));
    assert!(text.contains("invalid peer certificate: UnknownIssuer"), "{text}");

    // A password in the URL is used, and never shown.
    let in_url = format!("https://fraudflight:{WRONG}@127.0.0.1:9201");
    let text =
        refused_at_start(&[("FRAUDFLIGHT_OPENSEARCH_URL", in_url), ("FRAUDFLIGHT_OPENSEARCH_TLS_CA", ca.clone())]);
    assert!(text.contains("401 Unauthorized"), "{text}");
    assert!(!text.contains(WRONG), "the password in the URL is in the output:\n{text}");
}
