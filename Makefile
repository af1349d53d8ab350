# fraudflight — every entry point. `make demo` and `make test` work from a
# fresh clone: they install what they need (Rust crates through cargo, the
# Python environment with PySpark and onnxruntime through pip).

CARGO ?= cargo

# Before anything builds, a fresh clone's target/ becomes a link to the Cargo
# build cache shared by the clones on this machine, so a clean-clone `make
# test` compiles only fraudflight, not every dependency (scripts/shared-target.sh;
# FRAUDFLIGHT_SHARED_TARGET=0 opts out).
SHARED_TARGET := $(shell scripts/shared-target.sh)
PY := .venv/bin/python
BIN := target/release/fraudflight

.PHONY: setup setup-browser build demo test test-unit test-rust test-python test-browser test-services test-pipeline services-up services-down bench model dashboards fuzz

## OpenSSL headers for the build (librdkafka with SSL and SASL/SCRAM), and the Python environment (.venv):
## PySpark, onnxruntime (its libonnxruntime.so is what the server loads), pyarrow, pytest.
setup:
	@scripts/setup-system.sh
	@scripts/setup-python.sh

build:
	$(CARGO) build --release

## The embedded default: simulator -> scorer -> memory; Flight on :50051, status page on http://127.0.0.1:8080.
demo: setup build
	$(BIN) demo $(DEMO_ARGS)

## Every test: Rust unit and integration tests, the Python (Spark, pyarrow.flight, HTTP API, saved
## objects) tests, the live dashboard in headless Chromium, the tests against real Kafka,
## Cassandra and OpenSearch (started here, stopped after), and the fuzz targets for a bounded time.
test: setup test-rust test-python test-browser test-services fuzz

## Quick loop: Rust unit tests only (no server, no Spark).
test-unit:
	$(CARGO) test --lib

test-rust:
	$(CARGO) test

# `cargo test --no-run` builds target/debug/fraudflight with the same features
# as the Rust tests, so nothing is compiled twice.
test-python:
	$(CARGO) test --no-run
	$(PY) -m pytest -q -m "not services" spark-job/tests dashboards/tests

## Debian's Chromium and web/'s pinned npm packages (playwright-core) for the browser test.
setup-browser:
	@scripts/setup-browser.sh

## The live dashboard of `fraudflight demo` in headless Chromium; screenshot in target/artifacts/.
test-browser: setup-browser
	$(CARGO) test --no-run
	cd web && npm test

## Tests against the real services: brings them up (scripts/services.sh), stops what it started.
## One test at a time: the fault tests stop and restart Cassandra and OpenSearch.
SERVICE_TESTS := --test kafka_is_real --test cassandra_is_real --test opensearch_is_real \
	--test simulate_and_replay_to_kafka --test serve_pipeline --test serve_faults --test dashboards_field_caps \
	--test kafka_sasl --test backend_security
test-services:
	$(CARGO) test --no-run $(SERVICE_TESTS)
	scripts/with-services.sh sh -c '$(CARGO) test $(SERVICE_TESTS) -- --include-ignored --test-threads=1 && \
		$(PY) -m pytest -q -m services spark-job/tests'

## Only the `serve` pipeline tests (end to end, bad input, faults), for a quicker loop.
test-pipeline:
	$(CARGO) test --no-run --test serve_pipeline --test serve_faults
	scripts/with-services.sh $(CARGO) test --test serve_pipeline --test serve_faults -- --include-ignored --test-threads=1

## The cargo-fuzz targets (JSON records, CSV replay, Flight tickets / commands / actions, model.json),
## FUZZ_SECONDS each (default 30); summary in target/fuzz/summary.txt.
fuzz:
	scripts/fuzz.sh

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

## Benchmarks, then target/bench/results.json and results.md (scripts/bench.sh; never part of
## `make test`). BENCH_SPARK=1 adds Spark training and batch scoring (benches/spark/).
bench: setup
	scripts/bench.sh

## Rewrite the Kibana / OpenSearch Dashboards saved objects (dashboards/build.py) and check them.
dashboards:
	python3 dashboards/build.py
	python3 dashboards/check.py

## Retrain the shipped model from 500,000 simulated transactions.
model: setup build
	mkdir -p target/data
	$(BIN) simulate --count 500000 --seed 1 --csv target/data/train.csv
	cd spark-job && ../$(PY) train.py --input ../target/data/train.csv --output ../models/$(or $(VERSION),gbt-sim-v1) --model gbt --single --class-weights none
