//! Live model quality against real Kafka and Cassandra: two `serve`
//! instances score a topic's transactions, fraud labels come back on
//! `<topic>.labels`, and both show the same precision, recall and AP per
//! model version and day — equal to what this test computes itself from the
//! outcomes Cassandra stored. A third instance started after both stopped
//! shows the same numbers (they are in Cassandra, not in memory). A shadow
//! model loaded there scores beside the champion: its scores are stored in
//! `transactions` and it is measured too; `/metrics` carries the gauges. An
//! analyst's label from the dashboard goes through `<topic>.labels` and is
//! stored with who decided.
//!
//! Run by `make test-services` (needs Kafka and Cassandra up).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::TryStreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use fraudflight::record::Transaction;
use support::stack::{self, Names, Serve};

const DAY: i64 = 86_400;

fn env(names: &Names) -> Vec<(String, String)> {
    let mut env = names.env();
    env.retain(|(k, _)| k != "FRAUDFLIGHT_OPENSEARCH_URL");
    env.push(("FRAUDFLIGHT_OPENSEARCH_URL".into(), String::new()));
    env.push(("FRAUDFLIGHT_QUALITY_INTERVAL_MS".into(), "1000".into()));
    env
}

/// `model-quality` of a server.
async fn quality(serve: &Serve) -> serde_json::Value {
    let mut client = serve.client().await;
    let action = arrow_flight::Action { r#type: "model-quality".into(), body: Default::default() };
    let first = client.do_action(action).await.unwrap().into_inner().message().await.unwrap().unwrap();
    serde_json::from_slice(&first.body).unwrap()
}

/// What one (day, version) shows: transactions, frauds, average precision
/// and its stated error (binned counts in Cassandra's book), card precision
/// at 100.
type Shown = (u64, u64, Option<f64>, f64, Option<f64>);

/// (day, version) -> what it shows.
fn by_day(q: &serde_json::Value) -> BTreeMap<(i64, String), Shown> {
    q["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let key = (d["day"].as_i64().unwrap(), d["version"].as_str().unwrap().to_string());
            let error = d["average_precision_error"].as_f64().unwrap_or(0.0);
            (
                key,
                (
                    d["transactions"].as_u64().unwrap(),
                    d["frauds"].as_u64().unwrap(),
                    d["average_precision"].as_f64(),
                    error,
                    d["card_precision"].as_f64(),
                ),
            )
        })
        .collect()
}

/// Average precision as scikit-learn defines it, computed here
/// independently of the server.
fn average_precision(mut scored: Vec<(f32, bool)>) -> Option<f64> {
    let positives = scored.iter().filter(|s| s.1).count() as f64;
    if positives == 0.0 {
        return None;
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut seen, mut ap) = (0.0, 0.0, 0.0);
    for group in scored.chunk_by(|a, b| a.0 == b.0) {
        let added = group.iter().filter(|s| s.1).count() as f64;
        tp += added;
        seen += group.len() as f64;
        ap += added / positives * tp / seen;
    }
    Some(ap)
}

async fn send_labels(topic: &str, frauds: &[&Transaction]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", support::kafka_brokers()).create().unwrap();
    for t in frauds {
        let value = serde_json::json!({
            "trans_num": t.trans_num, "cc_num": t.cc_num, "is_fraud": 1, "reported_at": t.unix_time.unwrap() + 3_600,
        })
        .to_string();
        let record = FutureRecord::to(topic).key(&t.cc_num).payload(&value);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Cassandra: make test-services"]
async fn instances_agree_on_live_quality_it_survives_restarts_and_a_shadow_is_measured_beside_the_champion() {
    let names = Names::new("quality");
    stack::create_topic(&names.topic, 2).await;
    let (a, b) = (Serve::start(&env(&names)), Serve::start(&env(&names)));
    let session = stack::cassandra().await;
    let records = stack::simulated(23, 4_000);
    stack::produce(&names.topic, &records).await;
    stack::wait_for_rows(&session, &names, records.len(), Duration::from_secs(120), "the outcomes").await;
    let frauds: Vec<&Transaction> = records.iter().filter(|t| t.is_fraud == Some(1)).collect();
    assert!(frauds.len() >= 5, "the simulator makes some fraud: {}", frauds.len());
    send_labels(&format!("{}.labels", names.topic), &frauds).await;

    // What the numbers must be: the stored outcomes and the labels sent.
    let fraud: std::collections::HashSet<&str> = frauds.iter().map(|t| t.trans_num.as_str()).collect();
    let stored: Vec<(String, String, f32, String, scylla::value::CqlTimestamp)> = stack::select(
        &session,
        format!(
            "SELECT trans_num, cc_num, fraud_score, model_version, trans_time FROM {}.transactions",
            names.keyspace
        ),
    )
    .await;
    let champion = stored[0].3.clone();
    let mut expected: BTreeMap<(i64, String), Shown> = BTreeMap::new();
    let mut per_day: HashMap<i64, Vec<(&str, f32, bool)>> = HashMap::new();
    for (trans_num, card, score, _, time) in &stored {
        let is_fraud = fraud.contains(trans_num.as_str());
        per_day.entry((time.0 / 1000).div_euclid(DAY)).or_default().push((card, *score, is_fraud));
    }
    for (day, rows) in per_day {
        let frauds = rows.iter().filter(|r| r.2).count() as u64;
        let ap = average_precision(rows.iter().map(|r| (r.1, r.2)).collect());
        let shown = (rows.len() as u64, frauds, ap, 0.0, support::card_precision(&rows, 100));
        expected.insert((day, champion.clone()), shown);
    }

    // Both instances, each with half the partitions, show the whole book.
    for serve in [&a, &b] {
        let mut last = serde_json::Value::Null;
        let agreed = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                last = quality(serve).await;
                if by_day(&last).keys().eq(expected.keys()) && close(&by_day(&last), &expected) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        assert!(agreed.is_ok(), "quality never matched:\nexpected {expected:?}\nserved {:?}", by_day(&last));
    }
    let newest = expected.keys().map(|k| k.0).max().unwrap();
    let metrics = b.metrics();
    let gauge = metrics.value("fraudflight_model_average_precision", &[("version", &champion)]);
    let newest_ap = expected[&(newest, champion.clone())].2;
    let error = by_day(&quality(&b).await)[&(newest, champion.clone())].3;
    assert_eq!(gauge.is_some(), newest_ap.is_some());
    if let (Some(g), Some(e)) = (gauge, newest_ap) {
        assert!((g - e).abs() <= error + 1e-9, "gauge {g} vs {e} (+- {error})");
    }
    let card_gauge = metrics.value("fraudflight_model_card_precision", &[("version", &champion), ("k", "100")]);
    let newest_cards = expected[&(newest, champion.clone())].4.expect("cards on the newest day");
    assert!(card_gauge.is_some_and(|g| (g - newest_cards).abs() < 1e-9), "{card_gauge:?} vs {newest_cards}");
    let (status, summary) = b.http_get("/api/summary");
    assert_eq!(status, 200);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(by_day(&summary["model_quality"]), by_day(&quality(&b).await));
    assert!(a.terminate().success() && b.terminate().success());

    // A new instance shows the saved numbers before it scores anything.
    let c = Serve::start(&env(&names));
    stack::wait_until(Duration::from_secs(30), "the saved quality", || async {
        close(&by_day(&quality(&c).await), &expected)
    })
    .await;

    // A shadow: stored beside the champion, measured on the same labels.
    let challenger = &format!("{}/models/handbook/gbt-handbook-history-v1", support::manifest_dir());
    let mut client = c.client().await;
    let body = serde_json::json!({ "path": challenger, "mode": "shadow" }).to_string();
    let action = arrow_flight::Action { r#type: "load-model".into(), body: body.into() };
    client.do_action(action).await.expect("the shadow loads");
    // Some frauds among them, so there are alerts for an analyst to judge.
    let pool = stack::simulated(29, 20_000);
    let more: Vec<Transaction> = pool
        .iter()
        .filter(|t| t.is_fraud == Some(1))
        .take(30)
        .chain(pool.iter().filter(|t| t.is_fraud == Some(0)).take(270))
        .map(|t| Transaction { trans_num: format!("shadowed-{}", t.trans_num), ..t.clone() })
        .collect();
    stack::produce(&names.topic, &more).await;
    stack::wait_for_rows(
        &session,
        &names,
        records.len() + more.len(),
        Duration::from_secs(120),
        "the shadowed outcomes",
    )
    .await;
    let shadowed: Vec<(String, Option<String>, Option<f32>)> = stack::select(
        &session,
        format!("SELECT trans_num, shadow_version, shadow_score FROM {}.transactions", names.keyspace),
    )
    .await;
    for (trans_num, version, score) in &shadowed {
        let is_new = trans_num.starts_with("shadowed-");
        assert_eq!(version.as_deref() == Some("gbt-handbook-history-v1"), is_new, "{trans_num}");
        assert_eq!(score.is_some(), is_new, "{trans_num}");
    }
    stack::wait_until(Duration::from_secs(30), "the shadow measured", || async {
        let q = by_day(&quality(&c).await);
        q.iter().filter(|((_, v), _)| v == "gbt-handbook-history-v1").map(|(_, m)| m.0).sum::<u64>()
            == more.len() as u64
    })
    .await;

    // An analyst marks one of c's alerts genuine on the dashboard: the label
    // goes through `<topic>.labels`, like any label, and is stored with who
    // decided, in `labels` and on the outcome.
    let alerts: Vec<(String, String, bool)> = stack::select(
        &session,
        format!("SELECT trans_num, cc_num, is_fraud_predicted FROM {}.transactions", names.keyspace),
    )
    .await;
    let (alert, card, _) =
        alerts.iter().find(|(t, _, p)| *p && t.starts_with("shadowed-")).expect("an alert among the frauds");
    let body = serde_json::json!({"trans_num": alert, "is_fraud": false, "by": "analyst-1"}).to_string();
    let (status, answer) = c.http_post("/api/labels", &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""via":"kafka""#), "{answer}");
    let (status, answer) = c.http_post("/api/labels", r#"{"trans_num": "no-such-alert", "is_fraud": true, "by": "x"}"#);
    assert_eq!(status, 404, "{answer}");
    let keyspace = names.keyspace.clone();
    stack::wait_until(Duration::from_secs(60), "the analyst's label stored", || {
        let (session, keyspace, alert, card) = (&session, &keyspace, alert.clone(), card.clone());
        async move {
            let labelled: Option<(Option<i32>, Option<String>)> = session
                .query_unpaged(
                    format!("SELECT is_fraud, decided_by FROM {keyspace}.labels WHERE cc_num = ? AND trans_num = ?"),
                    (&card, &alert),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap()
                .maybe_first_row()
                .unwrap();
            labelled == Some((Some(0), Some("analyst-1".into())))
        }
    })
    .await;
    stack::wait_until(Duration::from_secs(60), "the outcome shows who decided", || {
        let (session, keyspace, alert, card) = (&session, &keyspace, alert.clone(), card.clone());
        async move {
            let rows: Vec<(String, Option<i64>, Option<String>)> = session
                .query_iter(
                    format!("SELECT trans_num, is_fraud, label_by FROM {keyspace}.transactions WHERE cc_num = ?"),
                    (&card,),
                )
                .await
                .unwrap()
                .rows_stream()
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            rows.iter().any(|(t, f, by)| *t == alert && *f == Some(0) && by.as_deref() == Some("analyst-1"))
        }
    })
    .await;
    assert!(c.terminate().success());
}

/// Same keys, same counts, AP within its error, card precision within 1e-9.
fn close(a: &BTreeMap<(i64, String), Shown>, b: &BTreeMap<(i64, String), Shown>) -> bool {
    b.iter().all(|(k, (n, f, ap, error, cards))| {
        a.get(k).is_some_and(|(n2, f2, ap2, error2, cards2)| {
            let near = |x: &Option<f64>, y: &Option<f64>, within: f64| match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() <= within,
                (None, None) => true,
                _ => false,
            };
            n == n2 && f == f2 && near(ap, ap2, error + error2 + 1e-9) && near(cards, cards2, 1e-9)
        })
    })
}
