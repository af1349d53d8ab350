"""Closing the loop on the real services (run by `make test-services`, which
starts Cassandra and exports its login): `serve` stores DoPut transactions
in Cassandra, train.py trains from that table through the Spark Cassandra
Connector and deploys the model back to the same server, and the server's
`models` table records the deployed version with its metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from conftest import CASSANDRA, SPARK_JOB, serve_on_cassandra, simulate, train

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def keyspace() -> str:
    return f"loop_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def serve(keyspace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`fraudflight serve` with Cassandra only (Kafka and OpenSearch off)."""
    running = serve_on_cassandra(keyspace, tmp_path_factory.mktemp("serve") / "serve.log")
    yield running.flight
    running.stop(timeout=60)


def test_train_from_what_serve_stored_and_deploy_back(serve: str, keyspace: str, tmp_path: Path) -> None:
    table = pq.read_table(simulate(tmp_path, 40_000, seed=37, kind="parquet"))
    client = flight.connect(serve)
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("transactions"), table.schema)
    for batch in table.to_batches(max_chunksize=5_000):
        writer.write_batch(batch)
    writer.done_writing()
    writer.close()

    out = tmp_path / "trained-from-cassandra"
    done = train(
        f"cassandra://{CASSANDRA}/{keyspace}", out, "--model", "gbt", "--single", "--class-weights", "none",
        "--trees", 10, "--depth", 4, "--parity-rows", 60, "--deploy", serve, capture_output=True, text=True,
    )
    deployed = json.loads(done.stdout.strip().splitlines()[-1])
    assert deployed["version"] == "trained-from-cassandra" and deployed["deployed"] == serve
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["input"].startswith("cassandra://")
    rows = meta["training"]["rows"]
    assert rows["train"] + rows["validation"] + rows["test"] == 40_000

    info = json.loads(list(client.do_action(flight.Action("model-info", b"")))[0].body.to_pybytes())
    assert info["version"] == "trained-from-cassandra"
    recorded = models_table(keyspace, tmp_path)
    assert "trained-from-cassandra" in recorded
    # The server re-serialises the metrics (serde_json parses floats to within an ulp).
    stored = json.loads(recorded["trained-from-cassandra"]["metrics"])
    assert stored["pr_auc"] == pytest.approx(meta["metrics"]["pr_auc"], rel=1e-12)
    assert stored["confusion"] == meta["metrics"]["confusion"]


def test_training_from_cassandra_takes_labels_from_the_labels_table(serve: str, keyspace: str, tmp_path: Path) -> None:
    """A row in `labels` wins over the stored record's `is_fraud` (written
    straight to the table, so the outcome rows still say the opposite)."""
    table = pq.read_table(simulate(tmp_path, 2_000, seed=41, kind="parquet"))
    client = flight.connect(serve)
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("transactions"), table.schema)
    writer.write_table(table)
    writer.done_writing()
    writer.close()
    rows = table.select(["cc_num", "trans_num", "is_fraud"]).to_pylist()
    flipped = rows[:5]
    out = tmp_path / "labelled.json"
    code = f"""
import json
from fraudflight_spark import data
from fraudflight_spark.session import spark_session
source = "cassandra://{CASSANDRA}/{keyspace}"
spark = spark_session("labels-join", data.spark_config(source))
flipped = {flipped!r}
labels = spark.createDataFrame(
    [(str(r["cc_num"]), r["trans_num"], 1 - r["is_fraud"]) for r in flipped], "cc_num string, trans_num string, is_fraud int")
labels.write.format("org.apache.spark.sql.cassandra").options(keyspace={keyspace!r}, table="labels").mode("append").save()
df = data.read_transactions(spark, source)
wanted = [r["trans_num"] for r in flipped]
got = {{r["trans_num"]: r["is_fraud"] for r in df.where(df.trans_num.isin(wanted)).collect()}}
stored = data.cassandra_table(spark, {keyspace!r}, "transactions").count()
open({str(out)!r}, "w").write(json.dumps({{"rows": df.count(), "stored": stored, "labels": got}}))
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SPARK_JOB)
    result = json.loads(out.read_text())
    assert result["rows"] == result["stored"] >= 2_000, "the join neither drops nor repeats a transaction"
    assert result["labels"] == {r["trans_num"]: 1 - r["is_fraud"] for r in flipped}


def models_table(keyspace: str, tmp_path: Path) -> dict[str, dict]:
    """The `models` table, read with the same connector."""
    out = tmp_path / "models.json"
    code = f"""
import json, sys
from fraudflight_spark import data
from fraudflight_spark.session import spark_session
source = "cassandra://{CASSANDRA}/{keyspace}"
spark = spark_session("read-models", data.spark_config(source))
rows = spark.read.format("org.apache.spark.sql.cassandra").options(keyspace={keyspace!r}, table="models").load().collect()
open({str(out)!r}, "w").write(json.dumps({{r["version"]: {{"metrics": r["metrics"]}} for r in rows}}))
"""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SPARK_JOB)
    assert time.monotonic() - started < 600
    return json.loads(out.read_text())
