"""train.py end to end on a small simulated set: model selection among the
three algorithms (one grid point each, class weights measured), the files
and the report it writes, parity with Spark, and deployment into a running
Rust server over Flight (which re-checks parity before swapping, and refuses
a corrupted model while the old one keeps serving)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.flight as flight
import pytest

from conftest import Server, simulate, train
from fraudflight_spark import deploy, evaluation
from fraudflight_spark.errors import JobError

PARITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    data = simulate(tmp, 60_000, seed=3, kind="parquet")
    out = tmp / "model-under-test"
    train(data, out, "--model", "auto", "--single", "--trees", 12, "--depth", 4, "--parity-rows", 150)
    return out


def test_selects_by_validation_pr_auc_with_measured_class_weights(trained: Path) -> None:
    meta = json.loads((trained / "model.json").read_text())
    candidates = meta["training"]["candidates"]
    assert {c["algorithm"] for c in candidates} == {"logistic_regression", "random_forest", "gbt"}
    # "auto" weights: each algorithm fitted unweighted and balanced.
    assert sorted(c["class_weights"] for c in candidates) == ["balanced"] * 3 + ["none"] * 3
    best = max(candidates, key=lambda c: c["validation_pr_auc"])
    assert (meta["algorithm"], meta["params"], meta["class_weights"]) == (best["algorithm"], best["params"], best["class_weights"])


def test_writes_the_model_files_metrics_and_report(trained: Path) -> None:
    meta = json.loads((trained / "model.json").read_text())
    assert meta["version"] == "model-under-test"
    assert 0.0 < meta["threshold"] < 1.0 and meta["threshold_target"] == "max-f1"
    assert meta["metrics"]["roc_auc"] > 0.9
    assert 0.0 < meta["metrics"]["pr_auc"] <= 1.0
    confusion = meta["metrics"]["confusion"]
    assert set(confusion) == {"tp", "fp", "fn", "tn"} and sum(confusion.values()) == meta["metrics"]["rows"]
    assert [i["name"] for i in meta["inputs"]] == ["category", "gender", "amt", "distance_km", "age", "hour"]
    # 60,000 transactions of 2,000 cards cover 12 days: too short for the
    # history features, so the default trains without them and says why.
    assert meta["training"]["history"]["used"] is False
    assert re.match(r"the input covers 1[23] days; the history features need 37 \(30 to warm",
                    meta["training"]["history"]["why_not"])
    assert meta["training"]["parity_max_abs_diff"] <= PARITY_TOLERANCE
    rows = meta["training"]["rows"]
    assert rows["train"] > rows["validation"] > 0 and rows["test"] > 0
    report = (trained / "report.md").read_text()
    assert f"**{meta['algorithm']}**" in report and f"{meta['metrics']['pr_auc']:.4f}" in report
    assert "predicted fraud" in report and "pr_curve.png" in report
    assert "without the history features: the input covers" in report
    cards = meta["metrics"]["card_precision"]
    assert cards["k"] == 100 and cards["days"] >= 1 and 0.0 <= cards["mean"] <= 1.0
    assert f"Card precision at 100: **{cards['mean']:.4f}**" in report
    assert (trained / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_deploys_to_a_running_server_and_a_corrupted_model_is_refused(trained: Path, tmp_path: Path) -> None:
    server = Server()
    try:
        before = model_info(server)
        loaded = deploy.deploy(server.flight, trained)
        assert loaded["version"] == "model-under-test"
        assert loaded["parity"]["rows"] == 150
        assert loaded["parity"]["max_probability_diff"] <= PARITY_TOLERANCE
        assert model_info(server)["version"] == "model-under-test" != before["version"]

        broken = tmp_path / "broken-model"
        shutil.copytree(trained, broken)
        meta = json.loads((broken / "model.json").read_text())
        meta["version"] = "broken-model"
        (broken / "model.json").write_text(json.dumps(meta))
        onnx_bytes = bytearray((broken / "model.onnx").read_bytes())
        onnx_bytes[len(onnx_bytes) // 2 : len(onnx_bytes) // 2 + 64] = b"\xff" * 64
        (broken / "model.onnx").write_bytes(bytes(onnx_bytes))
        with pytest.raises(deploy.DeployRefused, match="model refused, the old model keeps serving: invalid ONNX model"):
            deploy.deploy(server.flight, broken)
        assert model_info(server)["version"] == "model-under-test"
    finally:
        server.stop()


def test_train_py_deploys_with_its_flag(tmp_path: Path) -> None:
    """--deploy loads the freshly trained model; a tiny single-algorithm run."""
    data = simulate(tmp_path, 40_000, seed=5, kind="csv")
    server = Server()
    try:
        out = tmp_path / "deployed-by-flag"
        done = train(
            data, out, "--model", "lr", "--single", "--class-weights", "none", "--threshold-target", "recall>=0.8",
            "--parity-rows", 60, "--deploy", server.flight, capture_output=True, text=True,
        )
        last = json.loads(done.stdout.strip().splitlines()[-1])
        assert last["deployed"] == server.flight and last["version"] == "deployed-by-flag"
        assert model_info(server)["version"] == "deployed-by-flag"
        meta = json.loads((out / "model.json").read_text())
        assert meta["algorithm"] == "logistic_regression" and meta["metrics"]["recall"] > 0.5
    finally:
        server.stop()


def model_info(server: Server) -> dict:
    client = flight.connect(server.flight)
    try:
        return json.loads(list(client.do_action(flight.Action("model-info", b"")))[0].body.to_pybytes())
    finally:
        client.close()


def test_threshold_targets_pick_the_documented_point() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    labels = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    # precision at each cut: 1, 1, .67, .75, .6, .67, .57, .5; recall: .25 .5 .5 .75 .75 1 1 1
    assert evaluation.choose_threshold(scores, labels, "precision>=0.7") == 0.7
    assert evaluation.choose_threshold(scores, labels, "recall>=1") == 0.5
    assert evaluation.choose_threshold(scores, labels, "max-f1") == 0.5
    with pytest.raises(JobError, match="threshold target"):
        evaluation.choose_threshold(scores, labels, "accuracy>=0.9")
    with pytest.raises(JobError, match="no threshold reaches precision"):
        evaluation.choose_threshold(scores, np.zeros(8), "precision>=0.5")


def test_the_servable_threshold_labels_float32_ties_like_spark() -> None:
    t = 0.6851985795409494  # a real threshold whose float32 rounds up
    served = evaluation.servable(t)
    assert served <= t and float(np.float32(served)) == served
    assert float(np.float32(t)) >= served  # a score equal to t, as float32, is still >= the threshold
    assert evaluation.servable(0.5) == 0.5
