//! The scoring core against bare ONNX Runtime, same model, same run.
//!
//! - `score/batch/N`: the whole in-process path on an Arrow batch of N
//!   simulated transactions: conform + validate + features + tensors + ONNX
//!   Runtime + outcome assembly (`Scorer::score`).
//! - `onnx_runtime/batch/N`: `Session::run` alone on input tensors built once
//!   beforehand (`Model::run`), the ceiling the whole path is compared with.
//! - Single-row latency: after this, 20,000 one-row `Scorer::score` calls
//!   (after 2,000 to warm up), five times; p50 / p99 / p99.9 of each repeat
//!   and their medians go to target/bench/scoring_latency.json.
//!
//! N = 1, 64, 1024, 65536; the shipped model (models/). Target: at N >= 1024
//! the whole path reaches 0.8 of bare ONNX Runtime; p99 at N = 1 < 100 µs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use fraudflight::features;
use fraudflight::record;
use fraudflight::record::conform::conform;
use fraudflight::score::registry::Registry;
use fraudflight::score::{ScoreOptions, Scorer};
use fraudflight::simulate::{SimConfig, Simulator};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 4] = [1, 64, 1024, 65_536];

fn scorer() -> Scorer {
    let dir = fraudflight::score::registry::model_dir_or_newest(None).expect("shipped model");
    Scorer::new(Arc::new(Registry::open(&dir, 1).expect("model loads")))
}

fn bench(c: &mut Criterion, scorer: &Scorer, txns: &[record::Transaction]) {
    let model = scorer.registry().current();
    for (group_name, bare) in [("score", false), ("onnx_runtime", true)] {
        let mut group = c.benchmark_group(group_name);
        for size in SIZES {
            let batch = record::to_batch(&txns[..size]);
            group.throughput(Throughput::Elements(size as u64));
            group.sample_size(if size >= 65_536 { 10 } else { 30 });
            if bare {
                let conformed = conform(&batch).expect("simulated batch conforms");
                let inputs = model.inputs(&conformed, &features::derive(&conformed)).expect("inputs");
                group.bench_with_input(BenchmarkId::new("batch", size), &inputs, |b, inputs| {
                    b.iter(|| model.run(inputs).unwrap())
                });
            } else {
                group.bench_with_input(BenchmarkId::new("batch", size), &batch, |b, batch| {
                    b.iter(|| scorer.score(batch, &ScoreOptions::default()).unwrap())
                });
            }
        }
        group.finish();
    }
}

/// Quantiles of one-row scoring calls, µs.
fn latency(scorer: &Scorer, txns: &[record::Transaction]) -> serde_json::Value {
    let batches: Vec<_> = txns.iter().take(1024).map(|t| record::to_batch(std::slice::from_ref(t))).collect();
    let options = ScoreOptions::default();
    let mut repeats = Vec::new();
    for _ in 0..5 {
        for b in batches.iter().cycle().take(2_000) {
            scorer.score(b, &options).unwrap();
        }
        let mut samples: Vec<Duration> = batches
            .iter()
            .cycle()
            .take(20_000)
            .map(|b| {
                let start = Instant::now();
                std::hint::black_box(scorer.score(b, &options).unwrap());
                start.elapsed()
            })
            .collect();
        samples.sort();
        let q = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
        repeats.push([q(0.5), q(0.99), q(0.999)]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = repeats.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    serde_json::json!({
        "calls_per_repeat": 20_000,
        "repeats": repeats.iter().map(|r| serde_json::json!({"p50_us": r[0], "p99_us": r[1], "p999_us": r[2]})).collect::<Vec<_>>(),
        "p50_us": median(0),
        "p99_us": median(1),
        "p999_us": median(2),
    })
}

fn main() {
    let scorer = scorer();
    let txns: Vec<_> = Simulator::new(SimConfig::default()).take(65_536).collect();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench(&mut c, &scorer, &txns);
    c.final_summary();

    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let result = latency(&scorer, &txns);
    println!("single-row scoring latency: p50 {:.1} µs, p99 {:.1} µs", result["p50_us"], result["p99_us"]);
    std::fs::write(out.join("scoring_latency.json"), serde_json::to_string_pretty(&result).unwrap()).unwrap();
}
