# fraudflight — every entry point. `make demo` and `make test` work from a
# fresh clone: they install what they need (Rust crates through cargo;
# ONNX Runtime's wheel for the demo; the whole Python environment with
# PySpark for the tests). Reading this file runs nothing: every step is a
# target.

CARGO ?= cargo
PY := .venv/bin/python
BIN := target/release/fraudflight

.PHONY: setup setup-runtime setup-build shared-target setup-browser build demo check test test-unit test-rust \
	test-python test-browser test-services test-orders test-pipeline services-up services-down bench model model-handbook dashboards fuzz soak

## Before anything builds, a fresh clone's target/ becomes a link to the Cargo
## build cache shared by the clones on this machine, so a clean-clone `make
## test` compiles only fraudflight, not every dependency
## (FRAUDFLIGHT_SHARED_TARGET=0 opts out).
shared-target:
	@scripts/shared-target.sh

## What the build needs from the system: OpenSSL headers and pkg-config (librdkafka with SSL).
setup-build:
	@scripts/setup-system.sh build

## ONNX Runtime only (its wheel's libonnxruntime.so is what the server loads): enough for the demo.
setup-runtime:
	@scripts/setup-python.sh --runtime

## Everything the tests use: the build's and the local services' system packages (openssl,
## nginx), and the whole Python environment (.venv): PySpark, onnxruntime, pyarrow, pytest, ruff.
setup:
	@scripts/setup-system.sh all
	@scripts/setup-python.sh

build: setup-build shared-target
	$(CARGO) build --release

## The embedded default: simulator -> scorer -> memory; Flight on :50051, status page on http://127.0.0.1:8080.
demo: setup-runtime build
	$(BIN) demo $(DEMO_ARGS)

## Every test: Rust unit and integration tests, the Python (Spark, pyarrow.flight, HTTP API, saved
## objects) tests, the live dashboard in headless Chromium, the tests against real Kafka,
## Cassandra and OpenSearch (started here, stopped after), and the fuzz targets for a bounded time.
test: setup check test-rust test-python test-browser test-services fuzz

## The fast lane (a few minutes with warm caches; `.ci/run` runs it first): formatting, clippy with
## warnings as errors, ruff on the Python, the import-layer check, and the Rust unit tests.
check: setup-build shared-target
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings
	@scripts/setup-python.sh --lint
	.venv/bin/ruff check spark-job benches dashboards scripts
	$(CARGO) test --lib --quiet

## Quick loop: Rust unit tests only (no server, no Spark).
test-unit: shared-target
	$(CARGO) test --lib

test-rust: shared-target
	$(CARGO) test

# `cargo test --no-run` builds target/debug/fraudflight with the same features
# as the Rust tests, so nothing is compiled twice.
test-python: shared-target
	$(CARGO) test --no-run
	$(PY) -m pytest -q -m "not services" spark-job/tests dashboards/tests

## Debian's Chromium and web/'s pinned npm packages (playwright-core) for the browser test.
setup-browser:
	@scripts/setup-browser.sh

## The live dashboard of `fraudflight demo` in headless Chromium; screenshot in target/artifacts/.
test-browser: setup-browser shared-target
	$(CARGO) test --no-run
	cd web && npm test

## Tests against the real services: brings them up (scripts/services.sh, Elasticsearch 7.17 too), stops what it started.
## One test at a time: the fault tests stop and restart Cassandra, OpenSearch and Elasticsearch.
SERVICE_TESTS := --test kafka_is_real --test cassandra_is_real --test opensearch_is_real \
	--test simulate_and_replay_to_kafka --test serve_pipeline --test serve_faults --test dashboards_field_caps \
	--test kafka_sasl --test backend_security --test readme_serve --test search_sink_engines --test labels_from_kafka --test hostile_input --test restart_and_upgrade --test history_instances --test history_store --test history_orders --test model_quality --test quality_book
test-services: shared-target
	$(CARGO) test --no-run $(SERVICE_TESTS)
	scripts/with-services.sh --services "kafka cassandra opensearch opensearch-tls elasticsearch" sh -c '$(CARGO) test $(SERVICE_TESTS) -- --include-ignored --test-threads=1 && \
		$(PY) -m pytest -q -m services spark-job/tests'

## Every order of arrival of tests/history_orders.rs alone (make test runs them too).
test-orders: shared-target
	$(CARGO) test --no-run --test history_orders
	scripts/with-services.sh --services "kafka cassandra" $(CARGO) test --test history_orders -- --include-ignored --test-threads=1

## Only the `serve` pipeline tests (end to end, bad input, faults), for a quicker loop.
test-pipeline: shared-target
	$(CARGO) test --no-run --test serve_pipeline --test serve_faults
	scripts/with-services.sh $(CARGO) test --test serve_pipeline --test serve_faults -- --include-ignored --test-threads=1

## The cargo-fuzz targets (JSON records, CSV replay, Flight tickets / commands / actions, model.json),
## FUZZ_SECONDS each (default 30); summary in target/fuzz/summary.txt.
fuzz: shared-target
	scripts/fuzz.sh

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

## The soak (benches/soak.py): 5,000,000 transactions over a month of simulated days with their
## labels through Kafka, two instances, quality and retraining on, a kill -9 and a Cassandra
## restart, 100,000 hostile labels; about an hour. SOAK_ARGS="--transactions 500000" for a short one.
soak: setup shared-target
	cargo build --release --quiet
	scripts/with-services.sh --services "kafka cassandra" $(PY) benches/soak.py $(SOAK_ARGS)

## Benchmarks, then target/bench/results.json and results.md (scripts/bench.sh; never part of
## `make test`). BENCH_SPARK=1 adds Spark training and batch scoring (benches/spark/).
bench: setup shared-target
	scripts/bench.sh

## Rewrite the Kibana / OpenSearch Dashboards saved objects (dashboards/build.py) and check them.
dashboards:
	python3 dashboards/build.py
	python3 dashboards/check.py

## Retrain the shipped model from 500,000 simulated transactions.
model: setup build
	mkdir -p target/data
	$(BIN) simulate --count 500000 --seed 1 --csv target/data/train.csv
	cd spark-job && ../$(PY) train.py --input ../target/data/train.csv --output ../models/$(or $(VERSION),gbt-sim-v1) --model gbt --single --class-weights none --no-history

## Retrain the shipped history model from 300,000 simulated transactions of handbook fraud
## (models/handbook/: not the demo's default; `fraudflight demo --fraud handbook --model ...`).
model-handbook: setup build
	mkdir -p target/data
	$(BIN) simulate --fraud handbook --customers 1000 --count 300000 --seed 1 --csv target/data/handbook.csv
	cd spark-job && ../$(PY) train.py --input ../target/data/handbook.csv --output ../models/handbook/gbt-handbook-history-v1 --history --model gbt --single
	rm -rf models/handbook/gbt-handbook-history-v1/spark-model
