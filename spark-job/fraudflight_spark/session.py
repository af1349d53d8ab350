"""The Spark session every job uses: UTC time zone (the features depend on
it), loopback binding, and a local master when none was given.

Python workers (mapInArrow, UDFs) are started by Spark with `python3` from
PATH unless told otherwise, and that interpreter may lack pyarrow: a job
run locally as `.venv/bin/python spark-job/score_flight.py` failed that way.
So a local run hands its workers the interpreter running the job. Under
spark-submit the choice stays spark-submit's (`PYSPARK_PYTHON` or
`spark.pyspark.python`): on a cluster the driver's path may not exist on the
workers.

A local master retries a failed task as a cluster does: with plain
`local[*]` Spark gives up on the first failure, and one Cassandra read
refused under load (`ReadFailureException`, which the connector does not
retry) failed the whole scheduled retraining twice in the soak. `local[*,4]`
tries each task up to four times (`spark.task.maxFailures`' default on a
cluster); only the failed token range is read again."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

# Every core, and each task tried up to four times (the module's doc says why).
LOCAL_MASTER = "local[*,4]"


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
        master = os.environ.get("SPARK_MASTER", LOCAL_MASTER)
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
