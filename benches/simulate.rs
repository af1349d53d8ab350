//! Simulator throughput: generating transactions, and generating them into a
//! Kaggle-layout CSV (written to an in-memory sink so the disk is not
//! measured). Target: 500,000 transactions/s to a file on one core.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fraudflight::simulate::output::{write_all, CsvWriter, ParquetWriter, TransactionWriter};
use fraudflight::simulate::{SimConfig, Simulator};

const N: usize = 200_000;

// The binary's allocator, so the benchmark measures what `simulate` runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("simulate");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("generate", N), |b| {
        b.iter(|| Simulator::new(SimConfig::default()).take(N).map(|t| t.amt).sum::<f64>())
    });
    let dir = tempfile::tempdir().unwrap();
    group.bench_function(BenchmarkId::new("csv_file", N), |b| {
        b.iter(|| {
            let w: Box<dyn TransactionWriter> = Box::new(CsvWriter::create(&dir.path().join("bench.csv")).unwrap());
            write_all(Simulator::new(SimConfig::default()), N, vec![w]).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("parquet_file", N), |b| {
        b.iter(|| {
            let w: Box<dyn TransactionWriter> =
                Box::new(ParquetWriter::create(&dir.path().join("bench.parquet")).unwrap());
            write_all(Simulator::new(SimConfig::default()), N, vec![w]).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
