"""Train a fraud model with Spark ML and export it for the fraudflight server.

    spark-submit spark-job/train.py --input data.csv --output models/v2
    spark-submit --master spark://127.0.0.1:7077 spark-job/train.py --input data.parquet --output models/v2 \\
        --deploy grpc://127.0.0.1:50051
    python spark-job/train.py --input cassandra://127.0.0.1:9042/fraudflight --output models/v3

Reads transactions (a CSV in the Kaggle fraudTrain.csv layout, Parquet from
`fraudflight simulate`, or the `transactions` table the service wrote to
Cassandra), derives the features the Rust scorer derives, splits by time
(train, validation, test: the future never leaks into the past), and selects
among LogisticRegression, RandomForest and GBT over a small grid by PR AUC on
validation, with class weights chosen by measurement. The threshold is chosen
on validation for a target (maximum F1, or a precision / recall floor); the
final metrics are measured on test. The pipeline is exported to ONNX and
checked against Spark's own probabilities (the job fails above 1e-5, and
writes nothing). Writes DIR/model.onnx, model.json, parity.jsonl, report.md
and pr_curve.png; with --deploy, loads the model into running servers.
The card and merchant history features (fraudflight_spark/history.py) are
inputs too whenever the input covers their warm-up: computed over the whole
input, rows in the first 30 days (incomplete windows) only warm the windows
up (the time split is of the rows after them), and the parity vectors carry
Spark's history values. An input too short for that trains without them and
says why (`training.history` in model.json); --history makes that an error,
--no-history trains without them whatever the input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from pyspark.sql import functions as F

from fraudflight_spark import data, deploy, evaluation, history, report, selection
from fraudflight_spark.errors import JobError, exit_on_job_error
from fraudflight_spark.export_onnx import OUTPUT, ExportError, export_pipeline
from fraudflight_spark.features import DERIVED
from fraudflight_spark.session import spark_session

CATEGORICAL, NUMERIC = selection.CATEGORICAL, selection.NUMERIC
RECORD_FIELDS = [
    "trans_date_trans_time", "cc_num", "merchant", "category", "amt", "first", "last", "gender", "street",
    "city", "state", "zip", "lat", "long", "city_pop", "job", "dob", "trans_num", "unix_time",
    "merch_lat", "merch_long", "is_fraud",
]
PARITY_TOLERANCE = 1e-5
PARITY_CHECK_ROWS = 50_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="CSV (Kaggle layout), Parquet file/folder, or cassandra://HOST:PORT/KEYSPACE")
    p.add_argument("--output", required=True, help="model directory to write")
    p.add_argument("--version", help="model version (default: directory name)")
    p.add_argument("--model", default="auto", help="auto (select among lr, rf, gbt), lr, rf or gbt")
    p.add_argument("--single", action="store_true", help="one grid point per algorithm (quick runs)")
    p.add_argument("--class-weights", default="auto", help="auto (measured), balanced or none")
    p.add_argument("--threshold-target", default="max-f1", help="max-f1, precision>=X or recall>=X (on validation)")
    p.add_argument("--trees", type=int, default=50, help="trees of GBT / random forest")
    p.add_argument("--depth", type=int, default=5, help="GBT max depth (forests go deeper)")
    p.add_argument("--parity-rows", type=int, default=300, help="rows written to parity.jsonl")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--card-k", type=int, default=evaluation.CARD_K,
                   help="cards an analyst team checks a day, for the test days' card precision at k (default: 100)")
    p.add_argument(
        "--history", action=argparse.BooleanOptionalAction, default=None,
        help="the card and merchant history features (fraudflight_spark/history_features.json) as model inputs "
        "(default: whenever the input covers their warm-up; --history: an error if it does not)",
    )
    p.add_argument("--deploy", action="append", default=[], metavar="grpc://HOST:PORT", help="load the model into this server (repeatable)")
    p.add_argument("--token", help="admin token for --deploy (default: $FRAUDFLIGHT_TOKEN)")
    p.add_argument("--ca", type=Path, help="CA certificate for grpc+tls:// --deploy endpoints")
    return p.parse_args(argv)


def onnx_inputs(rows: list[Any], numeric: list[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for name in CATEGORICAL:
        feeds[name] = np.array([[r[name] if r[name] is not None else ""] for r in rows], dtype=object)
    for name in numeric:
        feeds[name] = np.array([[float(r[name])] for r in rows], dtype=np.float64)
    return feeds


def check_parity(model_bytes: bytes, rows: list[Any], numeric: list[str]) -> float:
    """Largest |ONNX - Spark| probability over the rows; raises above tolerance."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for start in range(0, len(rows), 10_000):
        chunk = rows[start : start + 10_000]
        got = session.run([OUTPUT], onnx_inputs(chunk, numeric))[0][:, 0]
        want = np.array([r["score"] for r in chunk])
        worst = max(worst, float(np.max(np.abs(got - want))))
    if worst > PARITY_TOLERANCE:
        raise JobError(f"ONNX export differs from Spark by {worst:.3g} (> {PARITY_TOLERANCE}); not writing the model")
    return worst


def parity_vector(row: Any, with_history: bool) -> dict[str, Any]:
    """A parity line; a history model's carries Spark's history features,
    which the server scores the record with when it checks the model."""
    record = {k: row[k] for k in RECORD_FIELDS if k in row.asDict() and row[k] is not None}
    features = list(DERIVED) + (list(history.NAMES) if with_history else [])
    return {
        "record": record,
        "features": {name: row[name] for name in features},
        "probability": row["score"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.output)
    version = args.version or out.name
    spark = spark_session("fraudflight-train", data.spark_config(args.input))
    started = dt.datetime.now(dt.timezone.utc)

    raw = data.read_transactions(spark, args.input)
    first, last = raw.agg(F.min("event_time"), F.max("event_time")).first()
    if first is None:
        raise JobError(f"{args.input}: no labelled transactions")
    with_history, why_not = history.choose(args.history, first, last)
    while True:
        rows = history.with_history(raw) if with_history else raw
        numeric = list(NUMERIC) + (list(history.NAMES) if with_history else [])
        rows = rows.cache()
        # With history, the first 30 days' windows are incomplete: those rows
        # only warm the windows up, and the split is of the rows after them.
        usable = history.after_warm_up(rows, rows) if with_history else rows
        train, validation, test = data.split_by_time(usable)
        if validation.where(F.col("label") == 1).limit(1).count() > 0:
            break
        if with_history and args.history is None:
            rows.unpersist()
            with_history = False
            why_not = f"after the {history.warm_up_days()}-day warm-up the validation days hold no fraud"
            continue
        raise JobError(f"{args.input}: no fraud in the validation period; more data is needed to train")
    if not with_history and args.history is None:
        print(f"train.py: training without the history features: {why_not} (--no-history to mean it)", file=sys.stderr)
    best, tried = selection.select(
        train,
        validation,
        model=args.model,
        class_weights=args.class_weights,
        trees=args.trees,
        depth=args.depth,
        single=args.single,
        seed=args.seed,
        numeric=numeric,
    )
    model = best.model
    val_scores, val_labels = evaluation.scores_and_labels(evaluation.with_score(model, validation))
    threshold = evaluation.servable(evaluation.choose_threshold(val_scores, val_labels, args.threshold_target))
    scored_test = evaluation.with_score(model, test).cache()
    test_metrics = evaluation.metrics(scored_test, threshold)
    test_metrics["card_precision"] = evaluation.card_precision(scored_test, args.card_k)

    try:
        onnx_model, inputs = export_pipeline(model, CATEGORICAL, numeric)
    except ExportError as e:
        raise JobError(f"cannot export the {best.algorithm} model exactly: {e}") from e
    check_rows = scored_test.select(*CATEGORICAL, *numeric, "score").limit(PARITY_CHECK_ROWS).collect()
    worst = check_parity(onnx_model.SerializeToString(), check_rows, numeric)

    frauds = scored_test.where(F.col("label") == 1).limit(args.parity_rows // 3)
    others = scored_test.where(F.col("label") == 0).limit(args.parity_rows - args.parity_rows // 3)
    parity_rows = frauds.unionByName(others).collect()

    out.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(out / "model.onnx"))
    # Spark's own model too, so a batch scored through Flight can be compared
    # with PipelineModel.transform on the same rows (the server ignores it).
    model.write().overwrite().save(str(out / "spark-model"))
    with open(out / "parity.jsonl", "w") as f:
        for row in parity_rows:
            f.write(json.dumps(parity_vector(row, with_history)) + "\n")
    meta = {
        "version": version,
        "created_at": started.isoformat(timespec="seconds"),
        "algorithm": best.algorithm,
        "params": best.params,
        "class_weights": "balanced" if best.weighted else "none",
        "threshold": threshold,
        "threshold_target": args.threshold_target,
        "metrics": test_metrics,
        "inputs": [i.to_json() for i in inputs],
        "output": OUTPUT,
        "training": {
            "input": args.input,
            "spark_master": spark.sparkContext.master,
            "rows": {"train": train.count(), "validation": int(len(val_labels)), "test": test_metrics["rows"]},
            "seconds": (dt.datetime.now(dt.timezone.utc) - started).total_seconds(),
            "history": {"used": with_history, "why_not": why_not or None},
            "parity_max_abs_diff": worst,
            "parity_rows_checked": len(check_rows),
            "candidates": [c.summary() for c in tried],
        },
    }
    test_scores, test_labels = evaluation.scores_and_labels(scored_test)
    # What the service's live drift compares each day's scores with.
    meta["reference"] = evaluation.score_reference(test_scores, test_labels)
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    report.plot_pr_curve(test_scores, test_labels, threshold, out / "pr_curve.png", f"{version}: {best.algorithm}, test set")
    report.write(out, meta, meta["training"]["candidates"])
    spark.stop()

    print(json.dumps({"version": version, "algorithm": best.algorithm, "threshold": threshold,
                      **{k: test_metrics[k] for k in ("roc_auc", "pr_auc", "precision", "recall", "f1")}}))
    for endpoint in args.deploy:
        try:
            answer = deploy.deploy(endpoint, out, args.token, args.ca)
        except deploy.DeployRefused as e:
            raise JobError(f"model written to {out}, but not deployed: {e}") from e
        print(json.dumps({"deployed": endpoint, **answer}))


if __name__ == "__main__":
    exit_on_job_error(main)()
