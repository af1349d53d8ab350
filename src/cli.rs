//! The command line: argument definitions (clap) and dispatch into the
//! library. `main.rs` calls [`run`] and nothing else.

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
    /// Generate simulated transactions to CSV (Kaggle layout) and/or Parquet.
    Simulate(SimulateArgs),
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
        Command::Simulate(args) => simulate(args),
    }
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
