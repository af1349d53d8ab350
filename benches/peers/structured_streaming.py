"""The peer for the Kafka benchmarks: the original design's scorer, a PySpark
Structured Streaming job. Kafka source (spark-sql-kafka from Maven Central),
the JSON value parsed with the record schema, the features of
spark-job/fraudflight_spark/features.py, the same Spark PipelineModel the
ONNX file came from (MODEL/spark-model), and a sink that keeps only what is
measured.

    spark-submit benches/peers/structured_streaming.py --brokers 127.0.0.1:9092 \\
        --topic T --model DIR --mode throughput|latency [--seconds 60]

- throughput: reads everything in the topic once (trigger availableNow) and
  prints {"records": N, "seconds": S, "records_per_second": R}: the time from
  the query's start until the last micro-batch is scored.
- latency: runs micro-batches as fast as they come for --seconds, and for
  every record takes (time its micro-batch was scored) - (its Kafka
  timestamp); prints the count and p50 / p99 / max in ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "spark-job"))

import numpy as np  # noqa: E402
from pyspark.ml import PipelineModel  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

from fraudflight_spark.evaluation import with_score  # noqa: E402
from fraudflight_spark.features import with_features  # noqa: E402
from fraudflight_spark.session import spark_session  # noqa: E402

# spark-sql-kafka for Spark 4.3 is not on Maven Central yet; 4.2.0 loads and
# runs on PySpark 4.3 (checked here).
KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"
RECORD = T.StructType([
    T.StructField("trans_date_trans_time", T.StringType()),
    T.StructField("cc_num", T.StringType()),
    T.StructField("merchant", T.StringType()),
    T.StructField("category", T.StringType()),
    T.StructField("amt", T.DoubleType()),
    T.StructField("first", T.StringType()),
    T.StructField("last", T.StringType()),
    T.StructField("gender", T.StringType()),
    T.StructField("street", T.StringType()),
    T.StructField("city", T.StringType()),
    T.StructField("state", T.StringType()),
    T.StructField("zip", T.StringType()),
    T.StructField("lat", T.DoubleType()),
    T.StructField("long", T.DoubleType()),
    T.StructField("city_pop", T.LongType()),
    T.StructField("job", T.StringType()),
    T.StructField("dob", T.StringType()),
    T.StructField("trans_num", T.StringType()),
    T.StructField("unix_time", T.LongType()),
    T.StructField("merch_lat", T.DoubleType()),
    T.StructField("merch_long", T.DoubleType()),
    T.StructField("is_fraud", T.LongType()),
])


def scored_stream(spark, args) -> DataFrame:
    model = PipelineModel.load(str(Path(args.model) / "spark-model"))
    threshold = json.loads((Path(args.model) / "model.json").read_text())["threshold"]
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.brokers)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", args.max_per_trigger)
        .load()
    )
    records = raw.select(F.from_json(F.col("value").cast("string"), RECORD).alias("r"), F.col("timestamp").alias("kafka_ts"))
    records = records.select("r.*", "kafka_ts")
    scored = with_score(model, with_features(records))
    return scored.select("trans_num", "kafka_ts", (F.col("score") >= threshold).alias("is_fraud_predicted"))


def throughput(spark, args) -> dict:
    counted = {"records": 0, "last": 0.0}

    def sink(batch: DataFrame, _id: int) -> None:
        counted["records"] += batch.count()
        counted["last"] = time.monotonic()

    started = time.monotonic()
    query = scored_stream(spark, args).writeStream.foreachBatch(sink).trigger(availableNow=True).start()
    query.awaitTermination()
    seconds = counted["last"] - started
    return {"records": counted["records"], "seconds": round(seconds, 2),
            "records_per_second": round(counted["records"] / seconds) if seconds > 0 else 0}


def latency(spark, args) -> dict:
    delays: list[np.ndarray] = []

    def sink(batch: DataFrame, _id: int) -> None:
        kafka_ms = batch.select((F.col("kafka_ts").cast("double") * 1000).alias("ms")).toArrow().column("ms").to_numpy()
        delays.append(time.time() * 1000 - kafka_ms)

    query = scored_stream(spark, args).writeStream.foreachBatch(sink).trigger(processingTime="0 seconds").start()
    time.sleep(args.seconds)
    query.stop()
    all_ms = np.concatenate(delays) if delays else np.array([])
    if all_ms.size == 0:
        return {"records": 0}
    return {"records": int(all_ms.size), "p50_ms": float(np.percentile(all_ms, 50)),
            "p99_ms": float(np.percentile(all_ms, 99)), "max_ms": float(all_ms.max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--model", required=True, help="model directory with spark-model/ and model.json")
    p.add_argument("--mode", choices=["throughput", "latency"], default="throughput")
    p.add_argument("--seconds", type=float, default=60.0, help="latency mode: how long to run")
    p.add_argument("--max-per-trigger", type=int, default=1_000_000, help="records per micro-batch at most")
    args = p.parse_args()
    spark = spark_session("structured-streaming-peer", {"spark.jars.packages": KAFKA_PACKAGE})
    result = throughput(spark, args) if args.mode == "throughput" else latency(spark, args)
    print(json.dumps({"mode": args.mode, **result}))
    spark.stop()


if __name__ == "__main__":
    main()
