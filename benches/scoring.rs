//! In-process scoring rate: conform + validate + features + ONNX Runtime +
//! outcome assembly, on Arrow batches of 1, 64, 1024 and 65536 simulated
//! transactions, with the shipped model.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fraudflight::record;
use fraudflight::score::registry::Registry;
use fraudflight::score::{ScoreOptions, Scorer};
use fraudflight::simulate::{SimConfig, Simulator};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let dir = fraudflight::demo::default_model_dir(None).expect("shipped model");
    let scorer = Scorer::new(Arc::new(Registry::open(&dir, 1).expect("model loads")));
    let txns: Vec<_> = Simulator::new(SimConfig::default()).take(65_536).collect();
    let mut group = c.benchmark_group("score");
    for size in [1usize, 64, 1024, 65_536] {
        let batch = record::to_batch(&txns[..size]);
        group.throughput(Throughput::Elements(size as u64));
        if size >= 65_536 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("batch", size), &batch, |b, batch| {
            b.iter(|| scorer.score(batch, &ScoreOptions::default()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
