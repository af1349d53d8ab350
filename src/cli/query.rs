//! `fraudflight query`: a small Flight client for people at a terminal —
//! alerts, recent outcomes, a card's history, model info and live quality,
//! and the model switches (load, shadow, promote, rollback). Rows print as
//! JSON lines.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use clap::{Args, Subcommand};
use futures::TryStreamExt;

use crate::flight::request::ticket_for;
use crate::store::Query;

#[derive(Debug, Args)]
pub struct QueryArgs {
    // Global: accepted after the subcommand too (`query recent --limit 5`,
    // as the docs write it).
    /// Flight endpoint of a running server.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// Maximum rows.
    #[arg(long, global = true, default_value_t = 20)]
    pub limit: usize,
    /// Bearer token (admin for the model switches), when the server wants one.
    #[arg(long, global = true, env = "FRAUDFLIGHT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    /// Live precision, recall, AP and drift per model version and day.
    ModelQuality,
    /// Loads a model directory the server can read: in service, or beside
    /// the champion with --shadow.
    LoadModel {
        dir: String,
        #[arg(long)]
        shadow: bool,
    },
    /// The shadow model becomes the champion.
    Promote,
    /// The previous champion serves again.
    Rollback,
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
        What::ModelInfo
        | What::Health
        | What::ModelQuality
        | What::LoadModel { .. }
        | What::Promote
        | What::Rollback => {
            let (name, body) = match &args.what {
                What::Health => ("health", String::new()),
                What::ModelQuality => ("model-quality", String::new()),
                What::LoadModel { dir, shadow } => {
                    let mode = if *shadow { "shadow" } else { "champion" };
                    ("load-model", serde_json::json!({ "path": dir, "mode": mode }).to_string())
                }
                What::Promote => ("promote", String::new()),
                What::Rollback => ("rollback", String::new()),
                _ => ("model-info", String::new()),
            };
            let request = authorized(Action { r#type: name.into(), body: body.into() }, args.token.as_deref())?;
            let mut results = client.do_action(request).await?.into_inner();
            while let Some(r) = results.message().await? {
                let value: serde_json::Value = serde_json::from_slice(&r.body)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            return Ok(());
        }
    };
    let stream = client.do_get(authorized(Ticket::new(ticket_for(&query)), args.token.as_deref())?).await?.into_inner();
    let batches: Vec<_> =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into)).try_collect().await?;
    let mut writer = arrow::json::LineDelimitedWriter::new(std::io::stdout().lock());
    for b in &batches {
        writer.write(b)?;
    }
    writer.finish()?;
    Ok(())
}

/// A request carrying `authorization: Bearer <token>` when there is one.
fn authorized<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value =
            format!("Bearer {token}").parse().map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}
