//! The demo as docs/training.md runs it with history: `fraudflight demo --fraud
//! handbook --model models/handbook/gbt-handbook-history-v1`. The simulated
//! frauds' labels arrive as the simulated clock passes their report times,
//! the merchant risk fills from them, and the shipped history model catches
//! fraud that single transactions hide: its alerts are mostly frauds and it
//! finds a good share of them (the demo's records carry the simulator's
//! truth in `is_fraud`, which the live view compares with the alerts).

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use fraudflight::demo::{self, DemoConfig};
use fraudflight::simulate::FraudModel;
use fraudflight::store::Query;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_model_catches_handbook_fraud_in_the_demo() {
    let model_dir = Path::new(&support::manifest_dir()).join("models/handbook/gbt-handbook-history-v1");
    let running = demo::start(DemoConfig {
        model_dir,
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        rate: 50_000.0,
        seed: 5,
        fraud: FraudModel::Handbook,
        sessions: 1,
    })
    .await
    .expect("the demo starts with the history model");
    let app = running.app.clone();
    let deadline = Instant::now() + Duration::from_secs(240);
    // 2,000 cards make about 5,000 transactions a simulated day: 250,000 is
    // seven weeks, past the 30-day warm-up and the 7-day label delay.
    while app.metrics().snapshot().scored < 250_000 {
        assert!(Instant::now() < deadline, "only {} scored", app.metrics().snapshot().scored);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stats = app.history_stats().expect("the demo keeps history");
    assert!(stats.labels.load(Ordering::Relaxed) > 500, "labels applied: {:?}", stats.labels);

    let recent = app.query(&Query::Recent { limit: 50_000 }).await.unwrap();
    let risky = recent
        .iter()
        .map(|b| b.column_by_name("merch_fraud_rate_30d").unwrap().as_primitive::<Float64Type>())
        .map(|rates| rates.iter().filter(|r| r.is_some_and(|r| r > 0.0)).count())
        .sum::<usize>();
    assert!(risky > 100, "only {risky} recent outcomes see a merchant fraud rate: labels did not reach it");

    let l = app.labelled();
    let precision = l.alerts_confirmed as f64 / l.alerts_labelled as f64;
    let recall = 1.0 - l.frauds_missed as f64 / l.frauds as f64;
    eprintln!("demo, handbook fraud, history model: {l:?}; precision {precision:.3}, recall {recall:.3}");
    assert!(l.frauds > 200, "{l:?}");
    assert!(precision > 0.5, "alert precision {precision:.3}: {l:?}");
    assert!(recall > 0.3, "recall {recall:.3}: {l:?}");
    running.stop().await;
}
