//! Each sink's ceiling on this machine, measured alone: the outcomes of
//! simulated transactions, scored once beforehand, written straight to
//! Cassandra (`Cassandra::write`) or to OpenSearch (`Search::write`) with the
//! client settings `serve` uses (the configuration's defaults plus any
//! FRAUDFLIGHT_* variables) and as many batches in flight as `serve` keeps
//! (`kafka.max_in_flight_batches` of `kafka.batch_max_records` each). The
//! full-pipeline benchmark (benches/kafka_pipeline.py) compares `serve` with
//! both sinks on against the slower of these.
//!
//!   cargo bench --bench sink_ceiling -- write cassandra|opensearch RECORDS REPEATS
//!   cargo bench --bench sink_ceiling -- count KEYSPACE
//!   cargo bench --bench sink_ceiling -- drop KEYSPACE
//!
//! `write` prints one JSON line: the sink, records, and records/s of each
//! repeat (each a different slice of the simulated stream, so every write is
//! an insert, not an overwrite) and their median. Needs the service
//! (scripts/services.sh up). `count` prints the rows of KEYSPACE.transactions
//! (the pipeline benchmark's zero-loss check); `drop` removes a benchmark's keyspace.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use fraudflight::cassandra::Cassandra;
use fraudflight::config::Config;
use fraudflight::record;
use fraudflight::score::registry::Registry;
use fraudflight::score::{ScoreOptions, Scorer};
use fraudflight::search::Search;
use fraudflight::simulate::{SimConfig, Simulator};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Outcome batches of `records` simulated transactions starting at `skip`,
/// in batches of `batch` rows, scored with the configured (or shipped) model.
fn outcomes(config: &Config, skip: usize, records: usize, batch: usize) -> anyhow::Result<Vec<RecordBatch>> {
    let dir = match config.model_dir() {
        Some(dir) => dir,
        None => fraudflight::demo::default_model_dir(None).context("no model")?,
    };
    let scorer = Scorer::new(Arc::new(Registry::open(&dir, 1)?));
    let txns: Vec<_> = Simulator::new(SimConfig { seed: 11, ..SimConfig::default() }).skip(skip).take(records).collect();
    txns.chunks(batch)
        .map(|chunk| Ok(scorer.score(&record::to_batch(chunk), &ScoreOptions::default())?.outcomes))
        .collect()
}

/// Records/s of writing `batches` through `write`, `in_flight` batches at once.
async fn timed<F, Fut>(batches: &[RecordBatch], in_flight: usize, write: F) -> anyhow::Result<f64>
where
    F: Fn(RecordBatch) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let start = Instant::now();
    let mut writes = futures::stream::iter(batches.iter().cloned().map(&write)).buffer_unordered(in_flight);
    while let Some(result) = writes.next().await {
        result?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

async fn write(sink: &str, records: usize, repeats: usize) -> anyhow::Result<()> {
    let config = Config::load(None, |k| std::env::var(k).ok())?;
    let (batch, in_flight) = (config.kafka.batch_max_records, config.kafka.max_in_flight_batches);
    let abandon = CancellationToken::new();
    let (cassandra, search) = match sink {
        "cassandra" => (Some(Arc::new(Cassandra::connect(&config.cassandra, &abandon).await?)), None),
        "opensearch" => (None, Some(Arc::new(Search::connect(&config.opensearch, &abandon).await?))),
        other => bail!("unknown sink `{other}` (cassandra or opensearch)"),
    };
    let write_one = |outcomes: RecordBatch| {
        let (cassandra, search, abandon) = (cassandra.clone(), search.clone(), abandon.clone());
        async move {
            if let Some(c) = cassandra {
                c.write(&outcomes, &abandon).await?;
            }
            if let Some(s) = search {
                let refused = s.write(&outcomes, &abandon).await?;
                anyhow::ensure!(refused.is_empty(), "OpenSearch refused {} documents", refused.len());
            }
            Ok(())
        }
    };
    // Warm-up: connections, prepared statements, the day's index created.
    timed(&outcomes(&config, 0, batch * in_flight, batch)?, in_flight, write_one).await?;
    let mut rates = Vec::new();
    for r in 0..repeats {
        let batches = outcomes(&config, batch * in_flight + r * records, records, batch)?;
        rates.push(timed(&batches, in_flight, write_one).await?);
        eprintln!("{sink}: repeat {} of {repeats}: {:.0} records/s", r + 1, rates[r]);
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let line = serde_json::json!({
        "sink": sink, "records": records, "batch_records": batch, "in_flight_batches": in_flight,
        "records_per_second": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "median_records_per_second": median.round(),
    });
    println!("{line}");
    Ok(())
}

async fn session() -> anyhow::Result<scylla::client::session::Session> {
    let config = Config::load(None, |k| std::env::var(k).ok())?;
    let mut builder = scylla::client::session_builder::SessionBuilder::new().known_nodes(config.cassandra.node_list());
    if !config.cassandra.username.is_empty() {
        builder = builder.user(&config.cassandra.username, config.cassandra.password.expose());
    }
    Ok(builder.build().await?)
}

async fn count(keyspace: &str) -> anyhow::Result<()> {
    let session = session().await?;
    let mut statement = scylla::statement::unprepared::Statement::new(format!("SELECT count(*) FROM {keyspace}.transactions"));
    statement.set_request_timeout(Some(std::time::Duration::from_secs(120)));
    let rows = session.query_unpaged(statement, &[]).await?.into_rows_result()?;
    let (n,): (i64,) = rows.single_row()?;
    println!("{n}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let runtime = tokio::runtime::Runtime::new()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["write", sink, records, repeats] => runtime.block_on(write(sink, records.parse()?, repeats.parse()?)),
        ["count", keyspace] => runtime.block_on(count(keyspace)),
        ["drop", keyspace] => runtime.block_on(async {
            session().await?.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[]).await?;
            Ok(())
        }),
        [] => Ok(()), // `cargo bench` with no arguments runs every bench: nothing to do here.
        other => bail!("usage: sink_ceiling write cassandra|opensearch RECORDS REPEATS | count KEYSPACE | drop KEYSPACE (got {other:?})"),
    }
}
