//! The Arrow Flight service (docs/architecture.md, "Contracts"): a thin adapter.
//! Each method decodes its request ([`request`]), calls the [`App`], and
//! encodes the answer; no domain logic lives here.
//!
//! - `GetSchema(["score"])`: the transaction input schema.
//! - `DoExchange(["score"] or cmd ScoreCommand)`: one scored batch per input
//!   batch, same rows, same order.
//! - `DoPut(["transactions"])`: ingest through the scorer into the store.
//! - `ListFlights` / `GetFlightInfo` / `DoGet`: `alerts`, `recent`, card history.
//! - `ListActions` / `DoAction`: `model-info`, `model-quality`, `load-model`
//!   (champion or shadow), `promote`, `rollback`, `health`.
//!
//! With tokens configured every call needs `authorization: Bearer <token>`
//! (checked by an interceptor before any method runs); DoPut and
//! `load-model`, `promote` and `rollback` need an `admin` token, the rest a `read` one. TLS and the
//! limits (message size, rows per batch, streams per connection) are set
//! where the server is built, in [`serve`].

pub mod request;

use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::app::{App, ExchangeError, LabelsError, PutError};
use crate::config::LimitsConfig;
use crate::record;
use crate::score::outcome;
use crate::score::ScoreError;
use crate::security::{tokens, Guard, Role};
use crate::store::Query;
use request::Action as FfAction;

/// The Flight service over an [`App`].
#[derive(Clone)]
pub struct FraudFlight {
    app: Arc<App>,
    max_batch_rows: usize,
}

/// How the Flight listener is secured and bounded.
#[derive(Clone, Default)]
pub struct Options {
    pub guard: Guard,
    pub limits: LimitsConfig,
}

impl FraudFlight {
    pub fn new(app: Arc<App>, limits: &LimitsConfig) -> Self {
        Self { app, max_batch_rows: limits.max_batch_rows }
    }
}

/// HTTP/2 flow-control windows: room for a few 64k-row batches per stream.
const STREAM_WINDOW_BYTES: u32 = 32 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;

/// Batches of one DoExchange stream scored concurrently (2 = the default
/// number of scoring sessions, and the cores of the machine it was tuned on).
const EXCHANGE_IN_FLIGHT: usize = 2;

/// Serves Flight on `listener` until `shutdown` resolves, with the TLS,
/// tokens and limits of `options`.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    options: Options,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let limit = options.limits.flight_max_message_bytes;
    let service = FlightServiceServer::new(FraudFlight::new(app, &options.limits))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let tokens = options.guard.tokens.clone();
    // Runs before every method: the caller's role goes into the request's
    // extensions, where the methods that need `admin` look for it.
    let authenticate = move |mut request: Request<()>| {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let caller = tokens.identify(header).map_err(|denied| Status::unauthenticated(denied.to_string()))?;
        request.extensions_mut().insert(caller.role);
        request.extensions_mut().insert(caller);
        Ok(request)
    };
    // HTTP/2's default 64 KiB flow-control window makes a multi-megabyte
    // batch wait for dozens of window updates: measured, DoExchange of
    // 64k-row batches ran at under half the scoring rate with the server
    // mostly idle. Windows sized for a few batches keep the stream full.
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(options.limits.max_concurrent_streams)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .tcp_nodelay(true);
    if let Some(tls) = &options.guard.tls {
        builder = builder.tls_config(tls.tonic_server_config())?;
    }
    builder
        .add_service(tonic::service::interceptor::InterceptedService::new(service, authenticate))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The caller's role, as the interceptor found it (`read` if absent).
fn role_of<T>(request: &Request<T>) -> Role {
    request.extensions().get::<Role>().copied().unwrap_or(Role::Read)
}

/// Refuses a caller whose role is below `needed`.
fn require<T>(request: &Request<T>, needed: Role, what: &str) -> Result<(), Status> {
    tokens::require(role_of(request), needed, what).map_err(Status::permission_denied)
}

/// Refuses a batch over the configured row limit.
fn within_limit(batch: &RecordBatch, max_rows: usize) -> Result<(), Status> {
    if batch.num_rows() > max_rows {
        return Err(Status::resource_exhausted(format!(
            "a batch of {} rows is over the limit of {max_rows} rows per batch (limits.max_batch_rows); send smaller batches",
            batch.num_rows()
        )));
    }
    Ok(())
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn exchange_status(e: ExchangeError) -> Status {
    match e {
        ExchangeError::Invalid(rows) => Status::invalid_argument(rows.to_string()),
        ExchangeError::Score(e) => score_status(e),
    }
}

fn score_status(e: ScoreError) -> Status {
    match e {
        ScoreError::Schema(e) => Status::invalid_argument(e.to_string()),
        ScoreError::BadThreshold(_) => Status::invalid_argument(e.to_string()),
        ScoreError::UnknownVersion(_) => Status::not_found(e.to_string()),
        ScoreError::Model(e) => Status::internal(e.to_string()),
        ScoreError::NoHistory { .. } => Status::failed_precondition(e.to_string()),
        ScoreError::History(_) => Status::unavailable(e.to_string()),
    }
}

fn labels_status(e: LabelsError) -> Status {
    match e {
        LabelsError::Invalid(e) => Status::invalid_argument(e.to_string()),
        LabelsError::NoHistory => Status::failed_precondition(e.to_string()),
        LabelsError::NotTheDecider { .. } => Status::permission_denied(e.to_string()),
        LabelsError::Abandoned(_) => Status::unavailable(e.to_string()),
    }
}

fn put_status(e: PutError) -> Status {
    match e {
        PutError::Score(e) => score_status(e),
        PutError::Abandoned(e) => Status::unavailable(e.to_string()),
        PutError::Task(e) => Status::internal(e),
    }
}

fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => Status::invalid_argument(format!("cannot decode Arrow data: {other}")),
    }
}

/// Largest single Flight message the server sends. The encoder would
/// otherwise split a batch over 2 MB into several, and DoExchange promises
/// one answer batch per input batch.
const MAX_MESSAGE: usize = 48 << 20;

/// Encodes batches as a Flight stream (schema first, even when empty).
fn encode(schema: SchemaRef, batches: BoxStream<'static, Result<RecordBatch, FlightError>>) -> Stream<FlightData> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_MESSAGE)
        .build(batches)
        .map_err(flight_status)
        .boxed()
}

fn flight_info(query: &Query, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
    let ticket = Ticket::new(request::ticket_for(query));
    FlightInfo::new()
        .try_with_schema(&outcome::schema())
        .map_err(|e| Status::internal(e.to_string()))
        .map(|info| info.with_descriptor(descriptor).with_endpoint(FlightEndpoint::new().with_ticket(ticket)))
}

/// Runs CPU-heavy work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("scoring task failed: {e}")))
}

fn json_result(value: &impl serde::Serialize) -> Result<arrow_flight::Result, Status> {
    let body = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(arrow_flight::Result { body: Bytes::from(body) })
}

#[tonic::async_trait]
impl FlightService for FraudFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // No handshake needed: authentication (when configured) is a bearer
        // token on every call.
        Ok(Response::new(stream::empty().boxed()))
    }

    async fn list_flights(&self, _: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        let limit = crate::store::DEFAULT_LIMIT;
        let infos = [("alerts", Query::Alerts { limit }), ("recent", Query::Recent { limit })]
            .into_iter()
            .map(|(name, query)| flight_info(&query, FlightDescriptor::new_path(vec![name.to_string()])))
            .collect::<Vec<_>>();
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let query = request::query_of(&descriptor)?;
        Ok(Response::new(flight_info(&query, descriptor)?))
    }

    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info: queries complete at once; use GetFlightInfo"))
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let descriptor = request.into_inner();
        let schema = match request::descriptor_path(&descriptor).as_deref() {
            Some(["score"]) | Some(["transactions"]) => record::schema(),
            Some(["alerts"]) | Some(["recent"]) => outcome::schema(),
            _ => return Err(Status::not_found(format!("no schema for {}", request::describe(&descriptor)))),
        };
        let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let query = request::parse_ticket(&request.into_inner().ticket)?;
        let batches = self.app.query(&query).await.map_err(|e| Status::unavailable(format!("query failed: {e}")))?;
        let batches = stream::iter(batches.into_iter().map(Ok)).boxed();
        Ok(Response::new(encode(outcome::schema(), batches)))
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        require(&request, Role::Analyst, "DoPut")?;
        let role = role_of(&request);
        // An analyst's labels are decided by the token's holder.
        let decider = request.extensions().get::<tokens::Caller>().filter(|c| c.role == Role::Analyst);
        let decider = decider.and_then(|c| c.name.clone());
        let (descriptor, batches) = request::split_descriptor(request.into_inner()).await?;
        let (app, max_rows) = (self.app.clone(), self.max_batch_rows);
        match request::descriptor_path(&descriptor).as_deref() {
            Some(["transactions"]) => {
                tokens::require(role, Role::Admin, "DoPut (ingest)").map_err(Status::permission_denied)?;
            }
            Some(["labels"]) => {
                let results = batches.map_err(flight_status).and_then(move |batch| {
                    let (app, decider) = (app.clone(), decider.clone());
                    async move {
                        within_limit(&batch, max_rows)?;
                        let report = app.put_labels(&batch, decider.as_deref()).await.map_err(labels_status)?;
                        let body = serde_json::to_vec(&report).map_err(|e| Status::internal(e.to_string()))?;
                        Ok(PutResult { app_metadata: Bytes::from(body) })
                    }
                });
                return Ok(Response::new(results.boxed()));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "DoPut goes to path [\"transactions\"] or [\"labels\"], not {}",
                    request::describe(&descriptor)
                )))
            }
        }
        let results = batches.map_err(flight_status).and_then(move |batch| {
            let app = app.clone();
            async move {
                within_limit(&batch, max_rows)?;
                let report = app.put(batch).await.map_err(put_status)?;
                let body = serde_json::to_vec(&report).map_err(|e| Status::internal(e.to_string()))?;
                Ok(PutResult { app_metadata: Bytes::from(body) })
            }
        });
        Ok(Response::new(results.boxed()))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let (descriptor, batches) = request::split_descriptor(request.into_inner()).await?;
        let options = request::score_options(&descriptor)?;
        let (app, max_rows) = (self.app.clone(), self.max_batch_rows);
        // Up to EXCHANGE_IN_FLIGHT batches score at once (answers stay in
        // order), so one stream uses every scoring session while the next
        // batch is decoded.
        let scored = batches
            .map(move |batch| {
                let (app, options) = (app.clone(), options.clone());
                async move {
                    let batch = batch.map_err(flight_status)?;
                    within_limit(&batch, max_rows)?;
                    blocking(move || app.score_exchange(&batch, &options)).await?.map_err(exchange_status)
                }
            })
            .buffered(EXCHANGE_IN_FLIGHT);
        // Errors travel as Status; the encoder wants FlightError.
        let scored = scored.map_err(|s| FlightError::Tonic(Box::new(s))).boxed();
        Ok(Response::new(encode(outcome::exchange_schema(), scored)))
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let role = role_of(&request);
        let action = request::parse_action(request.into_inner())?;
        if let Some(name) = action.needs_admin() {
            tokens::require(role, Role::Admin, name).map_err(Status::permission_denied)?;
        }
        let result = match action {
            FfAction::ModelInfo => json_result(&self.app.model_info())?,
            FfAction::Health => json_result(&serde_json::json!({
                "status": "ok",
                "model_version": self.app.model_version(),
            }))?,
            FfAction::LoadModel(source, model_role) => {
                let app = self.app.clone();
                let loaded = blocking(move || app.load_model(source, model_role)).await?.map_err(|e| {
                    Status::invalid_argument(format!("model refused, the old model keeps serving: {e}"))
                })?;
                self.app.record_models().await;
                json_result(&loaded)?
            }
            FfAction::Promote => {
                let switched = self.app.promote().map_err(|e| Status::failed_precondition(e.to_string()))?;
                self.app.record_models().await;
                json_result(&switched)?
            }
            FfAction::Rollback => {
                let switched = self.app.rollback().map_err(|e| Status::failed_precondition(e.to_string()))?;
                self.app.record_models().await;
                json_result(&switched)?
            }
            FfAction::ModelQuality => json_result(&self.app.model_quality())?,
        };
        Ok(Response::new(stream::iter([Ok(result)]).boxed()))
    }

    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = request::ACTIONS
            .iter()
            .map(|(name, description)| {
                Ok(ActionType { r#type: name.to_string(), description: description.to_string() })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(stream::iter(actions).boxed()))
    }
}
