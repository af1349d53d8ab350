"""The Spark session every job uses: UTC time zone (the features depend on
it), loopback binding, and a local master when none was given."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession


def spark_session(app: str, extra: dict[str, str] | None = None) -> SparkSession:
    """The session, with `extra` settings (e.g. the Cassandra connector) on top."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("FRAUDFLIGHT_SPARK_DRIVER_MEMORY", "3g"))
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
    )
    for key, value in (extra or {}).items():
        builder = builder.config(key, value)
    # Under spark-submit (which starts the JVM first and hands Python its
    # gateway port) the master is spark-submit's --master: setting one here
    # would override it. Plain `python train.py` runs locally.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ or bool(os.environ.get("PYSPARK_SUBMIT_ARGS"))
    if "spark.master" not in SparkSession.builder._options and not submitted:
        builder = builder.master(os.environ.get("SPARK_MASTER", "local[*]"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
