#!/usr/bin/env bash
# `make bench`: every benchmark, then target/bench/results.json and
# results.md (benches/report.py). Never part of `make test`.
#
#   1. criterion micro-benchmarks (release): scoring core vs bare ONNX Runtime
#      at batch 1 / 64 / 1024 / 65536 and single-row latency (benches/scoring.rs),
#      JSON decode (benches/decode.rs), the simulator (benches/simulate.rs);
#   2. Flight DoExchange, 10,000,000 rows from a pyarrow.flight client, against
#      fraudflight and the Python peer (benches/flight_exchange.py);
#   3. through Kafka, each next to the Structured Streaming peer where the
#      issue asks for one (benches/kafka_pipeline.py, with the real services
#      started and stopped by scripts/with-services.sh): Kafka to score with
#      serve's peak RSS, latency under a fixed 5,000 records/s, and the full
#      pipeline against each sink's ceiling alone (benches/sink_ceiling.rs);
#      BENCH_KAFKA=0 skips it;
#   4. our model with history against the fraud-detection handbook's windowed
#      random forest on handbook-family data (benches/history_model.py, Spark,
#      a few minutes);
#   5. with BENCH_SOAK=1 (or `make soak`), the soak (benches/soak.py, about an
#      hour): a month of traffic with labels through two instances, a kill -9,
#      a Cassandra restart and 100,000 hostile labels;
#   6. with BENCH_SPARK=1, Spark training and batch scoring through Flight next
#      to Spark's own transform (benches/spark/batch_scoring.py; ~15 min more).
# Each step after a warm-up, medians over repeats; each is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "release build"
cargo build --release --quiet

step "criterion: scoring core, JSON decode, simulator"
cargo bench --bench scoring --bench decode --bench simulate

step "Flight DoExchange vs the Python peer"
"$PY" benches/flight_exchange.py --rows "${FLIGHT_ROWS:-10000000}"

if [ "${BENCH_KAFKA:-1}" = 1 ]; then
  rm -f target/bench/kafka.json # the two runs below fill it; nothing stale
  # Kafka alone for the Kafka-only parts: idle Cassandra and OpenSearch JVMs
  # took enough of the two cores to cut the Kafka rate by a third.
  step "Kafka: to score (and memory), latency under load, with their Structured Streaming peer"
  scripts/with-services.sh --services kafka "$PY" benches/kafka_pipeline.py --only kafka --only latency ${KAFKA_BENCH_ARGS:-}
  step "Kafka + Cassandra + OpenSearch: full pipeline and each sink's ceiling alone"
  scripts/with-services.sh "$PY" benches/kafka_pipeline.py --only pipeline ${KAFKA_BENCH_ARGS:-}
fi

step "Spark: the model with history vs the handbook's windowed random forest (same data, same split)"
"$PY" benches/history_model.py

if [ "${BENCH_SOAK:-0}" = 1 ]; then
  step "Soak: a month of traffic with labels, two instances, a kill -9, a Cassandra restart, hostile labels"
  scripts/with-services.sh --services "kafka cassandra" "$PY" benches/soak.py ${SOAK_ARGS:-}
fi

if [ "${BENCH_SPARK:-0}" = 1 ]; then
  step "Spark: training, batch scoring through Flight vs Spark transform"
  "$PY" benches/spark/batch_scoring.py --rows "${SPARK_ROWS:-1000000}" --master "${SPARK_MASTER:-local[*]}"
fi

step "results"
"$PY" benches/report.py
echo "written target/bench/results.json and target/bench/results.md"
