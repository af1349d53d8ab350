"""Exact ONNX export of a fitted Spark fraud pipeline.

The exported graph takes the raw columns (category and gender as strings,
numbers as doubles, each shaped [N, 1]) and returns `probability` [N, 1], the
probability of fraud, so the server does no encoding of its own:

    category --OneHotEncoder--+
    gender   --OneHotEncoder--+--Concat--> X (double) --> head --> probability
    amt, distance_km, ... ----+

The head is the classifier, computed the way Spark computes it:
- GBTClassifier: TreeEnsembleRegressor (sum of 2 * weight * leaf) -> Sigmoid.
- RandomForestClassifier: TreeEnsembleRegressor summing each tree's leaf
  class-1 fraction divided by the number of trees (Spark's normalised votes).
- LogisticRegression (binomial): MatMul + Add in double -> Sigmoid.

Why not onnxmltools: its `convert_sparkml` mis-converts tree models whose
splits are categorical (the one-hot columns), giving probabilities off by up to
0.7 while loading fine. Here the trees are walked from the fitted model and
written with double-precision thresholds (ai.onnx.ml opset 3
`nodes_values_as_tensor`), so every comparison is the one Spark made.

Supported: StringIndexer(handleInvalid="keep") -> OneHotEncoder(dropLast) ->
VectorAssembler -> one of the three classifiers. Anything else (another
stage, another classifier, a multiclass model, a non-binary categorical
split, an assembler order other than one-hot columns then numbers) raises
`ExportError` naming what could not be exported exactly.

A tree model's metadata carries every node's cover (COVERS_KEY): the
training weight that reached it, which ONNX's tree operators have no place
for and exact (path-dependent) TreeSHAP needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_OPSET = 17
ML_OPSET = 3
OUTPUT = "probability"
# The model's metadata entry with each tree node's training weight (its
# cover), in the order of the ensemble's nodes_* attributes, as JSON: what
# the server's exact TreeSHAP explanations weigh the branches by.
COVERS_KEY = "fraudflight.node_covers"


class ExportError(Exception):
    """The model cannot be exported exactly."""


@dataclass
class Input:
    """One raw column the graph takes."""

    name: str
    type: str  # "string" or "double"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}


@dataclass
class Trees:
    """A flattened tree ensemble in the ai.onnx.ml TreeEnsembleRegressor form."""

    tree_ids: list[int] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    feature_ids: list[int] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    target_tree_ids: list[int] = field(default_factory=list)
    target_node_ids: list[int] = field(default_factory=list)
    target_weights: list[float] = field(default_factory=list)
    # Per node (in the nodes_* order): the training weight that reached it
    # (Spark's impurityStats().count(), weighted). ONNX has no attribute for
    # it; exact TreeSHAP needs it (COVERS_KEY in the model's metadata).
    covers: list[float] = field(default_factory=list)


def _java_class(obj: Any) -> str:
    return obj.getClass().getSimpleName()


def _add_tree(
    trees: Trees, tree_id: int, root: Any, leaf_value: Callable[[Any], float], binary_features: set[int]
) -> None:
    """Walks one Spark tree, numbering nodes depth-first from 0; a leaf
    contributes `leaf_value(leaf)`."""
    counter = 0
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        node, node_id = stack.pop()
        trees.tree_ids.append(tree_id)
        trees.node_ids.append(node_id)
        trees.covers.append(float(node.impurityStats().count()))
        if _java_class(node) == "LeafNode":
            trees.feature_ids.append(0)
            trees.modes.append("LEAF")
            trees.values.append(0.0)
            trees.true_ids.append(0)
            trees.false_ids.append(0)
            trees.target_tree_ids.append(tree_id)
            trees.target_node_ids.append(node_id)
            trees.target_weights.append(leaf_value(node))
            continue
        split = node.split()
        feature = int(split.featureIndex())
        left_id, right_id = counter + 1, counter + 2
        counter += 2
        if _java_class(split) == "ContinuousSplit":
            # Spark: left when value <= threshold.
            true_id, false_id, threshold = left_id, right_id, float(split.threshold())
        elif _java_class(split) == "CategoricalSplit":
            left = sorted(float(c) for c in split.leftCategories())
            right = sorted(float(c) for c in split.rightCategories())
            if feature not in binary_features or sorted(left + right) != [0.0, 1.0]:
                raise ExportError(
                    f"categorical split on feature {feature} with categories {left} | {right}: "
                    "only binary (one-hot) categorical features can be exported exactly"
                )
            # value <= 0.5 means category 0.0.
            true_id, false_id = (left_id, right_id) if left == [0.0] else (right_id, left_id)
            threshold = 0.5
        else:
            raise ExportError(f"unsupported split type {_java_class(split)}")
        trees.feature_ids.append(feature)
        trees.modes.append("BRANCH_LEQ")
        trees.values.append(threshold)
        trees.true_ids.append(true_id)
        trees.false_ids.append(false_id)
        stack.append((node.rightChild(), right_id))
        stack.append((node.leftChild(), left_id))


def gbt_trees(gbt_model: Any, binary_features: set[int]) -> Trees:
    """Flattens a GBTClassificationModel; leaf weights carry Spark's factor 2,
    so that probability = sigmoid(sum of leaf weights)."""
    trees = Trees()
    weights = list(gbt_model.treeWeights)
    for tree_id, (tree, weight) in enumerate(zip(gbt_model.trees, weights, strict=True)):
        factor = 2.0 * float(weight)
        _add_tree(trees, tree_id, tree._java_obj.rootNode(), lambda leaf, f=factor: f * float(leaf.prediction()), binary_features)
    return trees


def forest_trees(forest_model: Any, binary_features: set[int]) -> Trees:
    """Flattens a RandomForestClassificationModel: Spark adds each tree's
    class-count fractions at the leaf reached and normalises the sum, so
    P(fraud) = sum over trees of (class-1 count / leaf total) / trees."""
    if forest_model.numClasses != 2:
        raise ExportError(f"random forest with {forest_model.numClasses} classes: only binary models are exported")
    trees = Trees()
    n_trees = len(forest_model.trees)

    def leaf_value(leaf: Any) -> float:
        stats = [float(v) for v in leaf.impurityStats().stats()]
        total = sum(stats)
        if total <= 0.0:
            raise ExportError("a random-forest leaf has no training weight; Spark would skip its vote")
        return stats[1] / total / n_trees

    for tree_id, tree in enumerate(forest_model.trees):
        _add_tree(trees, tree_id, tree._java_obj.rootNode(), leaf_value, binary_features)
    return trees


def _tree_head(trees: Trees, n_features: int, sigmoid: bool) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    last = helper.make_node("Sigmoid", ["margin"], [OUTPUT]) if sigmoid else helper.make_node("Identity", ["margin"], [OUTPUT])
    return [_tree_node(trees, n_features), last], []


def _linear_head(lr_model: Any, n_features: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """sigmoid(X . w + b) in double, as Spark's binomial LogisticRegressionModel."""
    if lr_model.numClasses != 2:
        raise ExportError(f"logistic regression with {lr_model.numClasses} classes: only binomial models are exported")
    weights = np.asarray(lr_model.coefficients.toArray(), dtype=np.float64)
    if weights.shape != (n_features,):
        raise ExportError(f"logistic regression has {weights.shape[0]} coefficients for {n_features} features")
    initializers = [
        numpy_helper.from_array(weights.reshape(n_features, 1), name="lr_weights"),
        numpy_helper.from_array(np.array([float(lr_model.intercept)], dtype=np.float64), name="lr_intercept"),
    ]
    nodes = [
        helper.make_node("MatMul", ["features", "lr_weights"], ["lr_dot"]),
        helper.make_node("Add", ["lr_dot", "lr_intercept"], ["margin"]),
        helper.make_node("Sigmoid", ["margin"], ["lr_probability"]),
        helper.make_node("Cast", ["lr_probability"], [OUTPUT], to=TensorProto.FLOAT),
    ]
    return nodes, initializers


def _tree_node(trees: Trees, n_features: int) -> onnx.NodeProto:
    def dbl(name: str, values: list[float]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(values, dtype=np.float64), name=name)

    if max(trees.feature_ids, default=0) >= n_features:
        raise ExportError("a tree uses a feature index beyond the assembled vector")
    return helper.make_node(
        "TreeEnsembleRegressor",
        ["features"],
        ["margin"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=trees.tree_ids,
        nodes_nodeids=trees.node_ids,
        nodes_featureids=trees.feature_ids,
        nodes_modes=trees.modes,
        nodes_values_as_tensor=dbl("nodes_values", trees.values),
        nodes_truenodeids=trees.true_ids,
        nodes_falsenodeids=trees.false_ids,
        nodes_missing_value_tracks_true=[0] * len(trees.node_ids),
        target_treeids=trees.target_tree_ids,
        target_nodeids=trees.target_node_ids,
        target_ids=[0] * len(trees.target_node_ids),
        target_weights_as_tensor=dbl("target_weights", trees.target_weights),
        base_values_as_tensor=dbl("base_values", [0.0]),
    )


Head = Callable[[int], tuple[list[onnx.NodeProto], list[onnx.TensorProto]]]


def build_graph(
    categorical: list[tuple[str, list[str]]],
    numeric: list[str],
    head: Head,
    doc: str,
) -> tuple[onnx.ModelProto, list[Input]]:
    """Builds the graph: one-hot encoding in the order the VectorAssembler put
    the one-hot vectors, then the numeric columns, then the classifier head
    (given the number of assembled features) from `features` to `probability`."""
    nodes: list[onnx.NodeProto] = []
    inputs: list[Input] = []
    parts: list[str] = []
    squeeze_axes = numpy_helper.from_array(np.array([1], dtype=np.int64), name="squeeze_axes")
    for name, labels in categorical:
        inputs.append(Input(name, "string"))
        # zeros=1: a category unseen in training encodes as all zeros, which is
        # what StringIndexer(handleInvalid="keep") + OneHotEncoder(dropLast) give.
        nodes.append(helper.make_node("OneHotEncoder", [name], [f"{name}_oh3"], domain="ai.onnx.ml", cats_strings=labels, zeros=1))
        nodes.append(helper.make_node("Squeeze", [f"{name}_oh3", "squeeze_axes"], [f"{name}_ohf"]))
        nodes.append(helper.make_node("Cast", [f"{name}_ohf"], [f"{name}_oh"], to=TensorProto.DOUBLE))
        parts.append(f"{name}_oh")
    for name in numeric:
        inputs.append(Input(name, "double"))
        parts.append(name)
    n_features = sum(len(labels) for _, labels in categorical) + len(numeric)
    nodes.append(helper.make_node("Concat", parts, ["features"], axis=1))
    head_nodes, head_initializers = head(n_features)
    nodes.extend(head_nodes)
    graph_inputs = [
        helper.make_tensor_value_info(i.name, TensorProto.STRING if i.type == "string" else TensorProto.DOUBLE, [None, 1])
        for i in inputs
    ]
    graph = helper.make_graph(
        nodes,
        "fraudflight",
        graph_inputs,
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 1])],
        initializer=[squeeze_axes, *head_initializers],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="fraudflight-spark",
        doc_string=doc,
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, inputs


ALGORITHMS = {
    "GBTClassificationModel": "gbt",
    "RandomForestClassificationModel": "random_forest",
    "LogisticRegressionModel": "logistic_regression",
}
FEATURE_STAGES = {"StringIndexerModel", "OneHotEncoderModel", "VectorAssembler"}


def algorithm_of(pipeline_model: Any) -> str:
    """`gbt`, `random_forest` or `logistic_regression`; ExportError otherwise."""
    kind = type(pipeline_model.stages[-1]).__name__
    if kind not in ALGORITHMS:
        raise ExportError(f"classifier {kind} cannot be exported (supported: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[kind]


def export_pipeline(pipeline_model: Any, categorical: list[str], numeric: list[str]) -> tuple[onnx.ModelProto, list[Input]]:
    """Exports the fitted PipelineModel built by `selection.pipeline`."""
    stages = pipeline_model.stages
    kinds = [type(s).__name__ for s in stages]
    algorithm = algorithm_of(pipeline_model)
    classifier = stages[-1]
    unknown = [k for k in kinds[:-1] if k not in FEATURE_STAGES]
    if unknown:
        raise ExportError(f"pipeline stage(s) {unknown} cannot be exported exactly (stages: {kinds})")
    indexers = [s for s in stages if type(s).__name__ == "StringIndexerModel"]
    for encoder in (s for s in stages if type(s).__name__ == "OneHotEncoderModel"):
        if not encoder.getDropLast():
            raise ExportError("OneHotEncoder must use dropLast=True (an unseen category then encodes as all zeros)")
    expected_order = [f"{c}_oh" for c in categorical] + list(numeric)
    for assembler in (s for s in stages if type(s).__name__ == "VectorAssembler"):
        if list(assembler.getInputCols()) != expected_order:
            raise ExportError(f"VectorAssembler inputs {assembler.getInputCols()} are not {expected_order}")
    labels: dict[str, list[str]] = {}
    for indexer in indexers:
        if indexer.getHandleInvalid() != "keep":
            raise ExportError(f"StringIndexer on {indexer.getInputCol()} must use handleInvalid='keep'")
        labels[indexer.getInputCol()] = list(indexer.labels)
    missing = [c for c in categorical if c not in labels]
    if missing:
        raise ExportError(f"no StringIndexer for categorical columns {missing}")
    cats = [(c, labels[c]) for c in categorical]
    binary: set[int] = set(range(sum(len(names) for _, names in cats)))
    head: Head
    if algorithm == "gbt":
        trees = gbt_trees(classifier, binary)
        head = lambda n: _tree_head(trees, n, sigmoid=True)  # noqa: E731
        doc = f"GBT, {classifier.getNumTrees} trees"
    elif algorithm == "random_forest":
        trees = forest_trees(classifier, binary)
        head = lambda n: _tree_head(trees, n, sigmoid=False)  # noqa: E731
        doc = f"random forest, {classifier.getNumTrees} trees"
    else:
        head = lambda n: _linear_head(classifier, n)  # noqa: E731
        doc = "logistic regression"
    model, inputs = build_graph(cats, numeric, head, f"{doc}, categorical {categorical}, numeric {numeric}")
    if algorithm != "logistic_regression":
        onnx.helper.set_model_props(model, {COVERS_KEY: json.dumps(trees.covers)})
    return model, inputs
