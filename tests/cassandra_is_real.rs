//! Smoke test of the real Cassandra from `scripts/services.sh`: create a
//! keyspace and a table with the scylla driver, write 1,000 rows with a
//! prepared statement, read them back (logged in: the local node requires
//! it); and the sink's own queries. Run by `make test-services`.

mod support;

use scylla::client::session::Session;

#[tokio::test]
#[ignore = "needs Cassandra: scripts/services.sh up cassandra (make test-services runs it)"]
async fn round_trip_a_thousand_rows() {
    let session: Session = support::stack::cassandra().await;
    let ks = support::unique("smoke").to_lowercase();
    session
        .query_unpaged(
            format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"),
            &[],
        )
        .await
        .expect("create keyspace");
    session
        .query_unpaged(format!("CREATE TABLE {ks}.rows (card text, n int, amt double, PRIMARY KEY ((card), n))"), &[])
        .await
        .expect("create table");
    let insert =
        session.prepare(format!("INSERT INTO {ks}.rows (card, n, amt) VALUES (?, ?, ?)")).await.expect("prepare");
    for n in 0..1_000i32 {
        let card = format!("card-{}", n % 10);
        session.execute_unpaged(&insert, (card, n, n as f64 * 1.5)).await.expect("insert");
    }
    let rows = session
        .query_unpaged(format!("SELECT n, amt FROM {ks}.rows WHERE card = 'card-3'"), &[])
        .await
        .expect("select")
        .into_rows_result()
        .expect("rows");
    let mut got: Vec<(i32, f64)> = rows.rows::<(i32, f64)>().expect("typed rows").map(Result::unwrap).collect();
    got.sort_by_key(|r| r.0);
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|(n, amt)| n % 10 == 3 && *amt == *n as f64 * 1.5));
    let count = session
        .query_unpaged(format!("SELECT count(*) FROM {ks}.rows"), &[])
        .await
        .expect("count")
        .into_rows_result()
        .expect("rows")
        .single_row::<(i64,)>()
        .expect("one row")
        .0;
    assert_eq!(count, 1_000);
    session.query_unpaged(format!("DROP KEYSPACE {ks}"), &[]).await.expect("drop keyspace");
}

#[tokio::test]
#[ignore = "needs Cassandra: scripts/services.sh up cassandra (make test-services runs it)"]
async fn the_sink_answers_recent_with_an_error_not_a_panic() {
    // `recent` has no answer in Cassandra (no global order); this public
    // method used to reach `unreachable!` and take the caller down.
    let config = support::cassandra_config(&support::unique("recent").to_lowercase());
    let abandon = tokio_util::sync::CancellationToken::new();
    let sink = fraudflight::sink::cassandra::Cassandra::connect(&config, &abandon).await.expect("connect the sink");
    let err = sink.query(&fraudflight::store::Query::Recent { limit: 10 }).await.unwrap_err().to_string();
    assert!(err.contains("recent"), "{err}");
    let alerts = sink.query(&fraudflight::store::Query::Alerts { limit: 10 }).await.expect("alerts still answer");
    assert_eq!(alerts.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    support::stack::cassandra()
        .await
        .query_unpaged(format!("DROP KEYSPACE {}", config.keyspace), &[])
        .await
        .expect("drop keyspace");
}
