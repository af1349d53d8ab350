//! Smoke test of the real OpenSearch from `scripts/services.sh`: create an
//! index with a geo_point mapping, bulk-index 1,000 documents with the
//! opensearch crate, then count and search them. Run by `make test-services`.

mod support;

use opensearch::http::request::JsonBody;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::{IndicesCreateParts, IndicesDeleteParts};
use opensearch::params::Refresh;
use opensearch::{BulkParts, CountParts, OpenSearch};
use serde_json::{json, Value};

#[tokio::test]
#[ignore = "needs OpenSearch: scripts/services.sh up opensearch (make test-services runs it)"]
async fn bulk_index_and_search_a_thousand_documents() {
    let url = support::opensearch_url().parse().expect("URL");
    let client = OpenSearch::new(TransportBuilder::new(SingleNodeConnectionPool::new(url)).build().expect("transport"));
    let index = support::unique("smoke").to_lowercase();
    let created = client
        .indices()
        .create(IndicesCreateParts::Index(&index))
        .body(json!({"mappings": {"properties": {
            "category": {"type": "keyword"}, "amt": {"type": "float"}, "location": {"type": "geo_point"}}}}))
        .send()
        .await
        .expect("create index");
    assert!(created.status_code().is_success(), "{:?}", created.text().await);

    let mut body: Vec<JsonBody<Value>> = Vec::with_capacity(2_000);
    for i in 0..1_000 {
        body.push(json!({"index": {"_id": format!("doc-{i}")}}).into());
        let category = if i % 4 == 0 { "misc_net" } else { "grocery_pos" };
        body.push(json!({"category": category, "amt": i as f64, "location": {"lat": 40.0, "lon": -74.0}}).into());
    }
    let response = client.bulk(BulkParts::Index(&index)).body(body).refresh(Refresh::True).send().await.expect("bulk");
    let result: Value = response.json().await.expect("bulk JSON");
    assert_eq!(result["errors"], json!(false), "{result}");
    assert_eq!(result["items"].as_array().unwrap().len(), 1_000);

    let count: Value = client.count(CountParts::Index(&[&index])).send().await.unwrap().json().await.unwrap();
    assert_eq!(count["count"], json!(1_000));
    let query = json!({"size": 0, "query": {"term": {"category": "misc_net"}}, "track_total_hits": true});
    let found = support::stack::search(&client, &index, query).await;
    assert_eq!(found["hits"]["total"]["value"], json!(250));
    client.indices().delete(IndicesDeleteParts::Index(&[&index])).send().await.expect("delete index");
}
