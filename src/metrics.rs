//! The service's live measurements, kept once and read three ways: the JSON
//! summary, the live dashboard's event stream (`http::live`) and
//! Prometheus' `/metrics` (text exposition format 0.0.4).
//!
//! Counters and histograms are `prometheus` crate types in one registry.
//! Values owned elsewhere (sink health, the model in service, consumer lag)
//! are turned into metric families at scrape time by [`Metrics::render`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use serde::Serialize;

use crate::history::HistoryStats;
use crate::score::outcome;

/// Upper bounds of the end-to-end latency buckets, seconds: 0.5 ms to
/// 10 min (a consumer catching up on a backlog sees minutes).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Number of equal-width fraud-score buckets over [0, 1].
pub const SCORE_BINS: usize = 20;

/// Every measurement of one running fraudflight.
pub struct Metrics {
    registry: Registry,
    ingested: IntCounter,
    scored: IntCounter,
    stored: IntCounter,
    invalid: IntCounter,
    alerts: IntCounter,
    dead_letters: IntCounter,
    label_dead_letters: IntCounter,
    exchanged: IntCounter,
    quality_rows_read: IntCounter,
    quality_minutes_counted: IntCounter,
    batch_records: Histogram,
    scoring_seconds: Histogram,
    latency_seconds: Histogram,
    fraud_score: Histogram,
    /// Consumer lag by (topic, partition), from librdkafka's statistics.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

/// A point-in-time copy of the counters and histograms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Records received (Kafka records, DoPut rows, simulated transactions).
    pub ingested: u64,
    pub scored: u64,
    /// Outcomes every enabled sink has accepted (in the demo: in memory).
    pub stored: u64,
    /// Records refused as invalid input.
    pub invalid: u64,
    /// Outcomes predicted fraudulent.
    pub alerts: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Share of scored records predicted fraudulent.
    pub fraud_rate: f64,
    /// Cumulative count per latency bucket (bounds in [`LATENCY_BUCKETS`]),
    /// then the total count.
    #[serde(skip)]
    pub latency_cumulative: Vec<u64>,
    /// Scored records per fraud-score bin ([`SCORE_BINS`] bins over [0, 1]).
    pub score_histogram: Vec<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique counter");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique histogram");
            h
        };
        let score_bounds = (1..SCORE_BINS).map(|i| i as f64 / SCORE_BINS as f64).collect();
        Self {
            ingested: counter(
                "fraudflight_records_in_total",
                "Records received: Kafka records, DoPut rows, simulated.",
            ),
            scored: counter("fraudflight_records_scored_total", "Records scored."),
            stored: counter("fraudflight_records_stored_total", "Outcomes accepted by every enabled sink."),
            invalid: counter("fraudflight_records_invalid_total", "Records refused as invalid input."),
            alerts: counter("fraudflight_alerts_total", "Outcomes predicted fraudulent."),
            dead_letters: counter("fraudflight_dead_letters_total", "Records sent to the dead-letter topic."),
            label_dead_letters: counter(
                "fraudflight_label_dead_letters_total",
                "Labels sent to the labels' dead-letter topic by this instance (one instance sends each).",
            ),
            exchanged: counter(
                "fraudflight_exchange_rows_total",
                "Rows scored for DoExchange clients (answered, not stored).",
            ),
            quality_rows_read: counter(
                "fraudflight_quality_rows_read_total",
                "Score rows live quality read to count changed minutes again (Cassandra's book).",
            ),
            quality_minutes_counted: counter(
                "fraudflight_quality_minutes_counted_total",
                "Minutes of transactions live quality counted again after their rows or labels changed.",
            ),
            batch_records: histogram(
                "fraudflight_batch_records",
                "Records per scored batch.",
                exponential_buckets(1.0, 4.0, 10).expect("valid buckets"),
            ),
            scoring_seconds: histogram(
                "fraudflight_batch_scoring_seconds",
                "Time to decode, validate and score one batch.",
                exponential_buckets(0.00005, 2.0, 16).expect("valid buckets"),
            ),
            latency_seconds: histogram(
                "fraudflight_end_to_end_latency_seconds",
                "From a record's creation (its Kafka timestamp) to every sink having stored its outcome.",
                LATENCY_BUCKETS.to_vec(),
            ),
            fraud_score: histogram("fraudflight_fraud_score", "Fraud scores of scored records.", score_bounds),
            lag: Mutex::default(),
            registry,
        }
    }

    /// Live quality counted `minutes` again, reading `rows` score rows.
    pub fn quality_counted(&self, rows: u64, minutes: usize) {
        self.quality_rows_read.inc_by(rows);
        self.quality_minutes_counted.inc_by(minutes as u64);
    }

    /// Records one scored batch: `ingested` records came in, `outcomes` are
    /// the valid ones scored, `invalid` were refused, scoring took `took`.
    pub fn scored(&self, ingested: usize, outcomes: &RecordBatch, invalid: usize, took: Duration) {
        self.ingested.inc_by(ingested as u64);
        self.scored.inc_by(outcomes.num_rows() as u64);
        self.invalid.inc_by(invalid as u64);
        self.alerts.inc_by(outcome::count_alerts(outcomes) as u64);
        self.batch_records.observe(ingested as f64);
        self.scoring_seconds.observe(took.as_secs_f64());
        if let Some(scores) = outcomes.column_by_name(outcome::FRAUD_SCORE) {
            // One local histogram per batch: a single flush of shared atomics.
            let local = self.fraud_score.local();
            for s in scores.as_primitive::<Float32Type>().iter().flatten() {
                local.observe(f64::from(s));
            }
            local.flush();
        }
    }

    /// Records `rows` rows scored and answered over DoExchange.
    pub fn exchanged(&self, rows: usize) {
        self.exchanged.inc_by(rows as u64);
    }

    /// Labels this instance sent to the labels' dead-letter topic.
    pub fn label_dead_letters(&self, n: usize) {
        self.label_dead_letters.inc_by(n as u64);
    }

    /// Records that every sink stored `rows` outcomes, and how long after
    /// their creation: `created_ms` are the records' creation times (Unix
    /// ms), one per record; records without one are not timed.
    pub fn stored(&self, rows: usize, dead_letters: usize, created_ms: impl IntoIterator<Item = i64>) {
        self.stored.inc_by(rows as u64);
        self.dead_letters.inc_by(dead_letters as u64);
        let now = unix_ms();
        let local = self.latency_seconds.local();
        for t in created_ms {
            local.observe((now - t).max(0) as f64 / 1000.0);
        }
        local.flush();
    }

    /// Replaces the consumer lag of `topic`'s partitions (partitions not in
    /// `lags` are no longer ours and disappear).
    pub fn set_lag(&self, topic: &str, lags: impl IntoIterator<Item = (i32, i64)>) {
        let mut lag = self.lag.lock().expect("lag lock");
        lag.retain(|(t, _), _| t != topic);
        lag.extend(lags.into_iter().map(|(p, l)| ((topic.to_string(), p), l)));
    }

    /// Consumer lag per (topic, partition), in records.
    pub fn lag(&self) -> Vec<(String, i32, i64)> {
        self.lag.lock().expect("lag lock").iter().map(|((t, p), l)| (t.clone(), *p, *l)).collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        let scored = self.scored.get();
        let alerts = self.alerts.get();
        let latency = cumulative_buckets(&self.latency_seconds);
        let score_cumulative = cumulative_buckets(&self.fraud_score);
        let score_histogram =
            score_cumulative.iter().scan(0, |prev, &c| Some(c - std::mem::replace(prev, c))).collect();
        Snapshot {
            ingested: self.ingested.get(),
            scored,
            stored: self.stored.get(),
            invalid: self.invalid.get(),
            alerts,
            dead_letters: self.dead_letters.get(),
            fraud_rate: if scored == 0 { 0.0 } else { alerts as f64 / scored as f64 },
            latency_cumulative: latency,
            score_histogram,
        }
    }

    /// The Prometheus text exposition of every metric, plus the values
    /// owned by other components described in `extra`.
    pub fn render(&self, extra: &Scrape) -> prometheus::Result<String> {
        let mut families = self.registry.gather();
        let sink_up = IntGaugeVec::new(
            Opts::new("fraudflight_sink_up", "1 when the sink's writes succeed, 0 while they are being retried."),
            &["sink"],
        )
        .expect("valid gauge");
        let sink_errors = IntCounterVec::new(
            Opts::new("fraudflight_sink_errors_total", "Failed sink write attempts (each is retried)."),
            &["sink"],
        )
        .expect("valid counter");
        for s in &extra.sinks {
            sink_up.with_label_values(&[s.name]).set(i64::from(s.up));
            sink_errors.with_label_values(&[s.name]).inc_by(s.errors);
        }
        let model = IntGaugeVec::new(
            Opts::new("fraudflight_model_info", "The model in service (value 1), by version."),
            &["version"],
        )
        .expect("valid gauge");
        model.with_label_values(&[extra.model_version.as_str()]).set(1);
        let lag = IntGaugeVec::new(
            Opts::new("fraudflight_consumer_lag", "Records between the consumer's position and the partition's end."),
            &["topic", "partition"],
        )
        .expect("valid gauge");
        for (topic, partition, l) in self.lag() {
            lag.with_label_values(&[topic.as_str(), partition.to_string().as_str()]).set(l);
        }
        if let Some(h) = extra.history {
            families.extend(history_families(h));
        }
        families.extend(quality_families(&extra.quality));
        if let Some((rows, not_kept)) = extra.quality_book {
            let held = prometheus::IntGauge::new(
                "fraudflight_quality_book_rows",
                "Score rows live quality keeps in memory (quality.max_memory_rows at most).",
            )
            .expect("valid gauge");
            held.set(rows as i64);
            let dropped = IntCounter::new(
                "fraudflight_quality_book_rows_not_kept_total",
                "Score rows not kept in memory: the newest day alone filled the book.",
            )
            .expect("valid counter");
            dropped.inc_by(not_kept);
            families.extend(held.collect());
            families.extend(dropped.collect());
        }
        families.extend(sink_up.collect());
        families.extend(sink_errors.collect());
        families.extend(model.collect());
        families.extend(lag.collect());
        // A labelled family with no member yet (no lag before Kafka assigns
        // partitions, no sinks in the demo) is left out, not sent empty.
        families.retain(|f| !f.get_metric().is_empty());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Scrape-time values from outside the registry.
pub struct Scrape<'a> {
    pub model_version: String,
    pub sinks: Vec<SinkState>,
    /// The history's counters, when history is on.
    pub history: Option<&'a HistoryStats>,
    /// Each model version's live quality on its newest measured day.
    pub quality: Vec<ModelQuality>,
    /// The memory book's rows held and rows not kept (no Cassandra).
    pub quality_book: Option<(usize, u64)>,
}

/// A model version's live quality, for its gauges.
pub struct ModelQuality {
    pub version: String,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub average_precision: Option<f64>,
    pub roc_auc: Option<f64>,
    pub score_psi: Option<f64>,
    /// Card precision and its k.
    pub card_precision: Option<(f64, u32)>,
    pub drifting: bool,
}

/// Live quality gauges, labelled by version; a measure that is undefined
/// (no fraud labelled yet) is left out rather than sent as 0.
fn quality_families(quality: &[ModelQuality]) -> Vec<prometheus::proto::MetricFamily> {
    let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["version"]).expect("valid gauge");
    let families = [
        (gauge("fraudflight_model_precision", "Live precision at the threshold on the newest measured day, from labels."), 0),
        (gauge("fraudflight_model_recall", "Live recall at the threshold on the newest measured day, from labels."), 1),
        (gauge("fraudflight_model_average_precision", "Live average precision on the newest measured day, from labels."), 2),
        (gauge("fraudflight_model_roc_auc", "Live ROC AUC on the newest measured day, from labels."), 3),
        (gauge("fraudflight_model_score_psi", "Population stability index of the newest day's scores against the training scores."), 4),
        (gauge("fraudflight_model_drift", "1 when the newest measured day is flagged for drift (quality.psi_limit, quality.fraud_rate_ratio_limit)."), 5),
    ];
    let card_precision = GaugeVec::new(
        Opts::new(
            "fraudflight_model_card_precision",
            "Live card precision at k on the newest measured day: of the k cards with the highest scores, the share labelled fraud (quality.card_k).",
        ),
        &["version", "k"],
    )
    .expect("valid gauge");
    for q in quality {
        let values =
            [q.precision, q.recall, q.average_precision, q.roc_auc, q.score_psi, Some(f64::from(u8::from(q.drifting)))];
        for (family, at) in &families {
            if let Some(v) = values[*at] {
                family.with_label_values(&[q.version.as_str()]).set(v);
            }
        }
        if let Some((value, k)) = q.card_precision {
            card_precision.with_label_values(&[q.version.as_str(), &k.to_string()]).set(value);
        }
    }
    families.iter().flat_map(|(f, _)| f.collect()).chain(card_precision.collect()).collect()
}

/// The history's gauges and counters (docs/architecture.md, "History").
fn history_families(h: &HistoryStats) -> Vec<prometheus::proto::MetricFamily> {
    let read = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let gauges = [
        ("fraudflight_history_cards", "Cards whose recent history is in memory.", read(&h.cards)),
        ("fraudflight_history_events", "Transactions held in the cards' histories.", read(&h.events)),
        ("fraudflight_history_merchants", "Merchants with day tiles in memory.", read(&h.merchants)),
        ("fraudflight_labels_pending", "Labels waiting for their transaction.", read(&h.labels_pending)),
        (
            "fraudflight_history_marks_held",
            "Merchant tile fraud marks held until their outcomes are stored (at most 8 x history.max_cards).",
            read(&h.marks_held),
        ),
        (
            "fraudflight_labels_stalled",
            "1 while the labels stream is behind and batches no longer wait for it (history.labels_wait_ms).",
            read(&h.labels_stalled),
        ),
    ];
    let counters = [
        (
            "fraudflight_history_evicted_cards_total",
            "Cards dropped from the cache (least recently used).",
            read(&h.evicted_cards),
        ),
        (
            "fraudflight_labels_pending_dropped_total",
            "Labels waiting for their transaction pushed out of memory by newer ones (history.max_cards of them are kept; with Cassandra they are still found there).",
            read(&h.labels_pending_dropped),
        ),
        (
            "fraudflight_labels_rechecked_total",
            "Pending labels looked for again in Cassandra after partitions were assigned (those reported since the previous owners' labels progress).",
            read(&h.labels_rechecked),
        ),
        (
            "fraudflight_history_loaded_cards_total",
            "Cards read back from Cassandra (after a restart, a rebalance or eviction).",
            read(&h.loaded_cards),
        ),
        (
            "fraudflight_history_marks_early_total",
            "Merchant tile fraud marks written before their outcomes were stored, 8 x history.max_cards being held already.",
            read(&h.marks_early),
        ),
        ("fraudflight_labels_total", "Labels received.", read(&h.labels)),
        (
            "fraudflight_labels_late_total",
            "Labels reported after their tile was final (not in merchant risk).",
            read(&h.labels_late),
        ),
        (
            "fraudflight_labels_waits_total",
            "Batches that waited for the labels stream before reading merchant risk.",
            read(&h.labels_waits),
        ),
        (
            "fraudflight_labels_stalls_total",
            "Times a batch gave up waiting for the labels stream (history.labels_wait_ms).",
            read(&h.labels_stalls),
        ),
    ];
    let mut out = Vec::new();
    for (name, help, v) in gauges {
        let g = prometheus::IntGauge::new(name, help).expect("valid gauge");
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        out.extend(g.collect());
    }
    for (name, help, v) in counters {
        let c = IntCounter::new(name, help).expect("valid counter");
        c.inc_by(v);
        out.extend(c.collect());
    }
    let waited = prometheus::Counter::new(
        "fraudflight_labels_wait_seconds_total",
        "Time batches spent waiting for the labels stream.",
    )
    .expect("valid counter");
    waited.inc_by(read(&h.labels_wait_ms) as f64 / 1000.0);
    out.extend(waited.collect());
    out
}

pub struct SinkState {
    pub name: &'static str,
    pub up: bool,
    pub errors: u64,
}

/// Cumulative bucket counts of `h`, then its total count.
fn cumulative_buckets(h: &Histogram) -> Vec<u64> {
    let family = h.collect();
    let hist = family[0].get_metric()[0].get_histogram();
    let mut counts: Vec<u64> = hist.get_bucket().iter().map(|b| b.cumulative_count()).collect();
    counts.push(hist.get_sample_count());
    counts
}

/// Quantile `q` of the observations between two cumulative bucket snapshots
/// (`before`, `after` as from [`Snapshot::latency_cumulative`]), by linear
/// interpolation inside the bucket, as Prometheus' `histogram_quantile`.
/// None when nothing was observed in between.
pub fn quantile(bounds: &[f64], before: &[u64], after: &[u64], q: f64) -> Option<f64> {
    let delta: Vec<u64> = after.iter().zip(before.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a - b).collect();
    let total = *delta.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower_count = 0u64;
    for (i, &cum) in delta[..bounds.len()].iter().enumerate() {
        if cum as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let in_bucket = (cum - lower_count) as f64;
            let fraction = if in_bucket == 0.0 { 1.0 } else { (rank - lower_count as f64) / in_bucket };
            return Some(lower + (bounds[i] - lower) * fraction);
        }
        lower_count = cum;
    }
    // Beyond the last bound: report the last bound, as Prometheus does.
    bounds.last().copied()
}

/// Now, as Unix milliseconds (the clock latency is measured against).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let bounds = [1.0, 2.0, 4.0];
        // 10 observations in (0, 1], 10 in (1, 2], none above.
        let after = [10, 20, 20, 20];
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], &after, 0.5), Some(1.0));
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], &after, 0.75), Some(1.5));
        // Only what happened since `before` counts.
        assert_eq!(quantile(&bounds, &[10, 10, 10, 10], &after, 0.5), Some(1.5));
        assert_eq!(quantile(&bounds, &after, &after, 0.5), None);
        // Observations above the last bound report the last bound.
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], &[0, 0, 0, 5], 0.99), Some(4.0));
    }

    #[test]
    fn stored_records_latency_and_counters() {
        let m = Metrics::new();
        let now = unix_ms();
        m.stored(3, 1, [now - 4, now - 4, now - 40]);
        let s = m.snapshot();
        assert_eq!((s.stored, s.dead_letters), (3, 1));
        assert_eq!(*s.latency_cumulative.last().unwrap(), 3);
        let p50 = quantile(LATENCY_BUCKETS, &[], &s.latency_cumulative, 0.5).unwrap();
        assert!((0.003..=0.0075).contains(&p50), "{p50}");
    }

    #[test]
    fn the_exposition_parses_and_holds_every_family() {
        let m = Metrics::new();
        let now = unix_ms();
        m.stored(2, 0, [now, now]);
        let history = HistoryStats::default();
        history.labels.store(3, std::sync::atomic::Ordering::Relaxed);
        let quality = || {
            vec![ModelQuality {
                version: "gbt-v1".into(),
                precision: Some(0.75),
                recall: None,
                average_precision: Some(0.5),
                roc_auc: Some(0.9),
                score_psi: Some(0.3),
                card_precision: Some((0.42, 100)),
                drifting: true,
            }]
        };
        let scrape = |sinks| Scrape {
            model_version: "gbt-v1".into(),
            sinks,
            history: Some(&history),
            quality: quality(),
            quality_book: Some((3, 1)),
        };
        // Before any lag or sink: empty families are left out, the rest parses.
        let text = m.render(&scrape(Vec::new())).unwrap();
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        assert!(parsed.samples.iter().all(|s| s.metric != "fraudflight_consumer_lag"));
        m.set_lag("transactions", [(0, 12), (3, 0)]);
        let sinks = vec![SinkState { name: "cassandra", up: false, errors: 4 }];
        let text = m.render(&scrape(sinks)).unwrap();
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let value = |name: &str, label: Option<(&str, &str)>| {
            parsed
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(value("fraudflight_records_stored_total", None), Some(2.0));
        assert_eq!(value("fraudflight_consumer_lag", Some(("partition", "0"))), Some(12.0));
        assert_eq!(value("fraudflight_sink_up", Some(("sink", "cassandra"))), Some(0.0));
        assert_eq!(value("fraudflight_sink_errors_total", Some(("sink", "cassandra"))), Some(4.0));
        assert_eq!(value("fraudflight_model_info", Some(("version", "gbt-v1"))), Some(1.0));
        assert_eq!(value("fraudflight_labels_total", None), Some(3.0));
        assert_eq!(value("fraudflight_history_cards", None), Some(0.0));
        assert_eq!(value("fraudflight_model_precision", Some(("version", "gbt-v1"))), Some(0.75));
        assert_eq!(value("fraudflight_model_average_precision", Some(("version", "gbt-v1"))), Some(0.5));
        let card =
            parsed.samples.iter().find(|s| s.metric == "fraudflight_model_card_precision").expect("card precision");
        assert_eq!((card.labels.get("version"), card.labels.get("k")), (Some("gbt-v1"), Some("100")));
        assert!(matches!(card.value, prometheus_parse::Value::Gauge(v) if v == 0.42));
        assert_eq!(value("fraudflight_model_drift", Some(("version", "gbt-v1"))), Some(1.0));
        assert_eq!(value("fraudflight_model_recall", None), None, "an undefined recall is left out");
        assert_eq!(value("fraudflight_quality_book_rows", None), Some(3.0));
        assert_eq!(value("fraudflight_quality_book_rows_not_kept_total", None), Some(1.0));
        let latency = parsed.samples.iter().find(|s| s.metric == "fraudflight_end_to_end_latency_seconds").unwrap();
        assert!(
            matches!(&latency.value, prometheus_parse::Value::Histogram(b) if b.len() == LATENCY_BUCKETS.len() + 1)
        );
    }

    #[test]
    fn lag_replaces_a_topics_partitions() {
        let m = Metrics::new();
        m.set_lag("t", [(0, 5), (1, 7)]);
        m.set_lag("t", [(1, 2)]);
        assert_eq!(m.lag(), vec![("t".to_string(), 1, 2)]);
    }
}
