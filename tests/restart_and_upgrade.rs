//! Restarts and upgrades against real Cassandra: the model line-up an
//! operator chose (a shadow loaded from a directory that is gone since,
//! promoted, rolled back) is what a restarted `serve` serves (unless it is
//! configured with another model since); `models` keeps no stale roles; and a keyspace created by an earlier release
//! (commit 8c1b7e4, its `scripts/schema/cassandra.cql` kept in
//! `tests/fixtures/`) is upgraded at start: transactions, history columns,
//! labels with who decided, all stored; its growing tables get their
//! retention. Live quality's search documents past their retention are
//! deleted at start; an outcome index the same release created gets the
//! fields mapped since (its template kept in `tests/fixtures/`).
//!
//! Run by `make test-services` (needs Cassandra and OpenSearch up).

mod support;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

use support::stack::{self, Names, Serve};

/// `serve` with Cassandra only (no Kafka, no search engine).
fn env(names: &Names) -> Vec<(String, String)> {
    [
        ("FRAUDFLIGHT_KAFKA_BROKERS", String::new()),
        ("FRAUDFLIGHT_OPENSEARCH_URL", String::new()),
        ("FRAUDFLIGHT_CASSANDRA_NODES", support::cassandra_node()),
        ("FRAUDFLIGHT_CASSANDRA_KEYSPACE", names.keyspace.clone()),
        ("FRAUDFLIGHT_MODEL", format!("{}/models/gbt-sim-v1", support::manifest_dir())),
        ("FRAUDFLIGHT_FLIGHT_ADDR", "127.0.0.1:0".into()),
        ("FRAUDFLIGHT_HTTP_ADDR", "127.0.0.1:0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn action(client: &mut FlightServiceClient<Channel>, name: &str, body: Vec<u8>) -> serde_json::Value {
    let mut results = client.do_action(Action { r#type: name.into(), body: body.into() }).await.unwrap().into_inner();
    let first = results.message().await.unwrap().expect("one result");
    serde_json::from_slice(&first.body).expect("JSON result")
}

/// (champion, shadow, previous) as `model-info` reports them.
async fn lineup(serve: &Serve) -> (String, Option<String>, Option<String>) {
    let info = action(&mut serve.client().await, "model-info", vec![]).await;
    let name = |v: &serde_json::Value| v.as_str().map(String::from);
    (info["version"].as_str().unwrap().to_string(), name(&info["shadow"]), name(&info["previous"]))
}

async fn roles(session: &scylla::client::session::Session, keyspace: &str) -> Vec<(String, Option<String>)> {
    let mut rows: Vec<(String, Option<String>)> =
        stack::select(session, format!("SELECT version, role FROM {keyspace}.models")).await;
    rows.sort();
    rows
}

async fn put(serve: &Serve, path: &str, batch: arrow::record_batch::RecordBatch) {
    let put = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![path.into()])))
        .build(futures::stream::iter([Ok(batch)]))
        .map(|d| d.unwrap());
    let _: Vec<_> = serve.client().await.do_put(put).await.unwrap().into_inner().try_collect().await.unwrap();
}

/// `select` (columns FROM a system_schema table) of one table of `keyspace`.
async fn schema<R>(session: &scylla::client::session::Session, select: &str, keyspace: &str, table: &str) -> Vec<R>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let cql = format!("SELECT {select} WHERE keyspace_name = ? AND table_name = ?");
    session.query_iter(cql, (keyspace, table)).await.unwrap().rows_stream::<R>().unwrap().try_collect().await.unwrap()
}

const CHAMPION: &str = "gbt-sim-v1";
const CHALLENGER: &str = "gbt-handbook-history-v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: make test-services"]
async fn a_restart_serves_the_line_up_the_operator_chose_wherever_its_models_came_from() {
    let names = Names::new("lineup");
    let session = stack::cassandra().await;
    // The challenger from a directory that is gone before the restart.
    let gone = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(&support::manifest_dir()).join("models/handbook").join(CHALLENGER);
    for file in ["model.onnx", "model.json", "parity.jsonl"] {
        std::fs::copy(source.join(file), gone.path().join(file)).unwrap();
    }

    let serve = Serve::start(&env(&names));
    assert_eq!(lineup(&serve).await, (CHAMPION.into(), None, None));
    let body = serde_json::json!({ "path": gone.path(), "mode": "shadow" }).to_string().into_bytes();
    action(&mut serve.client().await, "load-model", body).await;
    action(&mut serve.client().await, "promote", vec![]).await;
    let promoted = (CHALLENGER.to_string(), None, Some(CHAMPION.to_string()));
    assert_eq!(lineup(&serve).await, promoted);
    assert!(serve.terminate().success());
    drop(gone);

    // Restarted with the same configuration (which names the old champion).
    let serve = Serve::start(&env(&names));
    assert_eq!(lineup(&serve).await, promoted, "the promoted model serves after a restart");
    assert_eq!(
        roles(&session, &names.keyspace).await,
        vec![(CHALLENGER.into(), Some("champion".into())), (CHAMPION.into(), Some("previous".into()))]
    );
    // It scores as the champion: its version is on the outcomes.
    put(&serve, "transactions", fraudflight::record::to_batch(&stack::simulated(5, 50))).await;
    let versions: Vec<(String,)> =
        stack::select(&session, format!("SELECT model_version FROM {}.transactions", names.keyspace)).await;
    assert!(versions.len() == 50 && versions.iter().all(|(v,)| v == CHALLENGER), "{versions:?}");

    action(&mut serve.client().await, "rollback", vec![]).await;
    assert!(serve.terminate().success());
    let serve = Serve::start(&env(&names));
    assert_eq!(lineup(&serve).await, (CHAMPION.into(), None, Some(CHALLENGER.into())), "the rollback too");
    assert_eq!(
        roles(&session, &names.keyspace).await,
        vec![(CHALLENGER.into(), Some("previous".into())), (CHAMPION.into(), Some("champion".into()))]
    );
    assert!(serve.terminate().success());

    // Configured with another model since: the operator chose anew.
    let mut other = env(&names);
    other.push(("FRAUDFLIGHT_MODEL".into(), source.display().to_string()));
    let serve = Serve::start(&other);
    assert_eq!(lineup(&serve).await, (CHALLENGER.into(), None, None), "a new configuration wins");
    assert!(serve.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: make test-services"]
async fn a_keyspace_of_an_earlier_release_is_upgraded_at_start() {
    let names = Names::new("upgrade");
    let session = stack::cassandra().await;
    let old = std::fs::read_to_string(format!("{}/tests/fixtures/cassandra-8c1b7e4.cql", support::manifest_dir()))
        .unwrap()
        .replace("fraudflight.", &format!("{}.", names.keyspace))
        .replace("KEYSPACE IF NOT EXISTS fraudflight ", &format!("KEYSPACE IF NOT EXISTS {} ", names.keyspace));
    let statements: Vec<String> = old
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for statement in &statements {
        session.query_unpaged(statement.clone(), &[]).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    session.await_schema_agreement().await.unwrap();
    let columns = |table: &'static str| {
        schema::<(String,)>(&session, "column_name FROM system_schema.columns", &names.keyspace, table)
    };
    assert!(!columns("labels").await.contains(&("decided_by".to_string(),)), "the old release's labels");
    // Outcomes the old release stored, their `is_fraud` written at the
    // clock's timestamp: legacy-0 with the record's own flag, legacy-1 with
    // a label reported on day 2 (a replay: report times in event time).
    let t0 = 1_600_000_000_i64;
    for (n, label) in [(0, None), (1, Some(t0 + 2 * 86_400))] {
        let reported = label.map_or("null".to_string(), |at: i64| at.to_string());
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {}.transactions (cc_num, trans_time, trans_num, merchant, amt, is_fraud, label_reported_at) VALUES ('4000000000000{n}', {}, 'legacy-{n}', 'fraud_Old Shop', 12.5, 0, {reported})",
                    names.keyspace,
                    t0 * 1000
                ),
                &[],
            )
            .await
            .unwrap();
    }

    let mut upgraded = env(&names);
    upgraded.push(("FRAUDFLIGHT_RETENTION_OUTCOMES_DAYS".into(), "7".into()));
    let serve = Serve::start(&upgraded);
    assert!(columns("labels").await.contains(&("decided_by".to_string(),)), "labels upgraded");
    // Retention: the growing tables expire their rows (7 days asked for
    // outcomes, the default 400 for labels); the line-up's never.
    let ttl = |table: &'static str| {
        let rows = schema::<(i32,)>(&session, "default_time_to_live FROM system_schema.tables", &names.keyspace, table);
        async move { rows.await[0] }
    };
    assert_eq!(ttl("transactions").await, (7 * 86_400,));
    assert_eq!(ttl("labels").await, (400 * 86_400,));
    assert_eq!(ttl("model_lineup").await, (0,));
    assert!(columns("transactions").await.contains(&("label_by".to_string(),)), "transactions upgraded");
    // The old outcomes have no `transaction_keys` row: the table is not
    // marked complete, and a label's lookup filters the card's partition
    // for them (below).
    let comment =
        schema::<(Option<String>,)>(&session, "comment FROM system_schema.tables", &names.keyspace, "transaction_keys")
            .await;
    assert!(
        !comment[0].0.as_deref().unwrap_or_default().contains("a row for every outcome"),
        "transaction_keys of an upgraded keyspace marked complete: {comment:?}"
    );
    let records = stack::simulated(6, 200);
    put(&serve, "transactions", fraudflight::record::to_batch(&records)).await;
    assert_eq!(stack::cassandra_count(&session, &names.keyspace, "transactions").await, records.len() + 2);
    let labels = arrow::record_batch::RecordBatch::try_from_iter([
        ("trans_num", std::sync::Arc::new(arrow::array::StringArray::from(vec![records[0].trans_num.clone()])) as _),
        ("cc_num", std::sync::Arc::new(arrow::array::StringArray::from(vec![records[0].cc_num.clone()])) as _),
        ("is_fraud", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _),
        ("decided_by", std::sync::Arc::new(arrow::array::StringArray::from(vec!["analyst-7"])) as _),
    ])
    .unwrap();
    put(&serve, "labels", labels).await;
    let stored: Vec<(String, Option<String>)> =
        stack::select(&session, format!("SELECT trans_num, decided_by FROM {}.labels", names.keyspace)).await;
    assert_eq!(stored, vec![(records[0].trans_num.clone(), Some("analyst-7".into()))]);

    // Labels reported (in event time) long before the old release wrote
    // those rows: a fraud on day 1 replaces the record's own flag; on
    // legacy-1 a report from day 1 is older than the one it holds, one from
    // day 3 newer.
    let legacy_labels = |reports: &[(i64, i64, i64)]| {
        arrow::record_batch::RecordBatch::try_from_iter([
            (
                "trans_num",
                std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
                    reports.iter().map(|r| format!("legacy-{}", r.0)),
                )) as _,
            ),
            (
                "cc_num",
                std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
                    reports.iter().map(|r| format!("4000000000000{}", r.0)),
                )) as _,
            ),
            (
                "is_fraud",
                std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(reports.iter().map(|r| r.1))) as _,
            ),
            (
                "reported_at",
                std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(reports.iter().map(|r| r.2))) as _,
            ),
        ])
        .unwrap()
    };
    put(&serve, "labels", legacy_labels(&[(0, 1, t0 + 86_400), (1, 1, t0 + 86_400)])).await;
    let shown = || async {
        let mut rows: Vec<(String, Option<i64>, Option<i64>)> = stack::select(
            &session,
            format!(
                "SELECT trans_num, is_fraud, label_reported_at FROM {}.transactions WHERE trans_num IN ('legacy-0', 'legacy-1') ALLOW FILTERING",
                names.keyspace
            ),
        )
        .await;
        rows.sort();
        rows
    };
    assert_eq!(
        shown().await,
        vec![("legacy-0".into(), Some(1), Some(t0 + 86_400)), ("legacy-1".into(), Some(0), Some(t0 + 2 * 86_400)),],
        "a label over the old release's rows, by report order"
    );
    put(&serve, "labels", legacy_labels(&[(1, 1, t0 + 3 * 86_400)])).await;
    assert_eq!(shown().await[1], ("legacy-1".into(), Some(1), Some(t0 + 3 * 86_400)), "the newer report wins");
    let history: Vec<(String, Option<f64>)> =
        stack::select(&session, format!("SELECT trans_num, card_tx_1d FROM {}.transactions", names.keyspace)).await;
    let written: Vec<_> = history.iter().filter(|(n, _)| !n.starts_with("legacy-")).collect();
    assert_eq!(written.len(), records.len());
    assert!(written.iter().all(|(_, v)| v.is_some()), "history columns written");
    assert!(serve.terminate().success());
}

#[tokio::test]
#[ignore = "needs OpenSearch (make test-services starts it)"]
async fn search_data_past_its_retention_is_deleted_at_start() {
    // Live quality's documents older than retention.quality_days go at
    // start and every hour after; outcome indices younger than
    // retention.outcomes_days stay (an index's creation date cannot be set
    // from outside, so the deletion of an old one is not tried here).
    let names = Names::new("retain");
    let quality_index = format!("{}-quality", names.keyspace.replace('_', "-"));
    let outcomes = format!("{}-tx", names.keyspace.replace('_', "-"));
    let client = stack::opensearch();
    let day_ms = 86_400_000_i64;
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (id, computed_at) in [("old", now_ms - 30 * day_ms), ("recent", now_ms - day_ms)] {
        let sent = client
            .index(opensearch::IndexParts::IndexId(&quality_index, id))
            .body(serde_json::json!({"version": "v", "computed_at": computed_at}))
            .refresh(opensearch::params::Refresh::True)
            .send()
            .await
            .unwrap();
        assert!(sent.status_code().is_success(), "{id}: {}", sent.text().await.unwrap());
    }
    let today = format!("{outcomes}-{}", chrono::Utc::now().format("%Y.%m.%d"));
    let created = client.indices().create(opensearch::indices::IndicesCreateParts::Index(&today)).send().await.unwrap();
    assert!(created.status_code().is_success());

    let mut env = env(&names);
    for (k, v) in [
        ("FRAUDFLIGHT_CASSANDRA_NODES", String::new()),
        ("FRAUDFLIGHT_OPENSEARCH_URL", support::opensearch_url()),
        ("FRAUDFLIGHT_OPENSEARCH_INDEX_PREFIX", outcomes.clone()),
        ("FRAUDFLIGHT_OPENSEARCH_QUALITY_INDEX", quality_index.clone()),
        ("FRAUDFLIGHT_RETENTION_QUALITY_DAYS", "7".into()),
        ("FRAUDFLIGHT_RETENTION_OUTCOMES_DAYS", "7".into()),
    ] {
        env.retain(|(key, _)| key != k);
        env.push((k.into(), v));
    }
    let serve = Serve::start(&env);
    let ids = || async {
        let _ =
            client.indices().refresh(opensearch::indices::IndicesRefreshParts::Index(&[&quality_index])).send().await;
        let found = stack::search(&client, &quality_index, serde_json::json!({"query": {"match_all": {}}})).await;
        let mut ids: Vec<String> =
            found["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    stack::wait_until(std::time::Duration::from_secs(30), "the old quality document deleted", || async {
        ids().await == ["recent"]
    })
    .await;
    let exists = client
        .indices()
        .exists(opensearch::indices::IndicesExistsParts::Index(&[&today]))
        .send()
        .await
        .unwrap()
        .status_code();
    assert_eq!(exists.as_u16(), 200, "today's outcome index is kept");
    assert!(!serve.log_text().contains("cannot delete search data"), "{}", serve.log_text());
    assert!(serve.terminate().success());
    for index in [&quality_index, &today] {
        let _ = client.indices().delete(opensearch::indices::IndicesDeleteParts::Index(&[index])).send().await;
    }
}

#[tokio::test]
#[ignore = "needs OpenSearch (make test-services starts it)"]
async fn an_outcome_index_of_an_earlier_release_is_upgraded_at_start() {
    // Today's outcome index as commit 8c1b7e4 created it (its template kept
    // in tests/fixtures/): without `label_by`, `shadow_version`, ... mapped,
    // a term query on them finds nothing in it until tomorrow's index.
    let names = Names::new("index_upgrade");
    let prefix = format!("{}-tx", names.keyspace.replace('_', "-"));
    let today = format!("{prefix}-{}", chrono::Utc::now().format("%Y.%m.%d"));
    let old: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/fixtures/opensearch-template-8c1b7e4.json",
            support::manifest_dir()
        ))
        .unwrap(),
    )
    .unwrap();
    let client = stack::opensearch();
    let created = client
        .indices()
        .create(opensearch::indices::IndicesCreateParts::Index(&today))
        .body(serde_json::json!({"mappings": old["template"]["mappings"]}))
        .send()
        .await
        .unwrap();
    assert!(created.status_code().is_success(), "{}", created.text().await.unwrap());
    let mapped = || async {
        let response = client
            .indices()
            .get_mapping(opensearch::indices::IndicesGetMappingParts::Index(&[&today]))
            .send()
            .await
            .unwrap();
        let mapping: serde_json::Value = response.json().await.unwrap();
        mapping[&today]["mappings"]["properties"].clone()
    };
    assert!(mapped().await.get("label_by").is_none(), "the earlier release did not map label_by");

    let mut env = env(&names);
    for (k, v) in [
        ("FRAUDFLIGHT_CASSANDRA_NODES", String::new()),
        ("FRAUDFLIGHT_OPENSEARCH_URL", support::opensearch_url()),
        ("FRAUDFLIGHT_OPENSEARCH_INDEX_PREFIX", prefix.clone()),
    ] {
        env.retain(|(key, _)| key != k);
        env.push((k.into(), v));
    }
    let serve = Serve::start(&env);
    // Every field of the current template is mapped, as the template maps it.
    let current: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/scripts/schema/opensearch-template.json", support::manifest_dir()))
            .unwrap(),
    )
    .unwrap();
    let properties = mapped().await;
    for (field, want) in current["template"]["mappings"]["properties"].as_object().unwrap() {
        assert_eq!(properties[field]["type"], want["type"], "{field}: {properties}");
    }
    assert!(serve.log_text().contains("upgrading an index an earlier release created"), "{}", serve.log_text());
    assert!(serve.terminate().success());
    let _ = client.indices().delete(opensearch::indices::IndicesDeleteParts::Index(&[&today])).send().await;
}
