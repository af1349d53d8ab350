"""Shared fixtures: the fraudflight binary, simulated data, a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest

from fraudflight_spark import server as processes

ROOT = Path(__file__).resolve().parents[2]
SPARK_JOB = ROOT / "spark-job"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "services: needs Kafka / Cassandra / OpenSearch (make test-services runs these)")


def binary() -> Path:
    """The fraudflight binary: $FRAUDFLIGHT_BIN, else the debug build."""
    path = Path(os.environ.get("FRAUDFLIGHT_BIN", ROOT / "target" / "debug" / "fraudflight"))
    if not path.exists():
        pytest.fail(f"{path} not found: run `cargo build` first (make test does)")
    return path


def shipped_model() -> Path:
    models = sorted(p for p in (ROOT / "models").iterdir() if (p / "model.json").exists())
    assert models, "no model shipped under models/"
    return models[-1]


def simulate(tmp: Path, count: int, seed: int, kind: str = "parquet") -> Path:
    out = tmp / f"sim-{seed}-{count}.{kind}"
    subprocess.run([binary(), "simulate", "--count", str(count), "--seed", str(seed), f"--{kind}", out], check=True)
    return out


def train(data: Path, out: Path, *args: object, **run: object) -> subprocess.CompletedProcess:
    """Runs spark-job/train.py on `data` into `out` with extra arguments."""
    command = [sys.executable, SPARK_JOB / "train.py", "--input", data, "--output", out, *map(str, args)]
    return subprocess.run(command, check=True, cwd=SPARK_JOB, **run)


CASSANDRA = os.environ.get("FRAUDFLIGHT_CASSANDRA_NODES", "127.0.0.1:9042").split(",")[0]


def serve_on_cassandra(keyspace: str, log: Path, **extra: str) -> processes.Running:
    """`fraudflight serve` on Cassandra only (Kafka and OpenSearch off),
    measuring live quality every second; `extra` environment on top."""
    env = {
        **os.environ,
        "FRAUDFLIGHT_KAFKA_BROKERS": "",
        "FRAUDFLIGHT_OPENSEARCH_URL": "",
        "FRAUDFLIGHT_CASSANDRA_NODES": CASSANDRA,
        "FRAUDFLIGHT_CASSANDRA_KEYSPACE": keyspace,
        "FRAUDFLIGHT_FLIGHT_ADDR": "127.0.0.1:0",
        "FRAUDFLIGHT_HTTP_ADDR": "127.0.0.1:0",
        "FRAUDFLIGHT_QUALITY_INTERVAL_MS": "1000",
        **extra,
    }
    return processes.start([binary(), "serve"], env=env, cwd=ROOT, log=log)


def flight_action(endpoint: str, name: str, body: bytes = b"") -> dict:
    """A DoAction's JSON answer."""
    client = flight.connect(endpoint)
    try:
        return json.loads(list(client.do_action(flight.Action(name, body)))[0].body.to_pybytes())
    finally:
        client.close()


def flight_put(endpoint: str, path: str, table: pa.Table) -> None:
    """DoPut of a pyarrow table (transactions or labels), in batches of 5,000."""
    client = flight.connect(endpoint)
    writer, _ = client.do_put(flight.FlightDescriptor.for_path(path), table.schema)
    for batch in table.to_batches(max_chunksize=5_000):
        writer.write_batch(batch)
    writer.done_writing()
    writer.close()
    client.close()


def fraud_labels(table: pa.Table) -> pa.Table:
    """A label for every fraud of a simulated table, reported an hour after it."""
    frauds = table.filter(pc.equal(table.column("is_fraud"), 1))
    return pa.table({
        "trans_num": frauds.column("trans_num"),
        "cc_num": frauds.column("cc_num"),
        "is_fraud": frauds.column("is_fraud"),
        "reported_at": pc.add(frauds.column("unix_time"), 3_600),
    })


class Server:
    """A `fraudflight demo` process on free ports."""

    def __init__(self, rate: int = 0, model: Path | None = None) -> None:
        extra = ["--model", str(model)] if model else []
        self.log = Path(tempfile.mkstemp(prefix="fraudflight-demo-", suffix=".log")[1])
        running = processes.start(
            [binary(), "demo", "--rate", str(rate), "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", *extra],
            cwd=ROOT, log=self.log,
        )
        self.proc, self.flight, self.http = running.proc, running.flight, running.http
        self._running = running

    def stop(self) -> str:
        """Stops the server; its log (stderr)."""
        self._running.stop(timeout=20)
        return self.log.read_text()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()
