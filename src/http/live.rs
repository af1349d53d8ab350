//! The live view's data: one task samples the metrics every second, keeps
//! the last five minutes of points, and broadcasts a `tick` to every
//! event-stream client (Server-Sent Events at `/api/events`). A client first
//! gets `hello` (history, status, the latest alerts), then one `tick` a
//! second with the new point, the status and the alerts scored since the
//! last tick. One sampler serves any number of clients.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::app::App;
use crate::metrics::{quantile, Snapshot, LATENCY_BUCKETS};
use crate::shutdown::Shutdown;

/// Sampling period.
const TICK: Duration = Duration::from_secs(1);
/// Points kept for a newly connected client's charts (five minutes).
const HISTORY: usize = 300;
/// Latency percentiles are taken over this many ticks.
const LATENCY_WINDOW: usize = 5;
/// Alerts sent in one event at most.
pub const ALERTS_PER_EVENT: usize = 50;
/// Alert columns the page and `/api/alerts` send: what an analyst needs to
/// judge an alert, not the cardholder's identity (no card number, name or
/// address; those stay behind Flight and the stores).
pub const ALERT_COLUMNS: &[&str] = &[
    "trans_num",
    "unix_time",
    "trans_date_trans_time",
    "amt",
    "category",
    "merchant",
    "city",
    "state",
    "distance_km",
    "merch_lat",
    "merch_long",
    "fraud_score",
    "is_fraud_predicted",
    "model_version",
    // The label, when one came (who decided and when); and the card's and
    // merchant's history and the inputs that explain the alert.
    "is_fraud",
    "label_reported_at",
    "label_by",
    "top_features",
    "card_tx_1d",
    "card_amt_ratio_30d",
    "card_secs_since_prev",
    "card_km_from_prev",
    "merch_fraud_rate_30d",
];

/// One second of the service, as charted.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Unix ms at the end of the second.
    pub t: i64,
    pub in_per_s: f64,
    pub scored_per_s: f64,
    pub stored_per_s: f64,
    pub alerts_per_s: f64,
    /// Alerts / scored in this second (None when nothing was scored).
    pub fraud_rate: Option<f64>,
    /// End-to-end latency percentiles over the last few seconds, ms.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// The state shared by the sampler and the handlers.
pub struct Live {
    app: Arc<App>,
    started: Instant,
    history: RwLock<VecDeque<Point>>,
    ticks: broadcast::Sender<Arc<str>>,
}

impl Live {
    pub fn new(app: Arc<App>) -> Arc<Self> {
        let (ticks, _) = broadcast::channel(16);
        Arc::new(Self { app, started: Instant::now(), history: RwLock::default(), ticks })
    }

    /// The service now: counters, rates, model, sinks, lag. Also the body
    /// of `/api/summary`.
    pub fn status(&self) -> serde_json::Value {
        let counters = self.app.metrics().snapshot();
        let last = self.history.read().expect("history lock").back().cloned();
        let (recent_rows, alert_rows) = self.app.memory_rows();
        let lag: Vec<_> = self
            .app
            .metrics()
            .lag()
            .into_iter()
            .map(|(topic, partition, lag)| serde_json::json!({ "topic": topic, "partition": partition, "lag": lag }))
            .collect();
        serde_json::json!({
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "counters": counters,
            "rates": last,
            "store": { "recent_rows": recent_rows, "alert_rows": alert_rows },
            // Confirmed against predicted, over the outcomes held in memory.
            "labels": self.app.labelled(),
            "model": self.app.model_info(),
            // Per version and UTC day, judged by the labels that came back.
            "model_quality": self.app.model_quality(),
            "sinks": self.app.sink_health(),
            "consumer_lag": lag,
        })
    }

    /// Samples every [`TICK`] until shutdown, then ends every event stream.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous = (Instant::now(), self.app.metrics().snapshot());
        let mut latency_window: VecDeque<Vec<u64>> = VecDeque::from([previous.1.latency_cumulative.clone()]);
        // Start following the alerts from the newest one now held.
        let (_, mut alert_seq) = self.app.alerts_since(u64::MAX, 0);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait() => return,
            }
            let now = (Instant::now(), self.app.metrics().snapshot());
            latency_window.push_back(now.1.latency_cumulative.clone());
            if latency_window.len() > LATENCY_WINDOW + 1 {
                latency_window.pop_front();
            }
            let point = point(&previous, &now, latency_window.front().expect("window holds a sample"));
            previous = now;
            {
                let mut history = self.history.write().expect("history lock");
                history.push_back(point.clone());
                if history.len() > HISTORY {
                    history.pop_front();
                }
            }
            let (alerts, seq) = self.app.alerts_since(alert_seq, ALERTS_PER_EVENT);
            alert_seq = seq;
            if self.ticks.receiver_count() == 0 {
                continue;
            }
            let tick = serde_json::json!({ "point": point, "status": self.status(), "alerts": alert_rows(&alerts) });
            let _ = self.ticks.send(Arc::from(tick.to_string()));
        }
    }

    /// The event stream of one client: `hello`, then a `tick` a second,
    /// until shutdown. A client too slow to keep up skips ticks.
    pub fn events(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
        let ticks = tokio_stream::wrappers::BroadcastStream::new(self.ticks.subscribe())
            .filter_map(|t| futures::future::ready(t.ok()))
            .map(|t| Ok(Event::default().event("tick").data(&*t)));
        let history: Vec<Point> = self.history.read().expect("history lock").iter().cloned().collect();
        let latest = self.app.alerts_since(0, ALERTS_PER_EVENT).0;
        let hello = serde_json::json!({ "history": history, "status": self.status(), "alerts": alert_rows(&latest) });
        let hello =
            futures::stream::once(futures::future::ready(Ok(Event::default().event("hello").data(hello.to_string()))));
        // Ends with the server, or graceful shutdown would wait on it forever.
        let stream = hello.chain(ticks).take_until(shutdown.signalled());
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
}

/// The point between two samples: rates over the elapsed time, latency
/// percentiles since `window_start`.
fn point(before: &(Instant, Snapshot), after: &(Instant, Snapshot), window_start: &[u64]) -> Point {
    let seconds = after.0.duration_since(before.0).as_secs_f64().max(1e-3);
    let (b, a) = (&before.1, &after.1);
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / seconds;
    let scored = a.scored.saturating_sub(b.scored);
    let latency = |q| quantile(LATENCY_BUCKETS, window_start, &a.latency_cumulative, q).map(|s| s * 1000.0);
    Point {
        t: crate::metrics::unix_ms(),
        in_per_s: rate(b.ingested, a.ingested),
        scored_per_s: rate(b.scored, a.scored),
        stored_per_s: rate(b.stored, a.stored),
        alerts_per_s: rate(b.alerts, a.alerts),
        fraud_rate: (scored > 0).then(|| a.alerts.saturating_sub(b.alerts) as f64 / scored as f64),
        latency_p50_ms: latency(0.5),
        latency_p95_ms: latency(0.95),
        latency_p99_ms: latency(0.99),
    }
}

/// Alerts as JSON objects with [`ALERT_COLUMNS`] only.
pub fn alert_rows(batches: &[RecordBatch]) -> serde_json::Value {
    let projected: Vec<RecordBatch> = batches
        .iter()
        .filter_map(|b| {
            let indices: Vec<usize> = ALERT_COLUMNS.iter().filter_map(|c| b.schema().index_of(c).ok()).collect();
            b.project(&indices).ok()
        })
        .collect();
    super::to_json_rows(&projected)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| serde_json::json!([]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_holds_rates_over_the_elapsed_time() {
        let t0 = Instant::now();
        let before = Snapshot { ingested: 100, scored: 90, stored: 80, alerts: 1, ..Snapshot::default() };
        let after = Snapshot { ingested: 300, scored: 290, stored: 280, alerts: 3, ..Snapshot::default() };
        let p = point(&(t0, before), &(t0 + Duration::from_secs(2), after), &[]);
        assert_eq!((p.in_per_s, p.scored_per_s, p.stored_per_s, p.alerts_per_s), (100.0, 100.0, 100.0, 1.0));
        assert_eq!(p.fraud_rate, Some(0.01));
        assert_eq!(p.latency_p99_ms, None);
    }
}
