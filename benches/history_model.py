"""Our model with history against the fraud-detection handbook's windowed
random forest, side by side on the same handbook-family data and split
(issue 18's model target; `make bench` runs it).

Data: `fraudflight simulate --fraud handbook` (compromised merchants, stolen
card numbers and cards, card testing). Split by days, as the handbook does:
train on the days after the 30-day warm-up up to a one-week gap, test on the
last week. Three models, each scored on the same test week:

- ours: what `train.py` trains by default (GBT over the record's features and
  the 15 history features; selection and class weights as train.py does,
  the last 15 % of the training days for validation);
- ours without history (what the stream model was before);
- the baseline: the handbook's features (amount, weekend, night; per card the
  number and mean amount of transactions over 1, 7, 30 days; per terminal
  the number and fraud share over 1, 7, 30 days before a 7-day delay),
  here computed by our history code, fed to a plain random forest (100
  trees, depth 10) trained on the whole training period.

The stream computes the same history features as Spark (equal to 1e-9:
spark-job/tests/test_history_parity.py) and scores as the exported model
(parity checked at load), so these are the streamed model's numbers.
Writes target/bench/history_model.json.

    .venv/bin/python benches/history_model.py [--count 100000 --customers 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spark-job"))

from pyspark.ml.classification import RandomForestClassifier  # noqa: E402
from pyspark.ml.feature import VectorAssembler  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from fraudflight_spark import data, evaluation, history, selection  # noqa: E402
from fraudflight_spark.session import spark_session  # noqa: E402

DAY = history.DAY
BASELINE_HISTORY = [
    "card_tx_1d", "card_tx_7d", "card_tx_30d", "card_amt_mean_1d", "card_amt_mean_7d", "card_amt_mean_30d",
    "merch_tx_1d", "merch_tx_7d", "merch_tx_30d", "merch_fraud_rate_1d", "merch_fraud_rate_7d", "merch_fraud_rate_30d",
]


def simulate(path: Path, count: int, customers: int, seed: int) -> None:
    binary = ROOT / "target" / "release" / "fraudflight"
    if not binary.exists():
        sys.exit(f"{binary} is missing: cargo build --release first")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(binary), "simulate", "--fraud", "handbook", "--count", str(count), "--customers", str(customers),
         "--seed", str(seed), "--csv", str(path)],
        check=True,
    )


def test_metrics(scored) -> dict[str, float]:
    scores, labels = evaluation.scores_and_labels(scored)
    _, precision, recall = evaluation.pr_curve(scores, labels)
    roc = evaluation.metrics(scored, 0.5)["roc_auc"]
    return {"average_precision": evaluation.average_precision(precision, recall), "roc_auc": roc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--customers", type=int, default=500)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    started = time.monotonic()
    csv = ROOT / "target" / "bench" / f"handbook-{args.seed}-{args.customers}-{args.count}.csv"
    if not csv.exists():
        simulate(csv, args.count, args.customers, args.seed)

    spark = spark_session("fraudflight-bench-history-model", data.spark_config(str(csv)))
    rows = history.with_history(data.read_transactions(spark, str(csv)))
    rows = rows.withColumn("day", F.floor(F.col("event_time") / DAY).cast("long"))
    rows = rows.withColumn("weekend", F.dayofweek(F.from_unixtime("event_time")).isin(1, 7).cast("double"))
    rows = rows.withColumn("night", (F.col("hour") <= 6).cast("double")).cache()
    first, last = rows.agg(F.min("day"), F.max("day")).first()
    # Handbook protocol: train, a one-week gap (labels not known yet), test.
    train_from, test_from = first + 30, last - 6
    train_to = test_from - 7
    trainable = rows.where((F.col("day") >= train_from) & (F.col("day") < train_to))
    validation_from = train_to - max(1, round((train_to - train_from) * 0.15))
    train = trainable.where(F.col("day") < validation_from)
    validation = trainable.where(F.col("day") >= validation_from)
    test = rows.where(F.col("day") >= test_from).cache()
    frauds = test.where(F.col("label") == 1).count()
    print(f"days {first}..{last}: train {train_from}..{train_to - 1}, gap 7, test {test_from}..{last} "
          f"({test.count()} transactions, {frauds} frauds)", flush=True)

    results = {}
    for name, numeric in (("ours", [*selection.NUMERIC, *history.NAMES]), ("ours_without_history", list(selection.NUMERIC))):
        best, _ = selection.select(train, validation, model="gbt", class_weights="auto", trees=50, depth=5,
                                   single=True, seed=7, numeric=numeric)
        results[name] = test_metrics(evaluation.with_score(best.model, test))
        print(f"{name}: {results[name]}", flush=True)

    inputs = ["amt", "weekend", "night", *BASELINE_HISTORY]
    forest = RandomForestClassifier(labelCol="label", featuresCol="features", numTrees=100, maxDepth=10, seed=7)
    assembler = VectorAssembler(inputCols=inputs, outputCol="features")
    model = forest.fit(assembler.transform(trainable))
    scored = model.transform(assembler.transform(test)).withColumn("score", vector_to_array("probability")[1])
    results["handbook_random_forest"] = test_metrics(scored)
    print(f"handbook_random_forest: {results['handbook_random_forest']}", flush=True)

    out = {
        "transactions": args.count, "customers": args.customers, "seed": args.seed,
        "test_days": 7, "gap_days": 7, "test_frauds": frauds, **results,
        "ratio": results["ours"]["average_precision"] / results["handbook_random_forest"]["average_precision"],
        "seconds": time.monotonic() - started,
    }
    path = ROOT / "target" / "bench" / "history_model.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
