"""The ONNX export of each of the three classifiers, fitted on simulated
data in one Spark session: every probability within 1e-5 of Spark's own on
every row, an unseen category scored as Spark's StringIndexer(keep) +
OneHotEncoder(dropLast) scores it, and pipelines that cannot be exported
exactly refused with a message naming why."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.feature import StandardScaler
from pyspark.sql import DataFrame, SparkSession

from conftest import simulate
from fraudflight_spark import data, evaluation, selection
from fraudflight_spark.export_onnx import OUTPUT, ExportError, export_pipeline
from fraudflight_spark.session import spark_session

CATEGORICAL, NUMERIC = selection.CATEGORICAL, selection.NUMERIC
SMALL = {
    "logistic_regression": {"regParam": 0.0},
    "random_forest": {"numTrees": 8, "maxDepth": 5},
    "gbt": {"maxIter": 8, "maxDepth": 4},
}


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = spark_session("fraudflight-export-test")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def rows(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> DataFrame:
    path = simulate(tmp_path_factory.mktemp("export"), 30_000, seed=11, kind="csv")
    return data.read_transactions(spark, str(path)).cache()


def onnx_scores(model_bytes: bytes, table: pa.Table) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feeds = {c: np.array([[v or ""] for v in table.column(c).to_pylist()], dtype=object) for c in CATEGORICAL}
    feeds.update({c: table.column(c).to_numpy().astype(np.float64).reshape(-1, 1) for c in NUMERIC})
    return session.run([OUTPUT], feeds)[0][:, 0]


@pytest.mark.parametrize("algorithm", ["logistic_regression", "random_forest", "gbt"])
def test_each_classifier_exports_exactly(rows: DataFrame, algorithm: str) -> None:
    weighted = selection.with_balanced_weights(rows)
    model = selection.pipeline(selection.classifier(algorithm, SMALL[algorithm], algorithm == "random_forest", 7)).fit(weighted)
    onnx_model, inputs = export_pipeline(model, CATEGORICAL, NUMERIC)
    assert [i.name for i in inputs] == CATEGORICAL + NUMERIC

    # Every row, plus one whose category and gender training never saw.
    unseen = rows.limit(1).selectExpr("'never_seen_before' AS category", "'X' AS gender", *NUMERIC, "label")
    scored = evaluation.with_score(model, rows.select(*CATEGORICAL, *NUMERIC, "label").unionByName(unseen))
    table = scored.select(*CATEGORICAL, *NUMERIC, "score").toArrow()
    got = onnx_scores(onnx_model.SerializeToString(), table)
    diff = np.abs(got - table.column("score").to_numpy())
    assert table.num_rows == rows.count() + 1
    assert diff.max() <= 1e-5, f"{algorithm}: largest difference {diff.max():.3g}"
    assert 0.0 <= got[-1] <= 1.0 and diff[-1] <= 1e-5


def test_a_stage_that_cannot_be_exported_is_refused_by_name(rows: DataFrame) -> None:
    base = selection.pipeline(selection.classifier("logistic_regression", SMALL["logistic_regression"], False, 7))
    stages = base.getStages()
    scaler = StandardScaler(inputCol="features", outputCol="scaled")
    stages[-1].setFeaturesCol("scaled")
    model = Pipeline(stages=[*stages[:-1], scaler, stages[-1]]).fit(rows)
    with pytest.raises(ExportError, match="StandardScalerModel"):
        export_pipeline(model, CATEGORICAL, NUMERIC)


def test_an_assembler_in_another_order_is_refused(rows: DataFrame) -> None:
    model = selection.pipeline(selection.classifier("gbt", {"maxIter": 2, "maxDepth": 2}, False, 7)).fit(rows)
    with pytest.raises(ExportError, match="VectorAssembler inputs"):
        export_pipeline(model, CATEGORICAL, list(reversed(NUMERIC)))
