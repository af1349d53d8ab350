//! Security of a running `fraudflight serve` (no external service needed:
//! Kafka, Cassandra and OpenSearch are switched off): TLS and mutual TLS on
//! Flight and HTTP with certificates made for the test, bearer tokens and
//! their roles on every Flight method and HTTP route, the
//! plain-text-on-loopback-only rule, and tokens kept out of the logs.

mod support;

use std::path::{Path, PathBuf};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightDescriptor};
use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::stack::{self, Serve};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

const READ: &str = "read-token-5f0c1b2e9a7d";
const ADMIN: &str = "admin-token-8e4d2c6a1f3b";
const ANALYST: &str = "analyst-token-3c9e7a0d5b21";

/// A CA, a server certificate for 127.0.0.1 / localhost and a client
/// certificate it signed, and a second CA with its own client: PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Self::ca("fraudflight test CA");
        let other = Self::ca("some other CA");
        Self::leaf(&ca, vec!["localhost".into(), "127.0.0.1".into()], dir.path(), "server");
        Self::leaf(&ca, vec!["client.example".into()], dir.path(), "client");
        Self::leaf(&other, vec!["intruder.example".into()], dir.path(), "intruder");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.pem()).unwrap();
        Self { dir }
    }

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: Vec<String>, dir: &Path, stem: &str) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, issuer).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn identity(&self, stem: &str) -> Identity {
        Identity::from_pem(self.read(&format!("{stem}.pem")), self.read(&format!("{stem}.key")))
    }
}

/// `serve` with nothing external, plus `extra` settings.
fn env(extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = stack::standalone();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

fn tls_env(pki: &Pki, mutual: bool) -> Vec<(String, String)> {
    let path = |n: &str| pki.path(n).display().to_string();
    let tokens = pki.path("tokens.txt");
    std::fs::write(&tokens, format!("# test tokens\nread:{READ}\nanalyst:ann:{ANALYST}\nadmin:{ADMIN}\n")).unwrap();
    let mut extra = vec![
        ("FRAUDFLIGHT_TLS_CERT", path("server.pem")),
        ("FRAUDFLIGHT_TLS_KEY", path("server.key")),
        ("FRAUDFLIGHT_TOKENS_FILE", tokens.display().to_string()),
    ];
    if mutual {
        extra.push(("FRAUDFLIGHT_TLS_CLIENT_CA", path("ca.pem")));
    }
    env(&extra)
}

/// A Flight channel to `serve` trusting `ca`, presenting `identity` if any.
async fn channel(serve: &Serve, ca: &[u8], identity: Option<Identity>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Channel::from_shared(serve.flight.clone()).unwrap().tls_config(tls)?.connect().await
}

/// What a client interceptor is: adds the token to each call.
type AddToken = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Client = FlightServiceClient<tonic::service::interceptor::InterceptedService<Channel, AddToken>>;

/// A Flight client that sends `token` (if any) on every call.
fn with_token(channel: Channel, token: Option<&str>) -> Client {
    let header = token.map(|t| format!("Bearer {t}").parse::<tonic::metadata::MetadataValue<_>>().unwrap());
    let add: AddToken = Box::new(move |mut request| {
        if let Some(h) = &header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    });
    FlightServiceClient::with_interceptor(channel, add)
}

async fn action(client: &mut Client, kind: &str, body: &[u8]) -> Result<serde_json::Value, tonic::Status> {
    let mut results = client.do_action(Action { r#type: kind.into(), body: body.to_vec().into() }).await?.into_inner();
    let first = results.next().await.expect("one result")?;
    Ok(serde_json::from_slice(&first.body).unwrap())
}

fn shipped_model() -> String {
    let models = Path::new(&support::manifest_dir()).join("models");
    let newest = fraudflight::score::registry::newest_model_dir(&models).expect("a shipped model");
    newest.display().to_string()
}

fn https(pki: &Pki, identity: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pki.read("ca.pem")).unwrap()])
        .redirect(reqwest::redirect::Policy::none());
    if let Some(stem) = identity {
        let mut pem = pki.read(&format!("{stem}.pem"));
        pem.extend(pki.read(&format!("{stem}.key")));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn tls_and_tokens_guard_every_flight_method_and_http_route() {
    let pki = Pki::new();
    let serve = Serve::start(&tls_env(&pki, false));
    assert!(serve.flight.starts_with("https://"), "{}", serve.flight);
    let ca = pki.read("ca.pem");

    // The right CA connects; a plain-text client and a client trusting
    // another CA are refused.
    let mut reader = with_token(channel(&serve, &ca, None).await.expect("TLS with the right CA"), Some(READ));
    assert_eq!(action(&mut reader, "health", b"").await.unwrap()["status"], "ok");
    let plain = Channel::from_shared(serve.flight.replace("https://", "http://")).unwrap().connect().await;
    let plain_call = match plain {
        Err(_) => true,
        Ok(ch) => action(&mut with_token(ch, Some(READ)), "health", b"").await.is_err(),
    };
    assert!(plain_call, "a plain-text Flight client was served");
    assert!(channel(&serve, &pki.read("other-ca.pem"), None).await.is_err(), "a client trusting another CA connected");

    // No token, a wrong token: Unauthenticated on every kind of call.
    let anonymous = channel(&serve, &ca, None).await.unwrap();
    for token in [None, Some("not-a-token-at-all-000000")] {
        let mut client = with_token(anonymous.clone(), token);
        assert_eq!(action(&mut client, "model-info", b"").await.unwrap_err().code(), Code::Unauthenticated);
        let flights = client.list_flights(arrow_flight::Criteria::default()).await;
        assert_eq!(flights.unwrap_err().code(), Code::Unauthenticated);
        let schema = client.get_schema(FlightDescriptor::new_path(vec!["score".into()])).await;
        assert_eq!(schema.unwrap_err().code(), Code::Unauthenticated);
    }

    // A read token scores and queries, but may not load a model or ingest.
    let records = stack::simulated(5, 200);
    let batch = fraudflight::record::to_batch(&records);
    let put = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["transactions".into()])))
        .build(futures::stream::iter([Ok(batch.clone())]))
        .map(|d| d.unwrap());
    let before = action(&mut reader, "model-info", b"").await.unwrap()["version"].clone();
    let body = serde_json::to_vec(&serde_json::json!({ "path": shipped_model() })).unwrap();
    let refused = action(&mut reader, "load-model", &body).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("load-model needs an `admin` token"), "{}", refused.message());
    assert_eq!(reader.do_put(put).await.unwrap_err().code(), Code::PermissionDenied);
    for switch in ["promote", "rollback"] {
        let refused = action(&mut reader, switch, b"").await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{switch}");
        assert!(refused.message().contains(&format!("{switch} needs an `admin` token")), "{}", refused.message());
    }
    assert_eq!(action(&mut reader, "model-info", b"").await.unwrap()["version"], before);
    // An analyst labels, but may not load a model or ingest either.
    let mut analyst = with_token(channel(&serve, &ca, None).await.unwrap(), Some(ANALYST));
    let refused = action(&mut analyst, "load-model", &body).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let put_again = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["transactions".into()])))
        .build(futures::stream::iter([Ok(batch.clone())]))
        .map(|d| d.unwrap());
    let refused = match analyst.do_put(put_again).await {
        Err(status) => status,
        Ok(answer) => answer.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{}", refused.message());

    // The admin token may.
    let mut admin = with_token(channel(&serve, &ca, None).await.unwrap(), Some(ADMIN));
    let loaded = action(&mut admin, "load-model", &body).await.expect("admin loads a model");
    assert_eq!(loaded["version"], before);

    // HTTPS: /health is open, everything else needs a token (header or the
    // login cookie); plain HTTP on the TLS port gets no answer.
    let base = format!("https://localhost:{}", serve.http.rsplit(':').next().unwrap());
    let client = https(&pki, None);
    assert_eq!(client.get(format!("{base}/health")).send().await.unwrap().status(), 200);
    let denied = client.get(format!("{base}/api/summary")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Bearer");
    for route in ["/metrics", "/api/alerts", "/api/events", "/assets/dashboard.js", "/ready"] {
        assert_eq!(client.get(format!("{base}{route}")).send().await.unwrap().status(), 401, "{route}");
    }
    let wrong = client.get(format!("{base}/metrics")).bearer_auth("not-a-token-at-all-000000").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = client.get(format!("{base}/metrics")).bearer_auth(READ).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    // The refused DoPut ingested nothing.
    assert!(!text.lines().any(|l| l.starts_with("fraudflight_records_in_total") && !l.ends_with(" 0")), "{text}");
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains("action=\"/login\""));
    let bad_login = client.post(format!("{base}/login")).body("token=nope").send().await.unwrap();
    assert_eq!(bad_login.status(), 401);
    let login = client.post(format!("{base}/login")).body(format!("token={READ}")).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Strict"));
    // Cookies reach every port of the host: the cookie is a session id, not the token.
    assert!(!cookie.contains(READ), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let page = client.get(format!("{base}/")).header("cookie", session).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/assets/dashboard.js"));
    // Labelling an alert needs an analyst (or admin) token: a reader is
    // refused before anything is looked up; the analyst and the admin get
    // past the check (no such alert); a page of another origin does not.
    let label = r#"{"trans_num": "t-1", "is_fraud": true, "by": "ann"}"#;
    let refused = client.post(format!("{base}/api/labels")).bearer_auth(READ).body(label).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("labelling an alert needs an `analyst` token"));
    for token in [ANALYST, ADMIN] {
        let passed = client.post(format!("{base}/api/labels")).bearer_auth(token).body(label).send().await.unwrap();
        assert_eq!(passed.status(), 404, "no alert t-1 is held");
    }
    let port = serve.http.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let elsewhere = format!("https://localhost:{}", port + 1);
    let forged = client.post(format!("{base}/api/labels")).bearer_auth(ANALYST).header("origin", elsewhere);
    let forged = forged.body(label).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.text().await.unwrap().contains("another origin"));
    // An analyst may not load models.
    let analyst_load = client.get(format!("{base}/api/summary")).bearer_auth(ANALYST).send().await.unwrap();
    assert_eq!(analyst_load.status(), 200, "an analyst reads");
    let plain_http = reqwest::Client::new().get(format!("http://{}/health", serve.http)).send().await;
    assert!(plain_http.is_err() || !plain_http.unwrap().status().is_success());

    // No token ever reaches the log.
    let log = serve.log_text();
    assert!(serve.terminate().success());
    assert!(!log.contains(READ) && !log.contains(ADMIN) && !log.contains(ANALYST), "a token is in the log:\n{log}");
    assert!(log.contains("tokens=true"), "{log}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let serve = Serve::start(&tls_env(&pki, true));
    let ca = pki.read("ca.pem");

    let mut good = with_token(channel(&serve, &ca, Some(pki.identity("client"))).await.unwrap(), Some(READ));
    assert_eq!(action(&mut good, "health", b"").await.unwrap()["status"], "ok");
    for identity in [None, Some(pki.identity("intruder"))] {
        let refused = match channel(&serve, &ca, identity).await {
            Err(_) => true,
            Ok(ch) => action(&mut with_token(ch, Some(READ)), "health", b"").await.is_err(),
        };
        assert!(refused, "a client without a certificate signed by the CA was served");
    }

    let base = format!("https://localhost:{}", serve.http.rsplit(':').next().unwrap());
    let ok = https(&pki, Some("client")).get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(https(&pki, None).get(format!("{base}/health")).send().await.is_err());
    assert!(https(&pki, Some("intruder")).get(format!("{base}/health")).send().await.is_err());
    assert!(serve.terminate().success());
}

#[test]
fn plain_text_on_a_public_address_needs_an_explicit_opt_in() {
    let output = std::process::Command::new(support::fraudflight_bin())
        .arg("serve")
        .envs(env(&[("FRAUDFLIGHT_FLIGHT_ADDR", "0.0.0.0:0".into())]))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve Flight in plain text on 0.0.0.0:0"), "{stderr}");

    let serve = Serve::start(&env(&[
        ("FRAUDFLIGHT_FLIGHT_ADDR", "0.0.0.0:0".into()),
        ("FRAUDFLIGHT_ALLOW_PLAINTEXT", "true".into()),
    ]));
    let log = serve.log_text();
    assert!(serve.terminate().success());
    assert!(log.contains("PLAIN TEXT on a non-loopback address"), "{log}");
}

#[test]
fn tokens_from_the_environment_stay_out_of_check_config() {
    let output = std::process::Command::new(support::fraudflight_bin())
        .args(["serve", "--check-config"])
        .envs(env(&[("FRAUDFLIGHT_TOKENS_READ", READ.into()), ("FRAUDFLIGHT_TOKENS_ADMIN", ADMIN.into())]))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let shown = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(!shown.contains(READ) && !shown.contains(ADMIN), "{shown}");
    assert!(shown.contains("read = \"(set)\""), "{shown}");
}

#[test]
fn logs_are_json_lines_on_request() {
    let serve = Serve::start(&env(&[("FRAUDFLIGHT_LOG_FORMAT", "json".into())]));
    let log = serve.log_text();
    assert!(serve.terminate().success());
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["level"].is_string() && event["message"].is_string() && event["timestamp"].is_string(), "{line}");
    }
}
