"""Model selection: LogisticRegression, RandomForest and GBT, each over a
small hyper-parameter grid, compared by PR AUC on the validation rows.

Class imbalance (frauds are under 1 % of transactions) is handled by class
weights, chosen by measurement: with `class_weights="auto"` each algorithm's
first grid point is fitted both unweighted and with balanced weights (each
class weighing half of the total), and the better validation PR AUC decides
for that algorithm's whole grid.

The pipeline is always StringIndexer(keep) -> OneHotEncoder(dropLast) ->
VectorAssembler -> classifier, the shape `export_onnx` exports exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression, RandomForestClassifier
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fraudflight_spark.features import DERIVED

from .errors import JobError

CATEGORICAL = ["category", "gender"]
NUMERIC = ["amt", *DERIVED]
ALGORITHMS = ("logistic_regression", "random_forest", "gbt")
ALIASES = {"lr": "logistic_regression", "rf": "random_forest", "gbt": "gbt"}
WEIGHT = "class_weight"


@dataclass
class Candidate:
    algorithm: str
    params: dict[str, Any]
    weighted: bool
    validation_pr_auc: float = float("nan")
    fit_seconds: float = 0.0
    model: PipelineModel | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "params": self.params,
            "class_weights": "balanced" if self.weighted else "none",
            "validation_pr_auc": self.validation_pr_auc,
            "fit_seconds": round(self.fit_seconds, 2),
        }


def algorithms(choice: str) -> list[str]:
    """`auto` = all three; else one of lr, rf, gbt (or their long names)."""
    if choice == "auto":
        return list(ALGORITHMS)
    name = ALIASES.get(choice, choice)
    if name not in ALGORITHMS:
        raise JobError(f"--model {choice!r}: use auto, lr, rf or gbt")
    return [name]


def grid(algorithm: str, trees: int, depth: int, single: bool) -> list[dict[str, Any]]:
    """Hyper-parameters to try; `single` = only the first (quick runs)."""
    points = {
        "logistic_regression": [{"regParam": 0.0}, {"regParam": 0.001}],
        "random_forest": [{"numTrees": max(trees // 2, 10), "maxDepth": depth + 2}, {"numTrees": trees, "maxDepth": depth + 3}],
        "gbt": [{"maxIter": trees, "maxDepth": depth}, {"maxIter": trees, "maxDepth": max(depth - 1, 2)}],
    }[algorithm]
    return points[:1] if single else points


def classifier(algorithm: str, params: dict[str, Any], weighted: bool, seed: int) -> Any:
    common: dict[str, Any] = {"labelCol": "label", "featuresCol": "features"}
    if weighted:
        common["weightCol"] = WEIGHT
    if algorithm == "logistic_regression":
        return LogisticRegression(maxIter=200, family="binomial", **common, **params)
    if algorithm == "random_forest":
        return RandomForestClassifier(seed=seed, **common, **params)
    return GBTClassifier(seed=seed, stepSize=0.2, **common, **params)


def pipeline(stage: Any, numeric: list[str] = NUMERIC) -> Pipeline:
    indexers = [
        StringIndexer(inputCol=c, outputCol=f"{c}_idx", handleInvalid="keep", stringOrderType="alphabetAsc")
        for c in CATEGORICAL
    ]
    encoder = OneHotEncoder(
        inputCols=[f"{c}_idx" for c in CATEGORICAL], outputCols=[f"{c}_oh" for c in CATEGORICAL], dropLast=True
    )
    assembler = VectorAssembler(inputCols=[f"{c}_oh" for c in CATEGORICAL] + numeric, outputCol="features")
    return Pipeline(stages=[*indexers, encoder, assembler, stage])


def with_balanced_weights(train: DataFrame) -> DataFrame:
    """Adds `class_weight`: n / (2 * n_class), so both classes weigh n / 2."""
    counts = {int(r["label"]): r["count"] for r in train.groupBy("label").count().collect()}
    n = sum(counts.values())
    weights = {label: n / (2.0 * c) for label, c in counts.items()}
    return train.withColumn(WEIGHT, F.when(F.col("label") == 1, weights.get(1, 1.0)).otherwise(weights.get(0, 1.0)))


def validation_pr_auc(model: PipelineModel, validation: DataFrame) -> float:
    evaluator = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="probability", metricName="areaUnderPR")
    return float(evaluator.evaluate(model.transform(validation)))


def fit(candidate: Candidate, train: DataFrame, validation: DataFrame, seed: int, numeric: list[str] = NUMERIC) -> Candidate:
    started = time.monotonic()
    stage = classifier(candidate.algorithm, candidate.params, candidate.weighted, seed)
    candidate.model = pipeline(stage, numeric).fit(train)
    candidate.fit_seconds = time.monotonic() - started
    candidate.validation_pr_auc = validation_pr_auc(candidate.model, validation)
    print(f"train: {candidate.summary()}", flush=True)
    return candidate


def select(
    train: DataFrame,
    validation: DataFrame,
    *,
    model: str,
    class_weights: str,
    trees: int,
    depth: int,
    single: bool,
    seed: int,
    numeric: list[str] = NUMERIC,
) -> tuple[Candidate, list[Candidate]]:
    """Fits every candidate on the categorical and `numeric` inputs; returns
    the best by validation PR AUC and all of them."""
    if class_weights not in ("auto", "balanced", "none"):
        raise JobError(f"--class-weights {class_weights!r}: use auto, balanced or none")
    weighted_train = with_balanced_weights(train).cache()
    tried: list[Candidate] = []
    for algorithm in algorithms(model):
        points = grid(algorithm, trees, depth, single)
        if class_weights == "auto":
            # Measure both on the first grid point; the winner decides the rest.
            first = [
                fit(Candidate(algorithm, points[0], w), weighted_train, validation, seed, numeric) for w in (False, True)
            ]
            tried.extend(first)
            weighted = max(first, key=lambda c: c.validation_pr_auc).weighted
            rest = points[1:]
        else:
            weighted = class_weights == "balanced"
            rest = points
        tried.extend(fit(Candidate(algorithm, p, weighted), weighted_train, validation, seed, numeric) for p in rest)
    best = max(tried, key=lambda c: c.validation_pr_auc)
    return best, tried
