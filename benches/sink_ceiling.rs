//! Each sink's ceiling on this machine: the outcomes of simulated
//! transactions, scored once beforehand, written through the fan-out `serve`
//! uses (`sink::Sinks::write`) with only Cassandra, only
//! OpenSearch, or both at once, with the client settings `serve` uses (the
//! configuration's defaults plus any FRAUDFLIGHT_* variables) and as many
//! batches in flight as `serve` keeps (`kafka.max_in_flight_batches` of
//! `kafka.batch_max_records` each). The full-pipeline benchmark
//! (benches/kafka_pipeline.py) compares `serve` with both sinks on against
//! the slower sink alone, and against both sinks at once without Kafka or
//! scoring (what two sinks sharing this machine's cores can take).
//!
//!   cargo bench --bench sink_ceiling -- write cassandra|opensearch|both RECORDS REPEATS
//!   cargo bench --bench sink_ceiling -- count KEYSPACE
//!   cargo bench --bench sink_ceiling -- drop KEYSPACE
//!
//! `write` prints one JSON line: the sink, records, and records/s of each
//! repeat (each a different slice of the simulated stream, so every write is
//! an insert, not an overwrite) and their median. Needs the services
//! (scripts/services.sh up). `count` prints the rows of KEYSPACE.transactions
//! (the pipeline benchmark's zero-loss check); `drop` removes a benchmark's keyspace.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use arrow::record_batch::RecordBatch;
use fraudflight::config::Config;
use fraudflight::record;
use fraudflight::score::registry::Registry;
use fraudflight::score::{ScoreOptions, Scorer};
use fraudflight::simulate::{SimConfig, Simulator};
use fraudflight::sink::cassandra::Cassandra;
use fraudflight::sink::search::Search;
use fraudflight::sink::Sinks;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Outcome batches of `records` simulated transactions starting at `skip`,
/// in batches of `batch` rows, scored with the configured (or shipped) model.
fn outcomes(config: &Config, skip: usize, records: usize, batch: usize) -> anyhow::Result<Vec<RecordBatch>> {
    let dir = match config.model_dir() {
        Some(dir) => dir,
        None => fraudflight::score::registry::model_dir_or_newest(None).context("no model")?,
    };
    let scorer = Scorer::new(Arc::new(Registry::open(&dir, 1)?));
    let txns: Vec<_> =
        Simulator::new(SimConfig { seed: 11, ..SimConfig::default() }).skip(skip).take(records).collect();
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
        "cassandra" => (true, false),
        "opensearch" => (false, true),
        "both" => (true, true),
        other => bail!("unknown sink `{other}` (cassandra, opensearch or both)"),
    };
    let cassandra =
        if cassandra { Some(Arc::new(Cassandra::connect(&config.cassandra, &abandon).await?)) } else { None };
    let search = if search { Some(Arc::new(Search::connect(&config.opensearch, &abandon).await?)) } else { None };
    let sinks = Arc::new(Sinks::new(cassandra, search, None));
    let write_one = |outcomes: RecordBatch| {
        let (sinks, abandon) = (sinks.clone(), abandon.clone());
        async move {
            let written = sinks.write(&outcomes, Vec::new(), &abandon).await?;
            anyhow::ensure!(written.dead_letters == 0, "{} outcomes refused", written.dead_letters);
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

/// Rows of KEYSPACE.transactions, counted page by page (one `count(*)` over
/// a few hundred thousand rows can outlast the server's range timeout while
/// Cassandra is still flushing what the benchmark wrote); retried a few times.
async fn count(keyspace: &str) -> anyhow::Result<()> {
    let session = session().await?;
    let mut attempt = 0;
    let n = loop {
        attempt += 1;
        let counted = async {
            let mut statement =
                scylla::statement::unprepared::Statement::new(format!("SELECT trans_num FROM {keyspace}.transactions"));
            statement.set_page_size(5_000);
            let mut rows = session.query_iter(statement, &[]).await?.rows_stream::<(String,)>()?;
            let mut n: u64 = 0;
            while let Some(row) = rows.next().await {
                row?;
                n += 1;
            }
            anyhow::Ok(n)
        };
        match counted.await {
            Ok(n) => break n,
            Err(e) if attempt < 5 => {
                eprintln!("counting {keyspace}.transactions failed ({e}); retrying");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    };
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
        other => bail!("usage: sink_ceiling write cassandra|opensearch|both RECORDS REPEATS | count KEYSPACE | drop KEYSPACE (got {other:?})"),
    }
}
