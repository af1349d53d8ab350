"""Train a fraud model with Spark ML and export it for the fraudflight server.

    spark-submit spark-job/train.py --input data.csv --output models/gbt-v1
    python spark-job/train.py --input data.parquet --output models/gbt-v1

Reads transactions (a CSV in the Kaggle fraudTrain.csv layout, or Parquet from
`fraudflight simulate`), derives the features the Rust scorer derives, splits
by time (train, validation, test: the future never leaks into the past), fits
StringIndexer -> OneHotEncoder -> VectorAssembler -> GBTClassifier, picks the
threshold that maximises F1 on validation, measures on test, exports the
pipeline to ONNX, checks the export against Spark's own probabilities (fails
above 1e-5), and writes DIR/model.onnx, model.json and parity.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.classification import GBTClassifier  # noqa: E402
from pyspark.ml.evaluation import BinaryClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from fraudflight_spark.export_onnx import OUTPUT, export_pipeline  # noqa: E402
from fraudflight_spark.features import DERIVED, with_features  # noqa: E402
from fraudflight_spark.session import spark_session  # noqa: E402

CATEGORICAL = ["category", "gender"]
NUMERIC = ["amt", *DERIVED]
RECORD_FIELDS = [
    "trans_date_trans_time", "cc_num", "merchant", "category", "amt", "first", "last", "gender", "street",
    "city", "state", "zip", "lat", "long", "city_pop", "job", "dob", "trans_num", "unix_time",
    "merch_lat", "merch_long", "is_fraud",
]
PARITY_TOLERANCE = 1e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="CSV (Kaggle layout) or Parquet file/folder")
    p.add_argument("--output", required=True, help="model directory to write")
    p.add_argument("--version", help="model version (default: directory name)")
    p.add_argument("--trees", type=int, default=50, help="GBT iterations")
    p.add_argument("--depth", type=int, default=5, help="GBT max depth")
    p.add_argument("--parity-rows", type=int, default=300, help="rows written to parity.jsonl")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def read_transactions(spark: SparkSession, path: str) -> DataFrame:
    """Reads a Kaggle-layout CSV (with its unnamed index column) or Parquet."""
    if path.endswith(".csv"):
        df = spark.read.option("header", True).option("inferSchema", False).csv(path)
        df = df.drop("_c0")
        for name in ("unix_time", "city_pop", "is_fraud"):
            if name in df.columns:
                df = df.withColumn(name, F.col(name).cast("long"))
    else:
        df = spark.read.parquet(path)
    missing = [c for c in ("trans_num", "cc_num", "category", "amt", "lat", "long", "merch_lat", "merch_long", "dob", "is_fraud") if c not in df.columns]
    if missing:
        raise SystemExit(f"{path}: missing columns {missing}")
    return with_features(df).withColumn("label", F.col("is_fraud").cast("double"))


def split_by_time(df: DataFrame, train: float = 0.7, validation: float = 0.15) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Train on the oldest transactions, validate on the next, test on the newest."""
    t1, t2 = df.approxQuantile("event_time", [train, train + validation], 0.0001)
    return (
        df.where(F.col("event_time") < t1),
        df.where((F.col("event_time") >= t1) & (F.col("event_time") < t2)),
        df.where(F.col("event_time") >= t2),
    )


def build_pipeline(trees: int, depth: int, seed: int) -> Pipeline:
    indexers = [StringIndexer(inputCol=c, outputCol=f"{c}_idx", handleInvalid="keep", stringOrderType="alphabetAsc") for c in CATEGORICAL]
    encoder = OneHotEncoder(inputCols=[f"{c}_idx" for c in CATEGORICAL], outputCols=[f"{c}_oh" for c in CATEGORICAL], dropLast=True)
    assembler = VectorAssembler(inputCols=[f"{c}_oh" for c in CATEGORICAL] + NUMERIC, outputCol="features")
    gbt = GBTClassifier(labelCol="label", featuresCol="features", maxIter=trees, maxDepth=depth, seed=seed, stepSize=0.2)
    return Pipeline(stages=[*indexers, encoder, assembler, gbt])


def with_score(model: PipelineModel, df: DataFrame) -> DataFrame:
    return model.transform(df).withColumn("score", vector_to_array("probability")[1])


def best_f1_threshold(scored: DataFrame) -> float:
    """The score threshold with the highest F1 on the given (validation) rows."""
    rows = scored.select("score", "label").collect()
    scores = np.array([r[0] for r in rows])
    labels = np.array([r[1] for r in rows])
    order = np.argsort(-scores)
    scores, labels = scores[order], labels[order]
    tp = np.cumsum(labels)
    fp = np.cumsum(1 - labels)
    positives = max(labels.sum(), 1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / positives
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1))
    return float(scores[best])


def metrics(scored: DataFrame, threshold: float) -> dict[str, Any]:
    auc = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="rawPrediction")
    counts = scored.select(
        F.sum(((F.col("score") >= threshold) & (F.col("label") == 1)).cast("long")).alias("tp"),
        F.sum(((F.col("score") >= threshold) & (F.col("label") == 0)).cast("long")).alias("fp"),
        F.sum(((F.col("score") < threshold) & (F.col("label") == 1)).cast("long")).alias("fn"),
        F.sum(((F.col("score") < threshold) & (F.col("label") == 0)).cast("long")).alias("tn"),
    ).first()
    tp, fp, fn, tn = (int(counts[k] or 0) for k in ("tp", "fp", "fn", "tn"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "roc_auc": auc.evaluate(scored, {auc.metricName: "areaUnderROC"}),
        "pr_auc": auc.evaluate(scored, {auc.metricName: "areaUnderPR"}),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "rows": tp + fp + fn + tn,
    }


def onnx_inputs(rows: list[Any]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for name in CATEGORICAL:
        feeds[name] = np.array([[r[name] if r[name] is not None else ""] for r in rows], dtype=object)
    for name in NUMERIC:
        feeds[name] = np.array([[float(r[name])] for r in rows], dtype=np.float64)
    return feeds


def check_parity(model_bytes: bytes, rows: list[Any]) -> float:
    """Largest |ONNX - Spark| probability over the rows; raises above tolerance."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for start in range(0, len(rows), 10_000):
        chunk = rows[start : start + 10_000]
        got = session.run([OUTPUT], onnx_inputs(chunk))[0][:, 0]
        want = np.array([r["score"] for r in chunk])
        worst = max(worst, float(np.max(np.abs(got - want))))
    if worst > PARITY_TOLERANCE:
        raise SystemExit(f"ONNX export differs from Spark by {worst:.3g} (> {PARITY_TOLERANCE}); not writing the model")
    return worst


def parity_vector(row: Any) -> dict[str, Any]:
    record = {k: row[k] for k in RECORD_FIELDS if k in row.asDict() and row[k] is not None}
    return {
        "record": record,
        "features": {name: row[name] for name in DERIVED},
        "probability": row["score"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.output)
    version = args.version or out.name
    spark = spark_session("fraudflight-train")
    started = dt.datetime.now(dt.timezone.utc)

    data = read_transactions(spark, args.input).cache()
    train, validation, test = split_by_time(data)
    model = build_pipeline(args.trees, args.depth, args.seed).fit(train)
    threshold = best_f1_threshold(with_score(model, validation))
    scored_test = with_score(model, test).cache()
    test_metrics = metrics(scored_test, threshold)

    onnx_model, inputs = export_pipeline(model, CATEGORICAL, NUMERIC)
    model_bytes = onnx_model.SerializeToString()
    check_rows = scored_test.select(*CATEGORICAL, *NUMERIC, "score").limit(50_000).collect()
    worst = check_parity(model_bytes, check_rows)

    frauds = scored_test.where(F.col("label") == 1).limit(args.parity_rows // 3)
    others = scored_test.where(F.col("label") == 0).limit(args.parity_rows - args.parity_rows // 3)
    parity_rows = frauds.unionByName(others).collect()

    out.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(out / "model.onnx"))
    with open(out / "parity.jsonl", "w") as f:
        for row in parity_rows:
            f.write(json.dumps(parity_vector(row)) + "\n")
    meta = {
        "version": version,
        "created_at": started.isoformat(timespec="seconds"),
        "algorithm": "gbt",
        "params": {"trees": args.trees, "depth": args.depth, "seed": args.seed},
        "threshold": threshold,
        "metrics": test_metrics,
        "inputs": [i.to_json() for i in inputs],
        "output": OUTPUT,
        "training": {
            "input": args.input,
            "rows": {"train": train.count(), "validation": validation.count(), "test": test_metrics["rows"]},
            "seconds": (dt.datetime.now(dt.timezone.utc) - started).total_seconds(),
            "parity_max_abs_diff": worst,
        },
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"version": version, "threshold": threshold, **{k: test_metrics[k] for k in ("roc_auc", "pr_auc", "precision", "recall", "f1")}}))
    spark.stop()


if __name__ == "__main__":
    main()
