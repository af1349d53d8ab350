//! Running `fraudflight serve` against the real services in tests: unique
//! topic / group / keyspace / index names per test, a 4-partition topic fed
//! by the simulator, the server as a child process (so it can be killed),
//! and readers of what ended up in Cassandra and OpenSearch.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::FlightDescriptor;
use futures::{StreamExt, TryStreamExt};
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::{OpenSearch, SearchParts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use serde_json::{json, Value};
use tonic::transport::Channel;

use fraudflight::kafka::producer::TransactionProducer;
use fraudflight::record::Transaction;
use fraudflight::simulate::{SimConfig, Simulator};

/// Names one test uses everywhere.
#[derive(Debug, Clone)]
pub struct Names {
    pub topic: String,
    pub group: String,
    pub keyspace: String,
    pub index_prefix: String,
}

impl Names {
    pub fn new(test: &str) -> Self {
        let base = super::unique(test).to_lowercase();
        Self {
            topic: format!("{base}_in"),
            group: format!("{base}_group"),
            keyspace: base.clone(),
            index_prefix: format!("{base}-tx").replace('_', "-"),
        }
    }

    /// The environment that points `serve` at these names.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("FRAUDFLIGHT_KAFKA_BROKERS", super::kafka_brokers()),
            ("FRAUDFLIGHT_KAFKA_TOPIC", self.topic.clone()),
            ("FRAUDFLIGHT_KAFKA_GROUP", self.group.clone()),
            ("FRAUDFLIGHT_CASSANDRA_NODES", super::cassandra_node()),
            ("FRAUDFLIGHT_CASSANDRA_KEYSPACE", self.keyspace.clone()),
            ("FRAUDFLIGHT_OPENSEARCH_URL", super::opensearch_url()),
            ("FRAUDFLIGHT_OPENSEARCH_INDEX_PREFIX", self.index_prefix.clone()),
            ("FRAUDFLIGHT_FLIGHT_ADDR", "127.0.0.1:0".into()),
            ("FRAUDFLIGHT_HTTP_ADDR", "127.0.0.1:0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The environment of a `serve` with Kafka, Cassandra and OpenSearch off (a
/// pure Flight scoring server) on free loopback ports.
pub fn standalone() -> Vec<(String, String)> {
    [
        ("FRAUDFLIGHT_KAFKA_BROKERS", ""),
        ("FRAUDFLIGHT_CASSANDRA_NODES", ""),
        ("FRAUDFLIGHT_OPENSEARCH_URL", ""),
        ("FRAUDFLIGHT_FLIGHT_ADDR", "127.0.0.1:0"),
        ("FRAUDFLIGHT_HTTP_ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The text after `READY ` of each such line a process prints, as it prints it.
pub fn ready_lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("READY ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    rx
}

pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", super::kafka_brokers()).create().unwrap();
    let created = admin
        .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// Simulated transactions (deterministic per seed).
pub fn simulated(seed: u64, n: usize) -> Vec<Transaction> {
    Simulator::new(SimConfig { seed, ..SimConfig::default() }).take(n).collect()
}

/// Writes records to the topic (key cc_num, JSON value), every one acknowledged.
pub async fn produce(topic: &str, records: &[Transaction]) {
    let producer = TransactionProducer::new(&super::kafka_brokers(), topic, &[]).unwrap();
    let report = producer.send_all(records.iter().cloned(), None).await.unwrap();
    assert_eq!(report.delivered as usize, records.len());
}

/// A `fraudflight serve` child process.
pub struct Serve {
    child: Child,
    pub flight: String,
    /// host:port of the HTTP API.
    pub http: String,
    pub log: PathBuf,
}

/// A `serve` with Kafka and Cassandra (no search sink) named `id` (static
/// membership, its own labels offsets), given up soon when it dies: the
/// broker's minimum session timeout.
#[allow(dead_code)]
pub fn instance(names: &Names, id: &str) -> Serve {
    let mut env = names.env();
    env.extend(
        [
            ("FRAUDFLIGHT_OPENSEARCH_URL", ""),
            ("FRAUDFLIGHT_KAFKA_INSTANCE_ID", id),
            ("FRAUDFLIGHT_KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Serve::start(&env)
}

impl Serve {
    pub fn start(env: &[(String, String)]) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", super::unique("serve")));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(super::fraudflight_bin())
            .arg("serve")
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("fraudflight starts");
        let rx = ready_lines(child.stdout.take().unwrap());
        let ready = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(r) => r,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not become ready; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        // `grpc://` or `grpc+tls://`, `http://` or `https://`: kept as the
        // URL a client connects to, and the bare HTTP address.
        let field = |name: &str| {
            ready.split_whitespace().find_map(|w| w.strip_prefix(name)).map(String::from).expect("READY line field")
        };
        let flight = field("flight=").replace("grpc+tls://", "https://").replace("grpc://", "http://");
        let http_url = field("http=");
        let http = http_url.split_once("://").map(|(_, a)| a.to_string()).expect("scheme://address");
        Self { child, flight, http, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// GET `path` on the HTTP API: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.http).expect("HTTP port answers");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// POST `body` (JSON) to `path` on the HTTP API: (status code, body).
    pub fn http_post(&self, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.http).expect("HTTP port answers");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.http,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }

    /// `/metrics`, parsed as Prometheus text exposition format.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        Metrics(prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid exposition"))
    }

    /// Resident memory of the process, MB (Linux).
    pub fn rss_mb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    }

    /// SIGTERM; waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no draining, no commit.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn client(&self) -> FlightServiceClient<Channel> {
        let channel = Channel::from_shared(self.flight.clone()).unwrap().connect().await.unwrap();
        FlightServiceClient::new(channel).max_decoding_message_size(64 << 20)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// DoExchange of `records`: the answer's batches, or the server's status.
pub async fn try_exchange(serve: &Serve, records: &[Transaction]) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut client = serve.client().await;
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["score".into()])))
        .build(futures::stream::iter([Ok(fraudflight::record::to_batch(records))]))
        .map(|d| d.expect("encodes"));
    let response = client.do_exchange(input).await?.into_inner();
    FlightRecordBatchStream::new_from_flight_data(response.map_err(Into::into)).try_collect().await.map_err(|e| match e
    {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    })
}

/// DoExchange scores of `records`, by trans_num.
pub async fn exchange_scores(serve: &Serve, records: &[Transaction]) -> HashMap<String, f32> {
    let mut client = serve.client().await;
    let batches: Vec<RecordBatch> = records.chunks(65_536).map(fraudflight::record::to_batch).collect();
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["score".into()])))
        .with_max_flight_data_size(usize::MAX)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map(|d| d.expect("encodes"));
    let response = client.do_exchange(input).await.expect("exchange").into_inner();
    let answers: Vec<RecordBatch> =
        FlightRecordBatchStream::new_from_flight_data(response.map_err(Into::into)).try_collect().await.unwrap();
    let mut out = HashMap::new();
    for b in &answers {
        let ids = b.column_by_name("trans_num").unwrap().as_string::<i32>();
        let scores = b.column_by_name("fraud_score").unwrap().as_primitive::<Float32Type>();
        for i in 0..b.num_rows() {
            out.insert(ids.value(i).to_string(), scores.value(i));
        }
    }
    out
}

pub async fn cassandra() -> Session {
    let (user, password) = super::cassandra_login();
    SessionBuilder::new()
        .known_node(super::cassandra_node())
        .user(user, password)
        .build()
        .await
        .expect("connect to Cassandra")
}

/// Every (trans_num, fraud_score, is_fraud_predicted) row of a table; a row
/// stored twice would appear twice.
pub async fn cassandra_rows(session: &Session, keyspace: &str, table: &str) -> Vec<(String, f32, bool)> {
    let pager = session
        .query_iter(format!("SELECT trans_num, fraud_score, is_fraud_predicted FROM {keyspace}.{table}"), &[])
        .await
        .expect("select");
    pager.rows_stream::<(String, f32, bool)>().unwrap().try_collect().await.expect("rows")
}

/// Every row a query without bind values returns, decoded as `R`.
pub async fn select<R>(session: &Session, cql: String) -> Vec<R>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let pager = session.query_iter(cql, &[]).await.expect("select");
    pager.rows_stream::<R>().expect("row types").try_collect().await.expect("rows")
}

/// Number of rows of a table (0 if it does not exist yet).
pub async fn cassandra_count(session: &Session, keyspace: &str, table: &str) -> usize {
    match session.query_iter(format!("SELECT trans_num FROM {keyspace}.{table}"), &[]).await {
        Ok(pager) => match pager.rows_stream::<(String,)>() {
            Ok(rows) => rows.try_collect::<Vec<_>>().await.map(|r| r.len()).unwrap_or(0),
            Err(_) => 0,
        },
        Err(_) => 0,
    }
}

pub fn opensearch() -> OpenSearch {
    let url = super::opensearch_url().parse().unwrap();
    OpenSearch::new(TransportBuilder::new(SingleNodeConnectionPool::new(url)).build().unwrap())
}

/// Documents in the test's indices (after a refresh).
pub async fn opensearch_count(client: &OpenSearch, prefix: &str) -> usize {
    let index = format!("{prefix}-*");
    let _ = client.indices().refresh(opensearch::indices::IndicesRefreshParts::Index(&[&index])).send().await;
    let count: Value = match client.count(opensearch::CountParts::Index(&[&index])).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => return 0,
    };
    count["count"].as_u64().unwrap_or(0) as usize
}

/// The JSON answer of a search on `index`.
pub async fn search(client: &OpenSearch, index: &str, body: Value) -> Value {
    client.search(SearchParts::Index(&[index])).body(body).send().await.unwrap().json().await.unwrap()
}

/// Every document's (trans_num -> fraud_score), paging with search_after.
pub async fn opensearch_scores(client: &OpenSearch, prefix: &str) -> HashMap<String, f32> {
    let index = format!("{prefix}-*");
    let mut out = HashMap::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"size": 10000, "sort": [{"trans_num": "asc"}], "_source": ["trans_num", "fraud_score"]});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let page = search(client, &index, body).await;
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            return out;
        }
        for h in &hits {
            let id = h["_id"].as_str().unwrap().to_string();
            assert_eq!(h["_source"]["trans_num"].as_str(), Some(id.as_str()), "_id is trans_num");
            out.insert(id, h["_source"]["fraud_score"].as_f64().unwrap() as f32);
        }
        after = hits.last().map(|h| h["sort"].clone());
    }
}

/// Waits (up to `limit`) until the test's `transactions` table has `n` rows.
pub async fn wait_for_rows(session: &Session, names: &Names, n: usize, limit: Duration, what: &str) {
    wait_until(limit, what, || async move { cassandra_count(session, &names.keyspace, "transactions").await >= n })
        .await;
}

/// Waits (up to `limit`) until the test's indices hold `n` documents.
pub async fn wait_for_documents(client: &OpenSearch, names: &Names, n: usize, limit: Duration, what: &str) {
    wait_until(limit, what, || async move { opensearch_count(client, &names.index_prefix).await >= n }).await;
}

/// A consumer of `topic` from its start, in a group of its own.
pub fn reader(topic: &str) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", super::kafka_brokers())
        .set("group.id", super::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Polls `check` every second until it returns true or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A parsed `/metrics` scrape.
pub struct Metrics(pub prometheus_parse::Scrape);

impl Metrics {
    /// The value of counter or gauge `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(v),
                _ => None,
            })
    }
}

/// Live rows and tombstone cells Cassandra reads for `cql` (a traced
/// query: the coordinator's "Read N live rows and M tombstone cells"
/// events, summed). A null bound in a write is a tombstone cell here.
#[allow(dead_code)]
pub async fn read_cells(session: &Session, cql: &str) -> (u64, u64) {
    let mut statement = scylla::statement::Statement::new(cql.to_string());
    statement.set_tracing(true);
    let result = session.query_unpaged(statement, &[]).await.unwrap();
    let id = result.tracing_id().expect("a traced query has a tracing id");
    // The trace is written a little after the answer.
    for _ in 0..50 {
        if let Ok(info) = session.get_tracing_info(&id).await {
            let counts: Vec<(u64, u64)> = info
                .events
                .iter()
                .filter_map(|e| {
                    let words: Vec<&str> = e.activity.as_deref()?.split_whitespace().collect();
                    match words.as_slice() {
                        ["Read", live, "live", "rows", "and", dead, "tombstone", ..] => {
                            Some((live.parse().ok()?, dead.parse().ok()?))
                        }
                        _ => None,
                    }
                })
                .collect();
            if !counts.is_empty() {
                return counts.into_iter().fold((0, 0), |(l, t), (a, b)| (l + a, t + b));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no read counts in the trace of `{cql}`");
}
