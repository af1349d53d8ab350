//! `fraudflight query`: a small Flight client for people at a terminal —
//! alerts, recent outcomes, a card's history, model info. Rows print as JSON
//! lines.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use clap::{Args, Subcommand};
use futures::TryStreamExt;

use crate::flight::request::ticket_for;
use crate::store::Query;

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Flight endpoint of a running server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// Maximum rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// Latest predicted frauds.
    Alerts,
    /// Latest outcomes.
    Recent,
    /// One card's history.
    Card { cc_num: String },
    /// The model in service.
    ModelInfo,
    /// Server health.
    Health,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let endpoint = args.endpoint.replacen("grpc://", "http://", 1);
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {endpoint}: {e}"))?;
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let limit = args.limit;
    let query = match args.what {
        What::Alerts => Query::Alerts { limit },
        What::Recent => Query::Recent { limit },
        What::Card { cc_num } => Query::Card { cc_num, limit },
        What::ModelInfo | What::Health => {
            let name = if matches!(args.what, What::Health) { "health" } else { "model-info" };
            let mut results =
                client.do_action(Action { r#type: name.into(), body: Default::default() }).await?.into_inner();
            while let Some(r) = results.message().await? {
                let value: serde_json::Value = serde_json::from_slice(&r.body)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            return Ok(());
        }
    };
    let stream = client.do_get(Ticket::new(ticket_for(&query))).await?.into_inner();
    let batches: Vec<_> =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into)).try_collect().await?;
    let mut writer = arrow::json::LineDelimitedWriter::new(std::io::stdout().lock());
    for b in &batches {
        writer.write(b)?;
    }
    writer.finish()?;
    Ok(())
}
