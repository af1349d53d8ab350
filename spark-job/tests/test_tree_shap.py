"""The alerts' explanations are SHAP values: `fraudflight explain` (the
service's TreeSHAP, the numbers `top_features` keeps the largest of) against
the `shap` package's exact path-dependent TreeSHAP, on models train.py
exported (a GBT and a random forest), to 1e-6.

shap is given the trees as the ONNX file holds them (thresholds, leaf
weights, `x <= threshold` to the left, a missing value to the right) and
each node's cover from the model's metadata; it computes its own expected
values. The feature vector of each parity row is the ONNX graph's own
(`features`, read with ONNX Runtime), and a string input's value is the
sum of its one-hot slots'.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import shap
from onnx import helper, numpy_helper

from conftest import binary, simulate, train
from fraudflight_spark.export_onnx import COVERS_KEY

TOLERANCE = 1e-6


@pytest.fixture(scope="module", params=["gbt", "rf"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp(f"shap-{request.param}")
    data = simulate(tmp, 20_000, seed=23, kind="parquet")
    out = tmp / f"{request.param}-model"
    train(data, out, "--model", request.param, "--single", "--class-weights", "balanced", "--trees", 12,
          "--depth", 5, "--parity-rows", 120, "--no-history")
    return out


def attribute(node: onnx.NodeProto, name: str) -> object:
    found = [a for a in node.attribute if a.name == name]
    return helper.get_attribute_value(found[0]) if found else None


def shap_trees(graph: onnx.ModelProto) -> tuple[list[dict], float]:
    """The ensemble as shap's dictionary trees, and its base value."""
    ensemble = next(n for n in graph.graph.node if n.op_type == "TreeEnsembleRegressor")
    covers = json.loads(next(p.value for p in graph.metadata_props if p.key == COVERS_KEY))
    tree_ids, node_ids = attribute(ensemble, "nodes_treeids"), attribute(ensemble, "nodes_nodeids")
    features, modes = attribute(ensemble, "nodes_featureids"), attribute(ensemble, "nodes_modes")
    yes, no = attribute(ensemble, "nodes_truenodeids"), attribute(ensemble, "nodes_falsenodeids")
    thresholds = numpy_helper.to_array(attribute(ensemble, "nodes_values_as_tensor"))
    weights = numpy_helper.to_array(attribute(ensemble, "target_weights_as_tensor"))
    leaf_value = {(t, n): w for t, n, w in zip(attribute(ensemble, "target_treeids"),
                                                attribute(ensemble, "target_nodeids"), weights, strict=True)}
    base = float(numpy_helper.to_array(attribute(ensemble, "base_values_as_tensor"))[0])
    trees = []
    for tree in sorted(set(tree_ids)):
        ks = sorted((k for k in range(len(tree_ids)) if tree_ids[k] == tree), key=lambda k: node_ids[k])
        assert [node_ids[k] for k in ks] == list(range(len(ks))), "node ids 0..n-1 within a tree"
        leaf = np.array([modes[k] == b"LEAF" for k in ks])
        cover = np.array([covers[k] for k in ks], dtype=np.float64)
        left = np.where(leaf, -1, [yes[k] for k in ks])
        right = np.where(leaf, -1, [no[k] for k in ks])
        values = np.array([leaf_value.get((tree, node_ids[k]), 0.0) for k in ks], dtype=np.float64)
        # A split's value: its leaves' values weighted by cover (children have higher ids).
        for i in reversed(range(len(ks))):
            if not leaf[i]:
                values[i] = (cover[left[i]] * values[left[i]] + cover[right[i]] * values[right[i]]) / cover[i]
        trees.append({
            "children_left": left, "children_right": right, "children_default": right,
            "features": np.where(leaf, -2, [features[k] for k in ks]),
            "thresholds": np.where(leaf, -2.0, [thresholds[k] for k in ks]),
            "values": values.reshape(-1, 1), "node_sample_weight": cover,
        })
    return trees, base


def feature_vectors(graph: onnx.ModelProto, meta: dict, rows: list[dict]) -> np.ndarray:
    """The graph's own feature vector of each parity row (its `features` output)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(graph)
    exposed.graph.output.append(helper.make_tensor_value_info("features", onnx.TensorProto.DOUBLE, [None, None]))
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in meta["inputs"]:
        values = [r["features"].get(i["name"], r["record"].get(i["name"])) for r in rows]
        if i["type"] == "string":
            feeds[i["name"]] = np.array([[v if v is not None else ""] for v in values], dtype=object)
        else:
            feeds[i["name"]] = np.array([[float(v)] for v in values], dtype=np.float64)
    return session.run(["features"], feeds)[0]


def slots(graph: onnx.ModelProto, meta: dict) -> dict[str, list[int]]:
    """Each graph input's positions in the feature vector."""
    encoders = {n.input[0]: attribute(n, "cats_strings") for n in graph.graph.node if n.op_type == "OneHotEncoder"}
    concat = next(n for n in graph.graph.node if n.op_type == "Concat")
    owners, at = {}, 0
    for part in concat.input:
        name = part.removesuffix("_oh")
        width = len(encoders[name]) if name in encoders and part.endswith("_oh") else 1
        owners[name] = list(range(at, at + width))
        at += width
    assert set(owners) == {i["name"] for i in meta["inputs"]}
    return owners


def test_explanations_are_shaps_tree_shap_values(model: Path) -> None:
    meta = json.loads((model / "model.json").read_text())
    graph = onnx.load(str(model / "model.onnx"))
    rows = [json.loads(line) for line in (model / "parity.jsonl").read_text().splitlines() if line.strip()]
    done = subprocess.run([binary(), "explain", "--model", model], capture_output=True, text=True, check=True)
    ours = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(ours) == len(rows) and {o["method"] for o in ours} == {"tree_shap"}

    trees, base = shap_trees(graph)
    explainer = shap.TreeExplainer({"trees": trees, "base_offset": base, "input_dtype": np.float64,
                                    "internal_dtype": np.float64})
    assert explainer.feature_perturbation == "tree_path_dependent"
    x = feature_vectors(graph, meta, rows)
    values = explainer.shap_values(x)
    expected = float(np.ravel(explainer.expected_value)[0])
    owners = slots(graph, meta)
    worst = 0.0
    for o, row_values in zip(ours, values, strict=True):
        assert abs(o["bias"] - expected) <= TOLERANCE, (o["bias"], expected)
        for name, positions in owners.items():
            worst = max(worst, abs(o["contributions"][name] - float(row_values[positions].sum())))
    assert worst <= TOLERANCE, f"largest difference from shap {worst:.3g}"

    # They add up to the margin the score came from.
    for o in ours:
        margin = o["bias"] + sum(o["contributions"].values())
        score = 1 / (1 + np.exp(-margin)) if meta["algorithm"] == "gbt" else margin
        assert abs(score - o["score"]) <= 1e-5, (score, o["score"])
