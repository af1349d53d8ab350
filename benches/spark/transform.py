"""Spark's own scoring of a table: PipelineModel.transform, the way a Spark
job scores without fraudflight. Submitted by benches/spark/batch_scoring.py
beside score_flight.py on the same rows, same master, same output format
(every input column plus the probability and label, written as Parquet).

    spark-submit transform.py --input T.parquet --model models/V --output OUT
Prints one JSON line: rows, seconds, rows_per_second.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from fraudflight_spark import data, evaluation
from fraudflight_spark.session import spark_session


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--model", required=True, help="model directory with spark-model/ and model.json")
    p.add_argument("--output", required=True)
    p.add_argument("--partitions", type=int)
    p.add_argument("--format", default="parquet", choices=["parquet", "noop"])
    args = p.parse_args()

    spark = spark_session("spark-transform-peer")
    threshold = json.loads((Path(args.model) / "model.json").read_text())["threshold"]
    model = PipelineModel.load(str(Path(args.model) / "spark-model"))
    columns = data.read_raw(spark, args.input).columns
    started = time.monotonic()
    rows = data.read_transactions(spark, args.input)
    if args.partitions:
        rows = rows.repartition(args.partitions)
    scored = evaluation.with_score(model, rows)
    out = scored.select(*columns, F.col("score").alias("fraud_score"), (F.col("score") >= threshold).alias("is_fraud_predicted"))
    out.write.mode("overwrite").format(args.format).save(args.output)
    seconds = time.monotonic() - started
    rows = spark.read.parquet(args.output).count() if args.format == "parquet" else out.count()
    print(json.dumps({"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds)}))
    spark.stop()


if __name__ == "__main__":
    main()
