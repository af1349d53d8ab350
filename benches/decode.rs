//! Decoding Kafka record values: JSON transactions (as `fraudflight
//! simulate --brokers` produces them) into an Arrow batch, one core.
//!
//! - `json_decode/records`: `decode_json` of each value alone.
//! - `json_decode/to_arrow`: `TransactionBatchBuilder::append_json` (what
//!   the pipeline does: text borrowed from the value straight into the
//!   builder) for a batch of 10,000.
//!
//! Target: 1,000,000 records/s on one core.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fraudflight::record::{decode_json, TransactionBatchBuilder};
use fraudflight::simulate::{SimConfig, Simulator};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 10_000;

fn bench(c: &mut Criterion) {
    let values: Vec<Vec<u8>> =
        Simulator::new(SimConfig::default()).take(N).map(|t| serde_json::to_vec(&t).unwrap()).collect();
    let mut group = c.benchmark_group("json_decode");
    group.throughput(Throughput::Elements(N as u64));
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4)).sample_size(30);
    group.bench_function("records", |b| b.iter(|| values.iter().map(|v| decode_json(v).unwrap().amt).sum::<f64>()));
    group.bench_function("to_arrow", |b| {
        b.iter(|| {
            let mut builder = TransactionBatchBuilder::with_capacity(N);
            for v in &values {
                builder.append_json(v).unwrap();
            }
            builder.finish()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
