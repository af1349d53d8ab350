"""Where training data comes from, and how it is split.

Inputs: a CSV in the Kaggle `fraudTrain.csv` layout, Parquet written by
`fraudflight simulate` (file or folder), or `cassandra://HOST:PORT/KEYSPACE`,
the `transactions` table the service writes (through the Spark Cassandra
Connector) with the confirmed outcomes of its `labels` table winning over
the records' own `is_fraud` — training on what the service stored closes
the loop.

The split is by time: train on the oldest transactions, validate on the
next, test on the newest, so no future leaks into the past.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fraudflight_spark.features import with_features

from .errors import JobError

# The Spark Cassandra Connector from Maven Central (Scala 2.13 build).
CASSANDRA_CONNECTOR = "com.datastax.spark:spark-cassandra-connector_2.13:3.5.1"
# Column types of the service's records, for a CSV read as text.
CSV_TYPES = {"amt": "double", "lat": "double", "long": "double", "merch_lat": "double", "merch_long": "double",
             "unix_time": "long", "city_pop": "long", "zip": "long", "is_fraud": "long"}
REQUIRED = ("trans_num", "cc_num", "category", "amt", "lat", "long", "merch_lat", "merch_long", "dob", "is_fraud")


@dataclass(frozen=True)
class CassandraSource:
    host: str
    port: int
    keyspace: str
    table: str = "transactions"


def cassandra_source(path: str) -> CassandraSource | None:
    """The Cassandra table named by `cassandra://HOST:PORT/KEYSPACE[/TABLE]`, else None."""
    if not path.startswith("cassandra://"):
        return None
    url = urlparse(path)
    parts = [p for p in url.path.split("/") if p]
    if not url.hostname or not parts or len(parts) > 2:
        raise JobError(f"{path}: expected cassandra://HOST:PORT/KEYSPACE[/TABLE]")
    return CassandraSource(url.hostname, url.port or 9042, parts[0], parts[1] if len(parts) == 2 else "transactions")


def spark_config(path: str) -> dict[str, str]:
    """Session settings the input needs (the connector and its contact point;
    a login from FRAUDFLIGHT_CASSANDRA_USERNAME / _PASSWORD, as the server reads it)."""
    source = cassandra_source(path)
    if source is None:
        return {}
    config = {
        "spark.jars.packages": CASSANDRA_CONNECTOR,
        "spark.cassandra.connection.host": source.host,
        "spark.cassandra.connection.port": str(source.port),
        # Token ranges of about 64 MB a task (the connector's default is
        # 512): a read refused under load is tried again (session.py) for a
        # small range, not a fifth of the table.
        "spark.cassandra.input.split.sizeInMB": "64",
    }
    user = os.environ.get("FRAUDFLIGHT_CASSANDRA_USERNAME")
    if user:
        config["spark.cassandra.auth.username"] = user
        config["spark.cassandra.auth.password"] = os.environ.get("FRAUDFLIGHT_CASSANDRA_PASSWORD", "")
    return config


def read_raw(spark: SparkSession, path: str) -> DataFrame:
    """The input's transaction columns as the service's records type them
    (a CSV is read as text and cast; Cassandra's `trans_time` timestamp
    becomes `unix_time`), without derived features."""
    source = cassandra_source(path)
    if source is not None:
        df = cassandra_table(spark, source.keyspace, source.table)
        if source.table == "transactions":
            df = with_stored_labels(df, cassandra_table(spark, source.keyspace, "labels"))
    elif path.endswith(".csv"):
        df = spark.read.option("header", True).option("inferSchema", False).csv(path).drop("_c0")
        for name, kind in CSV_TYPES.items():
            if name in df.columns:
                df = df.withColumn(name, F.col(name).cast(kind))
    else:
        df = spark.read.parquet(path)
    if "trans_time" in df.columns and "unix_time" not in df.columns:
        # Cassandra's table keeps the transaction time as a timestamp.
        df = df.withColumn("unix_time", F.col("trans_time").cast("long"))
    return df


def cassandra_table(spark: SparkSession, keyspace: str, table: str) -> DataFrame:
    return spark.read.format("org.apache.spark.sql.cassandra").options(keyspace=keyspace, table=table).load()


def with_stored_labels(transactions: DataFrame, labels: DataFrame) -> DataFrame:
    """`is_fraud` from the `labels` table where it has a row for the
    transaction (confirmed outcomes win over what the record said).

    The service also writes a label into its outcome row as it applies it,
    but a label is stored in `labels` first, so it is the record of truth
    (for example for a label whose transaction came later and was stored
    by an instance that no longer held the label)."""
    confirmed = labels.select("cc_num", "trans_num", F.col("is_fraud").cast("long").alias("_confirmed"))
    joined = transactions.join(confirmed, on=["cc_num", "trans_num"], how="left")
    return joined.withColumn("is_fraud", F.coalesce(F.col("_confirmed"), F.col("is_fraud").cast("long"))).drop(
        "_confirmed"
    )


def read_transactions(spark: SparkSession, path: str) -> DataFrame:
    """Reads the input, checks it has what training needs, adds the derived
    features and `label`."""
    df = read_raw(spark, path)
    for name in ("unix_time", "city_pop", "is_fraud"):
        if name in df.columns:
            df = df.withColumn(name, F.col(name).cast("long"))
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise JobError(f"{path}: missing columns {missing}")
    labelled = df.where(F.col("is_fraud").isNotNull())
    return with_features(labelled).withColumn("label", F.col("is_fraud").cast("double"))


def split_by_time(df: DataFrame, train: float = 0.7, validation: float = 0.15) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Train on the oldest transactions, validate on the next, test on the newest."""
    t1, t2 = df.approxQuantile("event_time", [train, train + validation], 0.0001)
    return (
        df.where(F.col("event_time") < t1),
        df.where((F.col("event_time") >= t1) & (F.col("event_time") < t2)),
        df.where(F.col("event_time") >= t2),
    )
