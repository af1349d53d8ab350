"""train.py end to end on a small simulated set: it trains, exports, the ONNX
graph loads in onnxruntime, parity with Spark holds, and the Rust server
accepts the model (it re-checks parity itself before serving)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.flight as flight
import pytest

from conftest import SPARK_JOB, Server, simulate

PARITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    data = simulate(tmp, 60_000, seed=3, kind="csv")
    out = tmp / "model-under-test"
    subprocess.run(
        [sys.executable, SPARK_JOB / "train.py", "--input", data, "--output", out, "--trees", "12", "--depth", "4", "--parity-rows", "150"],
        check=True,
        cwd=SPARK_JOB,
    )
    return out


def test_writes_the_model_files_with_metrics(trained: Path) -> None:
    meta = json.loads((trained / "model.json").read_text())
    assert meta["version"] == "model-under-test"
    assert 0.0 < meta["threshold"] < 1.0
    assert meta["metrics"]["roc_auc"] > 0.9
    assert 0.0 < meta["metrics"]["pr_auc"] <= 1.0
    assert set(meta["metrics"]["confusion"]) == {"tp", "fp", "fn", "tn"}
    assert [i["name"] for i in meta["inputs"]] == ["category", "gender", "amt", "distance_km", "age", "hour"]
    assert meta["training"]["parity_max_abs_diff"] <= PARITY_TOLERANCE
    rows = meta["training"]["rows"]
    assert rows["train"] > rows["validation"] > 0 and rows["test"] > 0


def test_onnx_loads_and_matches_spark_on_parity_vectors(trained: Path) -> None:
    session = ort.InferenceSession(str(trained / "model.onnx"), providers=["CPUExecutionProvider"])
    vectors = [json.loads(line) for line in (trained / "parity.jsonl").read_text().splitlines()]
    assert len(vectors) == 150
    assert any(v["record"]["is_fraud"] == 1 for v in vectors)
    feeds = {
        "category": np.array([[v["record"]["category"]] for v in vectors], dtype=object),
        "gender": np.array([[v["record"].get("gender", "")] for v in vectors], dtype=object),
        "amt": np.array([[v["record"]["amt"]] for v in vectors], dtype=np.float64),
    }
    for name in ("distance_km", "age", "hour"):
        feeds[name] = np.array([[v["features"][name]] for v in vectors], dtype=np.float64)
    got = session.run(["probability"], feeds)[0][:, 0]
    want = np.array([v["probability"] for v in vectors])
    assert np.max(np.abs(got - want)) <= PARITY_TOLERANCE


def test_unseen_category_scores_like_spark_keep(trained: Path) -> None:
    session = ort.InferenceSession(str(trained / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "category": np.array([["never_seen_before"]], dtype=object),
        "gender": np.array([["X"]], dtype=object),
        "amt": np.array([[42.0]]),
        "distance_km": np.array([[10.0]]),
        "age": np.array([[40.0]]),
        "hour": np.array([[12.0]]),
    }
    p = session.run(["probability"], feeds)[0][0, 0]
    assert 0.0 <= p <= 1.0


def test_the_rust_server_accepts_the_trained_model(trained: Path) -> None:
    server = Server()
    try:
        client = flight.connect(server.flight)
        body = json.dumps({"path": str(trained)}).encode()
        loaded = json.loads(list(client.do_action(flight.Action("load-model", body)))[0].body.to_pybytes())
        assert loaded["version"] == "model-under-test"
        assert loaded["parity"]["rows"] == 150
        assert loaded["parity"]["max_probability_diff"] <= PARITY_TOLERANCE
    finally:
        server.stop()
