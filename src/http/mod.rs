//! The HTTP side: the live dashboard, its JSON API and event stream,
//! Prometheus metrics and health checks.
//!
//! - `GET /` and `/assets/*` : the live dashboard (files built into the binary)
//! - `GET /api/summary` : counters, rates, latency, model, sinks, consumer lag
//! - `GET /api/alerts?limit=N` : latest predicted frauds, newest first
//! - `GET /api/events` : Server-Sent Events, `hello` then a `tick` a second ([`live`])
//! - `GET /metrics` : Prometheus text exposition format
//! - `GET /health` : liveness
//! - `GET /ready` : readiness (model loaded, no enabled sink failing); 503 otherwise
//! - `POST /api/labels` : an analyst marks a held alert fraud or genuine
//!   (`{"trans_num", "is_fraud": true|false, "by"}`; needs an `admin` token)
//! - `POST /login` : a token from the login form becomes the session cookie
//!
//! With tokens configured every route but `/health` needs a `read` token
//! ([`auth`]); with TLS configured the listener speaks only HTTPS.

mod assets;
mod auth;
pub mod live;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use axum::extract::{Query as UrlQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::app::App;
use crate::security::Guard;
use crate::shutdown::Shutdown;
use crate::store::{Query, MAX_LIMIT};
use live::Live;

#[derive(Clone)]
struct Ctx {
    app: Arc<App>,
    live: Arc<Live>,
    shutdown: Shutdown,
    auth: auth::Auth,
}

fn router(ctx: Ctx, auth: auth::Auth) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .route("/api/summary", get(summary))
        .route("/api/alerts", get(alerts))
        .route("/api/events", get(events))
        .route("/api/labels", post(label_alert))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(ctx)
        .route("/login", post(auth::login).with_state(auth.clone()))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require_read))
}

/// Serves HTTP (HTTPS with `guard.tls`) on `listener` until `shutdown`,
/// with the live view's sampler.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
    guard: Guard,
) -> std::io::Result<()> {
    let live = Live::new(app.clone());
    let sampler = tokio::spawn(live.clone().run(shutdown.clone()));
    let auth = auth::Auth::new(guard.tokens.clone(), guard.tls.is_some());
    let ctx = Ctx { app, live, shutdown: shutdown.clone(), auth: auth.clone() };
    let router = router(ctx, auth);
    let served = match &guard.tls {
        None => axum::serve(listener, router).with_graceful_shutdown(shutdown.signalled()).await,
        Some(tls) => {
            let config = tls.rustls_server_config().map_err(std::io::Error::other)?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.wait().await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
            });
            axum_server::from_tcp_rustls(
                listener.into_std()?,
                axum_server::tls_rustls::RustlsConfig::from_config(config),
            )?
            .handle(handle)
            .serve(router.into_make_service())
            .await
        }
    };
    let _ = sampler.await;
    served
}

async fn summary(State(ctx): State<Ctx>) -> Json<serde_json::Value> {
    Json(ctx.live.status())
}

/// An analyst's decision on an alert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalystLabel {
    trans_num: String,
    is_fraud: bool,
    #[serde(default)]
    by: String,
}

async fn label_alert(State(ctx): State<Ctx>, headers: axum::http::HeaderMap, body: String) -> Response {
    let caller = match auth::require(&ctx.auth, &headers, crate::security::Role::Analyst, "labelling an alert") {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = auth::same_origin(&headers, "labelling an alert") {
        return refused.into_response();
    }
    let label: AnalystLabel = match serde_json::from_str(&body) {
        Ok(l) => l,
        Err(e) => {
            let message = format!("expected {{\"trans_num\": ..., \"is_fraud\": true|false, \"by\": ...}}: {e}\n");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    use crate::app::AnalystLabelError as E;
    // With tokens, who decided is the token's holder, whatever the body says.
    let by = caller.name.as_deref().unwrap_or(&label.by);
    match ctx.app.label_alert(&label.trans_num, label.is_fraud, by).await {
        Ok(done) => Json(done).into_response(),
        Err(e @ E::NotHeld(_)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(e @ (E::BadAnalyst | E::CardsHashed | E::Labels(crate::app::LabelsError::NoHistory))) => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn events(State(ctx): State<Ctx>) -> Response {
    ctx.live.events(ctx.shutdown.clone()).into_response()
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let history = ctx.app.history_stats();
    let summary = ctx.app.model_quality();
    let drifting = summary.drifting.clone();
    let quality = summary
        .latest
        .into_iter()
        .map(|d| crate::metrics::ModelQuality {
            precision: d.measures.precision,
            recall: d.measures.recall,
            average_precision: d.measures.average_precision,
            roc_auc: d.measures.roc_auc,
            score_psi: d.measures.score_psi,
            card_precision: d.measures.card_precision.zip(d.measures.card_precision_k),
            drifting: drifting.contains(&d.version),
            version: d.version,
        })
        .collect();
    let scrape = crate::metrics::Scrape {
        model_version: ctx.app.model_version(),
        sinks: ctx.app.sink_states(),
        history,
        quality,
        quality_book: ctx.app.quality_book_stats(),
    };
    match ctx.app.metrics().render(&scrape) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response(),
    }
}

async fn ready(State(ctx): State<Ctx>) -> Response {
    let body = serde_json::json!({
        "model_version": ctx.app.model_version(),
        "sinks": ctx.app.sink_health(),
    });
    let status = if ctx.app.ready().await { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn alerts(State(ctx): State<Ctx>, UrlQuery(q): UrlQuery<Limit>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    match ctx.app.query(&Query::Alerts { limit }).await {
        Ok(batches) => Json(live::alert_rows(&batches)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("cannot read alerts: {e}\n")).into_response(),
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
