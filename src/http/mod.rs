//! The HTTP side: a status page, a JSON summary, recent alerts as JSON, and a
//! health check. (The full live dashboard comes later; this is its API.)
//!
//! - `GET /` : status page (plain HTML, refreshes its numbers from the API)
//! - `GET /api/summary` : counters, throughput, fraud rate, model
//! - `GET /api/alerts?limit=N` : latest predicted frauds, newest first
//! - `GET /health` : liveness
//! - `GET /ready` : readiness (model loaded, no enabled sink failing); 503 otherwise

use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use axum::extract::{Query as UrlQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::app::App;
use crate::store::{Query, MAX_LIMIT};

#[derive(Clone)]
struct Ctx {
    app: Arc<App>,
    started: Instant,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/summary", get(summary))
        .route("/api/alerts", get(alerts))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(Ctx { app, started: Instant::now() })
}

/// Serves HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await
}

async fn index() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

async fn summary(State(ctx): State<Ctx>) -> Json<serde_json::Value> {
    let (recent_rows, alert_rows) = ctx.app.store.len();
    Json(serde_json::json!({
        "uptime_seconds": ctx.started.elapsed().as_secs_f64(),
        "counters": ctx.app.stats.snapshot(),
        "store": { "recent_rows": recent_rows, "alert_rows": alert_rows },
        "model": ctx.app.model_info(),
        "sinks": ctx.app.sinks.health(),
    }))
}

async fn ready(State(ctx): State<Ctx>) -> Response {
    let body = serde_json::json!({
        "model_version": ctx.app.scorer.registry().current().version(),
        "sinks": ctx.app.sinks.health(),
    });
    let status = if ctx.app.sinks.ready().await { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn alerts(State(ctx): State<Ctx>, UrlQuery(q): UrlQuery<Limit>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let batches = match ctx.app.query(&Query::Alerts { limit }).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    match to_json_rows(&batches) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Outcome batches as a JSON array of objects.
pub fn to_json_rows(batches: &[RecordBatch]) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let body = writer.into_inner();
    // An empty writer produces no bytes at all; clients expect a JSON array.
    Ok(if body.is_empty() { b"[]".to_vec() } else { body })
}
