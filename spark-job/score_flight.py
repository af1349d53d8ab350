"""Score a table through fraudflight's Flight service from Spark.

    spark-submit --master spark://127.0.0.1:7077 spark-job/score_flight.py \\
        --input transactions.parquet --output scored.parquet \\
        --endpoint grpc://10.0.0.5:50051,grpc://10.0.0.6:50051

Reads a table (Parquet, a Kaggle-layout CSV, or cassandra://HOST:PORT/KEYSPACE)
and scores it with `mapInArrow`: each partition opens one DoExchange stream
to one endpoint (partition i goes to endpoint i mod n, so the work spreads
over every server) and streams its Arrow batches through it; the server
answers each batch, in order, with `fraud_score`, `is_fraud_predicted` and
`model_version`, which are appended to the input columns. The result is
written as Parquet.

Failures: before any job runs, the input's columns are checked against the
server's input schema (GetSchema) and a missing required column stops the
job naming it; a batch the server refuses (wrong type, invalid row) fails
the job with the server's reason, never sent to another endpoint (Spark's
task retries, four tries on a local master as on a cluster, meet the same
refusal). A lost connection or an
unavailable server is retried on the next endpoint, resending only the
batch in flight (up to --retries times); beyond that the task fails and
Spark's own task retries take over.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from fraudflight_spark import data
from fraudflight_spark.errors import JobError, exit_on_job_error
from fraudflight_spark.session import spark_session

SCORE_COLUMNS = [
    T.StructField("fraud_score", T.FloatType(), False),
    T.StructField("is_fraud_predicted", T.BooleanType(), False),
    T.StructField("model_version", T.StringType(), False),
]


class SchemaMismatch(JobError):
    """The input cannot be scored as it is (found on the driver, before any task)."""


class BatchRefused(RuntimeError):
    """The server refused a batch (wrong type, invalid row): not retried."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="Parquet file/folder, Kaggle-layout CSV, or cassandra://HOST:PORT/KEYSPACE")
    p.add_argument("--output", required=True, help="Parquet folder to write")
    p.add_argument("--format", default="parquet", choices=["parquet", "noop"],
                   help="output format; noop scores every row and writes nothing (for measuring)")
    p.add_argument("--endpoint", required=True, help="grpc://HOST:PORT[,grpc://HOST:PORT...]")
    p.add_argument("--batch-rows", type=int, default=65_536, help="rows per Arrow batch sent")
    p.add_argument("--retries", type=int, default=3, help="reconnections per partition on a lost server")
    p.add_argument("--partitions", type=int, help="repartition the input to this many tasks first")
    p.add_argument("--token", help="read token (default: $FRAUDFLIGHT_TOKEN)")
    p.add_argument("--ca", type=Path, help="CA certificate for grpc+tls:// endpoints")
    return p.parse_args(argv)


def server_schema(endpoints: list[str], options: flight.FlightCallOptions, connect) -> tuple[str, pa.Schema]:
    """The input schema of the first endpoint that answers."""
    errors = []
    for endpoint in endpoints:
        client = connect(endpoint)
        try:
            return endpoint, client.get_schema(flight.FlightDescriptor.for_path("score"), options).schema
        except (flight.FlightError, OSError) as e:
            errors.append(f"{endpoint}: {e}")
        finally:
            client.close()
    raise JobError("no Flight endpoint answers GetSchema:\n  " + "\n  ".join(errors))


def check_schema(df: DataFrame, endpoints: list[str], options: flight.FlightCallOptions, connect) -> None:
    """Fails before any task runs if a column the server requires is missing."""
    endpoint, wanted = server_schema(endpoints, options, connect)
    required = [f.name for f in wanted if not f.nullable]
    missing = [name for name in required if name not in df.columns]
    if missing:
        raise SchemaMismatch(f"input lacks column(s) {missing} that {endpoint} requires (its input schema: {wanted.names})")


def scorer(endpoints: list[str], batch_rows: int, retries: int, headers: list, ca: bytes | None):
    """The function each task runs on its partition's Arrow batches."""

    def connect(endpoint: str) -> flight.FlightClient:
        return flight.FlightClient(endpoint, tls_root_certs=ca) if ca else flight.FlightClient(endpoint)

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        attempt = 0
        index = context.partitionId() if context else 0
        options = flight.FlightCallOptions(headers=headers)
        stream = None

        def open_stream():
            nonlocal stream
            endpoint = endpoints[index % len(endpoints)]
            client = connect(endpoint)
            writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("score"), options)
            stream = (client, writer, reader, endpoint, False)

        def exchange(batch: pa.RecordBatch) -> pa.RecordBatch:
            nonlocal stream, attempt, index
            while True:
                try:
                    if stream is None:
                        open_stream()
                    client, writer, reader, endpoint, begun = stream
                    if not begun:
                        writer.begin(batch.schema)
                        stream = (client, writer, reader, endpoint, True)
                    writer.write_batch(batch)
                    return reader.read_chunk().data
                except (flight.FlightUnavailableError, flight.FlightTimedOutError, ConnectionError, OSError) as e:
                    # The server went away: next endpoint, same batch.
                    attempt += 1
                    if attempt > retries:
                        raise RuntimeError(f"partition {index}: Flight endpoints unreachable after {retries} retries: {e}") from e
                    stream = None
                    index += 1
                    time.sleep(min(0.2 * 2**attempt, 5.0))
                except (flight.FlightError, pa.ArrowInvalid) as e:
                    raise BatchRefused(f"the server refused a batch of partition {index}: {e}") from e

        try:
            for batch in batches:
                for start in range(0, batch.num_rows, batch_rows):
                    part = batch.slice(start, batch_rows)
                    answer = exchange(part)
                    if answer.num_rows != part.num_rows:
                        raise BatchRefused(f"the server answered {answer.num_rows} rows for {part.num_rows}")
                    columns = [*part.columns, answer.column("fraud_score"), answer.column("is_fraud_predicted"),
                               answer.column("model_version")]
                    names = [*part.schema.names, "fraud_score", "is_fraud_predicted", "model_version"]
                    yield pa.RecordBatch.from_arrays(columns, names=names)
        finally:
            if stream is not None:
                client, writer, _, _, begun = stream
                try:
                    if begun:
                        writer.done_writing()
                    writer.close()
                finally:
                    client.close()

    return score_partition, connect


def score(df: DataFrame, endpoints: list[str], *, batch_rows: int = 65_536, retries: int = 3,
          token: str | None = None, ca: bytes | None = None) -> DataFrame:
    """`df` with fraud_score, is_fraud_predicted and model_version, scored by the servers."""
    headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
    function, connect = scorer(endpoints, batch_rows, retries, headers, ca)
    check_schema(df, endpoints, flight.FlightCallOptions(headers=headers), connect)
    out_schema = T.StructType([*df.schema.fields, *SCORE_COLUMNS])
    return df.mapInArrow(function, out_schema)


def main(argv: list[str] | None = None) -> None:
    import os

    args = parse_args(argv)
    endpoints = [e.strip() for e in args.endpoint.split(",") if e.strip()]
    if not endpoints:
        raise JobError("--endpoint: at least one grpc://HOST:PORT")
    spark = spark_session("fraudflight-score-flight", data.spark_config(args.input))
    df = data.read_raw(spark, args.input)
    if args.partitions:
        df = df.repartition(args.partitions)
    token = args.token or os.environ.get("FRAUDFLIGHT_TOKEN")
    ca = args.ca.read_bytes() if args.ca else None
    started = time.monotonic()
    scored = score(df, endpoints, batch_rows=args.batch_rows, retries=args.retries, token=token, ca=ca)
    scored.write.mode("overwrite").format(args.format).save(args.output)
    seconds = time.monotonic() - started
    rows = spark.read.parquet(args.output).count() if args.format == "parquet" else df.count()
    print(json.dumps({"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds), "endpoints": endpoints}))
    spark.stop()


if __name__ == "__main__":
    exit_on_job_error(main)()
