//! The saved objects under dashboards/ against a real OpenSearch: `serve`
//! installs its index template and indexes real outcomes, then
//! dashboards/check.py asks the cluster's `_field_caps` whether every field
//! a visualisation, search or map uses exists with a type that use accepts.
//! The same check run on an index mapped differently must fail, naming the
//! fields. The "Model quality" objects are checked against the live quality
//! index `serve` writes. Needs Kafka and OpenSearch (`make test-services`) and the
//! project's Python environment (`make setup`).

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use support::stack::{self, Names, Serve};

const N: usize = 2_000;

fn check(index: &str, quality_index: &str) -> Output {
    let root = &support::manifest_dir();
    Command::new(format!("{root}/.venv/bin/python"))
        .args([
            &format!("{root}/dashboards/check.py"),
            "--opensearch",
            &support::opensearch_url(),
            "--index",
            index,
            "--quality-index",
            quality_index,
        ])
        .output()
        .expect("the project's Python environment (.venv; make setup) runs dashboards/check.py")
}

#[tokio::test]
#[ignore = "needs Kafka and OpenSearch (make test-services starts them)"]
async fn every_field_the_dashboards_use_exists_in_the_live_index_with_an_accepted_type() {
    let names = Names::new("dash");
    // Kafka in, OpenSearch out (Cassandra off): the documents as the pipeline writes them.
    // Live quality (measured each second) goes to an index of its own.
    let quality_index = format!("{}-quality", names.keyspace.replace('_', "-"));
    let mut env: Vec<(String, String)> = names
        .env()
        .into_iter()
        .map(|(k, v)| if k == "FRAUDFLIGHT_CASSANDRA_NODES" { (k, String::new()) } else { (k, v) })
        .collect();
    env.push(("FRAUDFLIGHT_QUALITY_INTERVAL_MS".into(), "1000".into()));
    env.push(("FRAUDFLIGHT_OPENSEARCH_QUALITY_INDEX".into(), quality_index.clone()));
    stack::create_topic(&names.topic, 1).await;
    stack::produce(&names.topic, &stack::simulated(11, N)).await;
    let serve = Serve::start(&env);
    let os = stack::opensearch();
    stack::wait_for_documents(&os, &names, N, Duration::from_secs(300), "2,000 documents").await;

    stack::wait_until(Duration::from_secs(60), "live quality documents", || {
        let (os, index) = (&os, quality_index.as_str());
        async move {
            let _ = os.indices().refresh(opensearch::indices::IndicesRefreshParts::Index(&[index])).send().await;
            let count: Value = match os.count(opensearch::CountParts::Index(&[index])).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            count["count"].as_u64().unwrap_or(0) > 0
        }
    })
    .await;
    let live = check(&format!("{}-*", names.index_prefix), &quality_index);
    let out = String::from_utf8_lossy(&live.stdout).to_string() + &String::from_utf8_lossy(&live.stderr);
    assert!(live.status.success(), "saved objects do not fit the live index:\n{out}");
    assert!(out.contains("ok: 0 problem(s)"), "{out}");

    // The same saved objects against an index where `amt` is text-like and
    // `location` is missing: the live check must name both.
    let template: Value =
        serde_json::from_str(include_str!("../scripts/schema/opensearch-template.json")).expect("template is JSON");
    let mut properties = template["template"]["mappings"]["properties"].clone();
    properties["amt"] = json!({ "type": "keyword" });
    properties.as_object_mut().unwrap().remove("location");
    let wrong = format!("{}wrong", names.index_prefix);
    let created = os
        .indices()
        .create(opensearch::indices::IndicesCreateParts::Index(&wrong))
        .body(json!({ "mappings": { "dynamic": false, "properties": properties } }))
        .send()
        .await
        .expect("create index");
    assert!(created.status_code().is_success(), "{:?}", created.text().await);
    let bad = check(&wrong, &quality_index);
    let out = String::from_utf8_lossy(&bad.stdout).to_string() + &String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "the check passed an index without `location`:\n{out}");
    assert!(out.contains("field location, which the index does not have"), "{out}");
    assert!(out.contains("on amt needs one of"), "{out}");

    assert!(serve.terminate().success());
}
