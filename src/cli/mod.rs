//! The command line: argument definitions (clap) and dispatch into the
//! library. `main.rs` calls [`run`] and nothing else. Long work (`simulate`,
//! `replay`) shows [`progress`] on a terminal and ends with a sentence.

pub mod explain;
mod progress;
pub mod query;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::simulate::output::{self, CsvWriter, ParquetWriter, TransactionWriter};
use crate::simulate::{FraudModel, SimConfig, Simulator};

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
    /// The production path: Kafka in, score, Cassandra + OpenSearch out,
    /// Flight and HTTP (configuration: a TOML file and FRAUDFLIGHT_* variables).
    Serve(ServeArgs),
    /// Generate simulated transactions to Kafka, CSV (Kaggle layout) and/or Parquet.
    Simulate(SimulateArgs),
    /// Stream a CSV file in the Kaggle fraudTrain.csv layout into Kafka.
    Replay(ReplayArgs),
    /// Query a running server over Flight.
    Query(crate::cli::query::QueryArgs),
    /// Explain a model's scores of rows (its parity rows by default): each
    /// input's TreeSHAP value, as JSON lines.
    Explain(crate::cli::explain::ExplainArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated transactions per second (0 = none; score only what clients send).
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The fraud the simulator injects: sparkov (visible in single
    /// transactions) or handbook (visible in history; pair it with
    /// --model models/handbook/gbt-handbook-history-v1).
    #[arg(long, value_enum, default_value_t = FraudModel::Sparkov)]
    pub fraud: FraudModel,
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
pub struct ServeArgs {
    /// TOML configuration file (see fraudflight.toml for every key).
    #[arg(long, env = "FRAUDFLIGHT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration (file and environment), print it, and exit.
    #[arg(long)]
    pub check_config: bool,
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
    /// The fraud injected: sparkov (episodes visible in single transactions)
    /// or handbook (compromised merchants, stolen numbers and cards, card
    /// testing: visible in history).
    #[arg(long, value_enum, default_value_t = FraudModel::Sparkov)]
    pub fraud: FraudModel,
    /// Also send a label for every fraud to `<topic>.labels`, reported 1
    /// hour to 20 days after it (three in four within 6 days), each sent
    /// once the stream has passed its report time (Kafka only).
    #[arg(long)]
    pub labels: bool,
    /// Write a CSV file in the Kaggle fraudTrain.csv layout.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write a Parquet file in the record schema.
    #[arg(long)]
    pub parquet: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaOut,
}

/// Where and how fast to write transactions to Kafka.
#[derive(Debug, Args)]
pub struct KafkaOut {
    /// Kafka bootstrap servers; set = write to Kafka (key cc_num, JSON value).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic to write to.
    #[arg(long, env = "FRAUDFLIGHT_KAFKA_TOPIC", default_value = "transactions")]
    pub topic: String,
    /// Create the topic with this many partitions if it does not exist
    /// (default: the broker's auto-creation settings).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Records per second (0 = as fast as Kafka takes them).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Extra librdkafka producer property, key=value (repeatable), e.g.
    /// security.protocol=SASL_SSL.
    #[arg(long = "kafka-property", value_parser = crate::config::parse_property)]
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// CSV file in the Kaggle / Sparkov fraudTrain.csv layout.
    pub file: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaOut,
}

impl SimulateArgs {
    pub fn sim_config(&self) -> anyhow::Result<SimConfig> {
        let start = crate::features::parse_date(&self.start)
            .ok_or_else(|| anyhow::anyhow!("--start {:?} is not a date in YYYY-MM-DD form", self.start))?;
        Ok(SimConfig {
            seed: self.seed,
            customers: self.customers,
            fraud: self.fraud,
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
        Command::Serve(args) => serve(args),
        Command::Simulate(args) => simulate(args),
        Command::Replay(args) => runtime()?.block_on(replay(args)),
        Command::Query(args) => runtime()?.block_on(crate::cli::query::run(args)),
        Command::Explain(args) => crate::cli::explain::run(args),
    }
}

/// Sends `records` (`expected` of them, when known) and says how it went.
async fn send_to_kafka(
    brokers: &str,
    out: &KafkaOut,
    records: impl Iterator<Item = crate::record::Transaction>,
    expected: Option<u64>,
) -> anyhow::Result<()> {
    if let Some(partitions) = out.partitions {
        crate::kafka::ensure_topics(brokers, &out.properties, std::slice::from_ref(&out.topic), partitions).await;
    }
    let producer = crate::kafka::producer::TransactionProducer::new(brokers, &out.topic, &out.properties)?;
    let progress = progress::Progress::new(expected);
    let report = producer.send_all(records.inspect(|_| progress.tick()), Some(out.rate)).await?;
    eprintln!("{}", progress.finish(report.delivered, &format!("sent to Kafka topic {}", out.topic)));
    Ok(())
}

/// Sends the simulator's fraud reports to `<topic>.labels` as the stream
/// passes their report times.
struct LabelSender {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
    reporter: std::cell::RefCell<crate::simulate::labels::Reporter>,
    sent: std::cell::RefCell<Vec<rdkafka::producer::DeliveryFuture>>,
}

impl LabelSender {
    fn new(brokers: &str, out: &KafkaOut, seed: u64) -> anyhow::Result<Self> {
        let config =
            crate::kafka::producer_config(brokers, &[("queue.buffering.max.messages", "500000")], &out.properties);
        Ok(Self {
            producer: config.create()?,
            topic: format!("{}.labels", out.topic),
            reporter: crate::simulate::labels::Reporter::new(seed).into(),
            sent: Vec::new().into(),
        })
    }

    fn observe(&self, t: &crate::record::Transaction) {
        let due = self.reporter.borrow_mut().observe(t);
        self.send(due);
    }

    fn send(&self, reports: Vec<crate::simulate::labels::Report>) {
        for r in reports {
            let value = r.to_json();
            let mut record = rdkafka::producer::FutureRecord::to(&self.topic).key(&r.cc_num).payload(&value);
            // A full queue empties as Kafka acknowledges: wait and retry.
            let future = loop {
                match self.producer.send_result(record) {
                    Ok(f) => break f,
                    Err((e, back)) => {
                        tracing::debug!(error = %e, "labels queue full; waiting");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        record = back;
                    }
                }
            };
            self.sent.borrow_mut().push(future);
        }
    }

    /// Sends the reports still waiting and waits for every acknowledgement.
    async fn finish(self) -> anyhow::Result<()> {
        let rest = self.reporter.borrow_mut().rest();
        self.send(rest);
        let sent = self.sent.take();
        let n = sent.len();
        let mut failed = 0;
        for delivery in sent {
            if !matches!(delivery.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        if failed > 0 {
            anyhow::bail!("{failed} of {n} labels were not delivered to {}", self.topic);
        }
        eprintln!("{n} labels sent to Kafka topic {}", self.topic);
        Ok(())
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let brokers = args.kafka.brokers.clone().ok_or_else(|| anyhow::anyhow!("replay needs --brokers HOST:PORT"))?;
    let mut rejected = Vec::new();
    let rows = crate::record::kaggle_csv::KaggleCsv::open(&args.file)?.filter_map(|row| match row {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "row not replayed");
            rejected.push(e.to_string());
            None
        }
    });
    send_to_kafka(&brokers, &args.kafka, rows, None).await?;
    if let Some(first) = rejected.first() {
        anyhow::bail!(
            "{} row(s) of {} could not be read and were not sent; first: {first}",
            rejected.len(),
            args.file.display()
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let config = crate::demo::DemoConfig {
        model_dir: crate::score::registry::model_dir_or_newest(args.model)?,
        flight_addr: args.flight_addr,
        http_addr: args.http_addr,
        rate: args.rate,
        seed: args.seed,
        fraud: args.fraud,
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

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = crate::config::Config::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
    if args.check_config {
        println!("{}", toml::to_string_pretty(&config.redacted())?);
        return Ok(());
    }
    runtime()?.block_on(async {
        let shutdown = crate::shutdown::Shutdown::default();
        shutdown.on_signals();
        let running = crate::serve::start(config, shutdown).await?;
        let (grpc, http) = if running.tls { ("grpc+tls", "https") } else { ("grpc", "http") };
        println!("READY flight={grpc}://{} http={http}://{}", running.flight_addr, running.http_addr);
        running.wait().await;
        Ok(())
    })
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(brokers) = &args.kafka.brokers {
        if args.csv.is_some() || args.parquet.is_some() {
            anyhow::bail!("simulate writes to Kafka or to files, not both in one run");
        }
        let source = Simulator::new(args.sim_config()?).take(args.count);
        if !args.labels {
            return runtime()?.block_on(send_to_kafka(brokers, &args.kafka, source, Some(args.count as u64)));
        }
        return runtime()?.block_on(async {
            let labels = LabelSender::new(brokers, &args.kafka, args.seed)?;
            let source = source.inspect(|t| labels.observe(t));
            send_to_kafka(brokers, &args.kafka, source, Some(args.count as u64)).await?;
            labels.finish().await
        });
    }
    if args.labels {
        anyhow::bail!("--labels sends labels to Kafka `<topic>.labels`: it needs --brokers HOST:PORT");
    }
    let mut writers: Vec<Box<dyn TransactionWriter>> = Vec::new();
    if let Some(path) = &args.csv {
        writers.push(Box::new(CsvWriter::create(path)?));
    }
    if let Some(path) = &args.parquet {
        writers.push(Box::new(ParquetWriter::create(path)?));
    }
    if writers.is_empty() {
        anyhow::bail!("simulate needs an output: --brokers HOST:PORT, or --csv FILE and/or --parquet FILE");
    }
    let files: Vec<String> =
        [&args.csv, &args.parquet].into_iter().flatten().map(|p| p.display().to_string()).collect();
    let progress = progress::Progress::new(Some(args.count as u64));
    output::write_all(Simulator::new(args.sim_config()?).inspect(|_| progress.tick()), args.count, writers)?;
    eprintln!("{}", progress.finish(args.count as u64, &format!("written to {}", files.join(" and "))));
    Ok(())
}
