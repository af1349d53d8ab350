//! Live counters of the running service, read by the HTTP summary: how many
//! records came in, were scored, were rejected, how many alerts, and the
//! recent throughput.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Window over which throughput is averaged.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Stats {
    ingested: AtomicU64,
    scored: AtomicU64,
    invalid: AtomicU64,
    alerts: AtomicU64,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub ingested: u64,
    pub scored: u64,
    pub invalid: u64,
    pub alerts: u64,
    /// Scored records per second over the last few seconds.
    pub scored_per_second: f64,
    /// Share of scored records predicted fraudulent.
    pub fraud_rate: f64,
}

impl Stats {
    /// Records one scored batch.
    pub fn record(&self, ingested: usize, scored: usize, invalid: usize, alerts: usize) {
        self.ingested.fetch_add(ingested as u64, Ordering::Relaxed);
        let total = self.scored.fetch_add(scored as u64, Ordering::Relaxed) + scored as u64;
        self.invalid.fetch_add(invalid as u64, Ordering::Relaxed);
        self.alerts.fetch_add(alerts as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut samples = self.samples.lock().expect("stats lock");
        samples.push_back((now, total));
        while samples.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) && samples.len() > 2 {
            samples.pop_front();
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let scored = self.scored.load(Ordering::Relaxed);
        let alerts = self.alerts.load(Ordering::Relaxed);
        let rate = {
            let samples = self.samples.lock().expect("stats lock");
            match (samples.front(), samples.back()) {
                (Some((t0, n0)), Some((_, n1))) if Instant::now().duration_since(*t0) > Duration::from_millis(100) => {
                    (n1 - n0) as f64 / Instant::now().duration_since(*t0).as_secs_f64()
                }
                _ => 0.0,
            }
        };
        Snapshot {
            ingested: self.ingested.load(Ordering::Relaxed),
            scored,
            invalid: self.invalid.load(Ordering::Relaxed),
            alerts,
            scored_per_second: rate,
            fraud_rate: if scored == 0 { 0.0 } else { alerts as f64 / scored as f64 },
        }
    }
}
