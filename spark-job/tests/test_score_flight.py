"""train.py and score_flight.py submitted with spark-submit to the
standalone cluster of scripts/spark-cluster.sh. train.py trains this
module's model there. score_flight.py, a Spark job scoring a table through
Flight DoExchange with mapInArrow, scores 1,000,000 rows on the cluster
through two servers, and the result agrees with Spark's own
PipelineModel.transform of the same model on the same rows (identical
labels, probabilities within 1e-5). In local mode: a dead
endpoint is retried on the next one, and a missing column stops the job
before any task runs, naming the column."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SPARK_JOB, Server, simulate

CLUSTER = ROOT / "scripts" / "spark-cluster.sh"
MASTER = "spark://127.0.0.1:7077"
ROWS = 1_000_000


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    started = "workers alive: 0" in subprocess.run([CLUSTER, "status"], capture_output=True, text=True).stdout
    subprocess.run([CLUSTER, "up"], check=True)
    yield MASTER
    if started:
        subprocess.run([CLUSTER, "down"], check=True)


@pytest.fixture(scope="module")
def model(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GBT trained by train.py submitted to the cluster, with its
    Spark PipelineModel kept beside the ONNX file."""
    tmp = tmp_path_factory.mktemp("score-flight-model")
    data = simulate(tmp, 60_000, seed=17, kind="parquet")
    out = tmp / "flight-batch-model"
    done = submit(cluster, "train.py", "--input", data, "--output", out, "--model", "gbt", "--single",
                  "--class-weights", "none", "--trees", 20, "--depth", 5, "--parity-rows", 90)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out


def submit(master: str, script: str, *args: object) -> subprocess.CompletedProcess:
    """`spark-submit --master MASTER spark-job/SCRIPT ARGS`."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(
        [spark_submit, "--master", master, "--conf", "spark.executor.memory=2g", SPARK_JOB / script, *map(str, args)],
        cwd=SPARK_JOB, env=env, capture_output=True, text=True,
    )


def spark_scores(model: Path, table_path: Path) -> pa.Table:
    """Spark's own probability and label for every row (PipelineModel.transform)."""
    code = f"""
from pyspark.ml import PipelineModel
from fraudflight_spark import data, evaluation
from fraudflight_spark.session import spark_session
spark = spark_session("spark-own-scores")
rows = data.read_transactions(spark, {str(table_path)!r})
scored = evaluation.with_score(PipelineModel.load({str(model / "spark-model")!r}), rows)
scored.select("trans_num", "score").write.mode("overwrite").parquet({str(table_path) + ".spark-scores"!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SPARK_JOB)
    return pq.read_table(str(table_path) + ".spark-scores")


def test_train_py_submitted_to_the_cluster_trains_there(model: Path) -> None:
    meta = json.loads((model / "model.json").read_text())
    assert meta["training"]["spark_master"] == MASTER
    assert meta["algorithm"] == "gbt" and meta["training"]["parity_max_abs_diff"] <= 1e-5
    assert (model / "model.onnx").stat().st_size > 0 and (model / "spark-model" / "metadata").is_dir()


def test_a_million_rows_on_the_cluster_agree_with_spark_transform(model: Path, cluster: str, tmp_path: Path) -> None:
    table_path = simulate(tmp_path, ROWS, seed=23, kind="parquet")
    servers = [Server(model=model), Server(model=model)]
    try:
        out = tmp_path / "scored.parquet"
        done = submit(cluster, "score_flight.py", "--input", table_path, "--output", out, "--partitions", 8,
                      "--endpoint", ",".join(s.flight for s in servers))
        assert done.returncode == 0, done.stderr[-4000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["rows"] == ROWS
        scored_by = [exchanged_rows(s) for s in servers]
    finally:
        for s in servers:
            s.stop()
    assert all(n > 0 for n in scored_by) and sum(scored_by) == ROWS, f"rows per server: {scored_by}"

    ours = pq.read_table(out)
    original = pq.read_table(table_path)
    assert ours.num_rows == ROWS
    assert set(original.column_names) <= set(ours.column_names)
    assert set(pc.unique(ours["model_version"]).to_pylist()) == {"flight-batch-model"}

    spark = spark_scores(model, table_path)
    threshold = json.loads((model / "model.json").read_text())["threshold"]
    joined = ours.select(["trans_num", "fraud_score", "is_fraud_predicted"]).join(spark, "trans_num")
    assert joined.num_rows == ROWS
    ours_score = joined["fraud_score"].to_numpy().astype(np.float64)
    spark_score = joined["score"].to_numpy()
    assert np.max(np.abs(ours_score - spark_score)) <= 1e-5
    spark_label = spark_score >= threshold
    assert np.array_equal(joined["is_fraud_predicted"].to_numpy(), spark_label)


def test_a_dead_endpoint_is_retried_on_the_next_one(model: Path, tmp_path: Path) -> None:
    table_path = simulate(tmp_path, 20_000, seed=29, kind="parquet")
    server = Server(model=model)
    try:
        out = tmp_path / "scored.parquet"
        done = submit("local[2]", "score_flight.py", "--input", table_path, "--output", out, "--partitions", 4,
                      "--endpoint", f"grpc://127.0.0.1:1,{server.flight}")
        assert done.returncode == 0, done.stderr[-4000:]
    finally:
        server.stop()
    assert pq.read_table(out).num_rows == 20_000


def test_a_missing_column_stops_the_job_naming_it(model: Path, tmp_path: Path) -> None:
    table = pq.read_table(simulate(tmp_path, 1_000, seed=31, kind="parquet")).drop(["amt"])
    pq.write_table(table, tmp_path / "no-amount.parquet")
    server = Server(model=model)
    try:
        done = submit("local[1]", "score_flight.py", "--input", tmp_path / "no-amount.parquet", "--output", tmp_path / "never",
                      "--endpoint", server.flight)
    finally:
        server.stop()
    assert done.returncode != 0
    # spark-submit passes the Python driver's stderr on through its stdout.
    said = done.stdout + done.stderr
    assert "input lacks column(s) ['amt']" in said, said[-3000:]
    assert not (tmp_path / "never").exists()


def test_score_flight_runs_with_the_environments_own_python(model: Path, tmp_path: Path) -> None:
    """`.venv/bin/python spark-job/score_flight.py ...`, as docs/training.md runs the
    jobs, with a `python3` first on PATH that cannot be a Spark worker: Spark
    used to start its Python workers from PATH (ModuleNotFoundError: pyarrow)."""
    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "python3").write_text("#!/bin/sh\necho 'not the python the job runs with' >&2\nexit 97\n")
    (decoy / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env["PATH"] = f"{decoy}:{env['PATH']}"
    table_path = simulate(tmp_path, 5_000, seed=37, kind="parquet")
    server = Server(model=model)
    try:
        out = tmp_path / "scored.parquet"
        done = subprocess.run(
            [sys.executable, SPARK_JOB / "score_flight.py", *map(str, ["--input", table_path, "--output", out,
                                                                      "--partitions", 2, "--endpoint", server.flight])],
            cwd=ROOT, env={**env, "SPARK_MASTER": "local[2]"}, capture_output=True, text=True,
        )
    finally:
        server.stop()
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert pq.read_table(out).num_rows == 5_000


def exchanged_rows(server: Server) -> int:
    """fraudflight_exchange_rows_total from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "fraudflight_exchange_rows":
            return int(family.samples[0].value)
    return 0
