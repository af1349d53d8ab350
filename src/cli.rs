//! The command line: argument definitions (clap) and dispatch into the
//! library. `main.rs` calls [`run`] and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::simulate::output::{self, CsvWriter, ParquetWriter, TransactionWriter};
use crate::simulate::{SimConfig, Simulator};

#[derive(Debug, Parser)]
#[command(name = "fraudflight", version, about = "Real-time credit-card fraud scoring over Arrow Flight")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The embedded default: simulator -> scorer -> in-memory store, with
    /// Flight and HTTP. No external services needed.
    Demo(DemoArgs),
    /// Generate simulated transactions to CSV (Kaggle layout) and/or Parquet.
    Simulate(SimulateArgs),
    /// Query a running server over Flight.
    Query(crate::query::QueryArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated transactions per second (0 = none; score only what clients send).
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model directory (model.onnx + model.json); default: newest under models/.
    #[arg(long, env = "FRAUDFLIGHT_MODEL")]
    pub model: Option<PathBuf>,
    /// Flight listen address.
    #[arg(long, env = "FRAUDFLIGHT_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    pub flight_addr: SocketAddr,
    /// Dashboard / API listen address.
    #[arg(long, env = "FRAUDFLIGHT_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// ONNX Runtime sessions per model (parallel scoring of concurrent batches).
    #[arg(long, default_value_t = 2)]
    pub sessions: usize,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Seed of the generator: the same seed always gives the same stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of transactions to write.
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    /// Number of customers (cards) in the simulated population.
    #[arg(long, default_value_t = 2_000)]
    pub customers: usize,
    /// First simulated day, YYYY-MM-DD (UTC).
    #[arg(long, default_value = "2025-01-01")]
    pub start: String,
    /// Write a CSV file in the Kaggle fraudTrain.csv layout.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write a Parquet file in the record schema.
    #[arg(long)]
    pub parquet: Option<PathBuf>,
}

impl SimulateArgs {
    pub fn sim_config(&self) -> anyhow::Result<SimConfig> {
        let start = crate::score::features::parse_date(&self.start)
            .ok_or_else(|| anyhow::anyhow!("--start {:?} is not a date in YYYY-MM-DD form", self.start))?;
        Ok(SimConfig {
            seed: self.seed,
            customers: self.customers,
            start_unix: start.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp(),
            ..SimConfig::default()
        })
    }
}

/// Parses the arguments and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => runtime()?.block_on(demo(args)),
        Command::Simulate(args) => simulate(args),
        Command::Query(args) => runtime()?.block_on(crate::query::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let config = crate::demo::DemoConfig {
        model_dir: crate::demo::default_model_dir(args.model)?,
        flight_addr: args.flight_addr,
        http_addr: args.http_addr,
        rate: args.rate,
        seed: args.seed,
        sessions: args.sessions,
    };
    let running = crate::demo::start(config).await?;
    running.shutdown.on_signals();
    // One machine-readable line on stdout, for scripts and tests that start
    // the demo on port 0.
    println!("READY flight=grpc://{} http=http://{}", running.flight_addr, running.http_addr);
    running.wait().await;
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let mut writers: Vec<Box<dyn TransactionWriter>> = Vec::new();
    if let Some(path) = &args.csv {
        writers.push(Box::new(CsvWriter::create(path)?));
    }
    if let Some(path) = &args.parquet {
        writers.push(Box::new(ParquetWriter::create(path)?));
    }
    if writers.is_empty() {
        anyhow::bail!("simulate needs an output: --csv FILE and/or --parquet FILE");
    }
    let started = std::time::Instant::now();
    output::write_all(Simulator::new(args.sim_config()?), args.count, writers)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(count = args.count, seconds = secs, rate = args.count as f64 / secs, "simulation written");
    Ok(())
}
