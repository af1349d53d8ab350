"""The peer for the Kafka benchmarks: the original design's scorer, a PySpark
Structured Streaming job. Kafka source (spark-sql-kafka from Maven Central),
the JSON value parsed with the record schema, the features of
spark-job/fraudflight_spark/features.py, the same Spark PipelineModel the
ONNX file came from (MODEL/spark-model), and a sink that keeps only what is
measured.

    spark-submit benches/peers/structured_streaming.py --brokers 127.0.0.1:9092 \\
        --topic T --model DIR --mode throughput|latency [--records N] [--warm-up N]

- throughput: reads everything in the topic once (trigger availableNow, at
  most --max-per-trigger records per micro-batch) and prints the records
  scored per second from the end of the first micro-batch to the end of the
  last.
- latency: prints STARTED once the query runs, then runs micro-batches back
  to back until --warm-up + --records records were scored; for every record
  after the first --warm-up takes (time its micro-batch was scored) - (its
  Kafka timestamp); prints the count and p50 / p99 / max in ms.

The last line printed is the result, as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fraudflight_spark.evaluation import with_score
from fraudflight_spark.features import with_features
from fraudflight_spark.session import spark_session

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
    """Rate from the end of the first micro-batch to the end of the last
    (startup and the first batch's planning left out, as the Kafka
    benchmark leaves out `serve`'s start and consumer-group join)."""
    batches: list[tuple[int, float]] = []

    def sink(batch: DataFrame, _id: int) -> None:
        batches.append((batch.count(), time.monotonic()))

    query = scored_stream(spark, args).writeStream.foreachBatch(sink).trigger(availableNow=True).start()
    query.awaitTermination()
    batches = [b for b in batches if b[0] > 0]
    total = sum(n for n, _ in batches)
    if len(batches) < 2:
        raise SystemExit(f"only {len(batches)} non-empty micro-batches: lower --max-per-trigger")
    timed = total - batches[0][0]
    seconds = batches[-1][1] - batches[0][1]
    return {"records": total, "timed_records": timed, "micro_batches": len(batches), "seconds": round(seconds, 2),
            "records_per_second": round(timed / seconds)}


def latency(spark, args) -> dict:
    """Runs micro-batches back to back until --records records were scored
    (or --seconds passed); prints STARTED once the query runs, so the caller
    starts producing only then."""
    delays: list[np.ndarray] = []
    seen = {"records": 0}

    def sink(batch: DataFrame, _id: int) -> None:
        kafka_ms = batch.select((F.col("kafka_ts").cast("double") * 1000).alias("ms")).toArrow().column("ms").to_numpy()
        now = time.time() * 1000
        # The first --warm-up records (produced first) are not measured.
        skip = max(0, min(kafka_ms.size, args.warm_up - seen["records"]))
        # The batch straddling the warm-up's end: its oldest records were the warm-up's.
        delays.append(now - (np.sort(kafka_ms)[skip:] if skip else kafka_ms))
        seen["records"] += kafka_ms.size

    query = scored_stream(spark, args).writeStream.foreachBatch(sink).trigger(processingTime="0 seconds").start()
    while query.lastProgress is None:
        time.sleep(0.2)
    print("STARTED", flush=True)
    deadline = time.monotonic() + args.seconds
    while seen["records"] < args.warm_up + args.records and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
    all_ms = np.concatenate(delays) if delays else np.array([])
    if all_ms.size == 0:
        return {"records": 0}
    return {"records": int(all_ms.size), "p50_ms": round(float(np.percentile(all_ms, 50)), 1),
            "p99_ms": round(float(np.percentile(all_ms, 99)), 1), "max_ms": round(float(all_ms.max()), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--model", required=True, help="model directory with spark-model/ and model.json")
    p.add_argument("--mode", choices=["throughput", "latency"], default="throughput")
    p.add_argument("--seconds", type=float, default=180.0, help="latency mode: run at most this long")
    p.add_argument("--records", type=int, default=300_000, help="latency mode: stop after this many records")
    p.add_argument("--warm-up", type=int, default=0, help="latency mode: records before those measured")
    p.add_argument("--max-per-trigger", type=int, default=100_000, help="records per micro-batch at most")
    args = p.parse_args()
    spark = spark_session("structured-streaming-peer", {"spark.jars.packages": KAFKA_PACKAGE})
    result = throughput(spark, args) if args.mode == "throughput" else latency(spark, args)
    print(json.dumps({"mode": args.mode, **result}))
    spark.stop()


if __name__ == "__main__":
    main()
