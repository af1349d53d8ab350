"""Retrain from what the service stored: a challenger trained on the last
labelled days, judged against the champion on the same newest labelled
days, deployed only if it is better.

    python spark-job/retrain.py --source cassandra://127.0.0.1:9042/fraudflight \\
        --endpoint grpc://127.0.0.1:50051 [--days 30] [--eval-days 7] [--margin 0.01]
    spark-submit --master spark://HOST:7077 spark-job/retrain.py --source ... --endpoint ...

Steps (fraudflight_spark/retraining.py holds the rules):
1. asks the server (`model-info`) which model is the champion, and finds its
   directory under --models;
2. reads the stored outcomes (`transactions`) and the labels (`labels`):
   a transaction is fraud when a fraud label came for it, genuine otherwise,
   and only days older than the label delay count as labelled;
3. trains a challenger with train.py on the --days before the --eval-days
   newest labelled days (a history model whenever the stored days cover
   the history warm-up, as train.py decides; reading 30 more days for its
   windows);
4. scores champion and challenger with ONNX Runtime on the judging days'
   stored outcomes (their live features), and compares AP, card precision
   at --card-k and precision at each one's threshold;
5. deploys the challenger (as champion, or with --shadow beside it) only if
   its AP (or, --decide-by card-precision, its card precision) beats the
   champion's by --margin and its precision is no worse;
6. records both evaluations and the decision in Cassandra (`models`,
   `model_decisions`), writes retrain-report.md beside the challenger and
   prints the decision as one JSON line. Exit status 0 whether deployed or
   kept; 2 when it could not judge (no labelled fraud, no champion files);
   3 when Spark or Cassandra failed past the retries (try again later).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.flight as flight
import train
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fraudflight_spark import data, deploy, evaluation, history, retraining
from fraudflight_spark.errors import JobError, SparkFailure, exit_on_job_error
from fraudflight_spark.retraining import DAY, Decision, Evaluation, Windows
from fraudflight_spark.session import spark_session

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# Days read before the training window for the history features' windows.
WARM_UP_DAYS = history.warm_up_days()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="cassandra://HOST:PORT/KEYSPACE (the service's keyspace)")
    p.add_argument("--endpoint", required=True, help="grpc://HOST:PORT of a server (the champion is its model)")
    p.add_argument("--days", type=int, default=30, help="labelled days the challenger trains on")
    p.add_argument("--eval-days", type=int, default=7, help="newest labelled days both models are judged on")
    p.add_argument("--label-delay-days", type=int, default=7, help="days until a transaction counts as labelled")
    p.add_argument("--margin", type=float, default=0.01,
                   help="what the challenger must gain (in --decide-by's measure) to be deployed")
    p.add_argument("--decide-by", choices=retraining.MEASURES, default="ap",
                   help="the measure the challenger must beat the champion in: average precision (default) or "
                   "card precision at --card-k")
    p.add_argument("--card-k", type=int, default=evaluation.CARD_K,
                   help="cards an analyst team checks a day, for card precision at k (default: 100)")
    p.add_argument("--models", type=Path, action="append", default=[],
                   help="where the champion's model directory is (repeatable; default: models/ and --output-root)")
    p.add_argument("--output-root", type=Path, default=ROOT / "models" / "retrained",
                   help="the challenger is written to OUTPUT_ROOT/VERSION")
    p.add_argument("--version", help="challenger version (default: retrained-YYYYMMDD-HHMMSS)")
    p.add_argument("--history", action=argparse.BooleanOptionalAction, default=None,
                   help="train with the card and merchant history features (default: as train.py, whenever the "
                   "stored days cover their warm-up; --history: an error if they do not)")
    p.add_argument("--shadow", action="store_true", help="deploy a winning challenger as a shadow, not as champion")
    p.add_argument("--train-args", default="--model gbt --single --class-weights none",
                   help="extra train.py arguments (one string)")
    p.add_argument("--token", help="admin token (default: $FRAUDFLIGHT_TOKEN)")
    p.add_argument("--cassandra-attempts", type=int, default=4,
                   help="tries of each Cassandra step while Cassandra is restarting or overloaded (default: 4)")
    p.add_argument("--cassandra-pause-seconds", type=float, default=30.0,
                   help="pause before the first retry of a Cassandra step, doubling after (default: 30)")
    p.add_argument("--ca", type=Path, help="CA certificate for a grpc+tls:// endpoint")
    return p.parse_args(argv)


def champion_info(endpoint: str, token: str | None, ca: Path | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"tls_root_certs": ca.read_bytes()} if ca else {}
    client = flight.FlightClient(endpoint, **kwargs)
    token = token or os.environ.get("FRAUDFLIGHT_TOKEN")
    headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
    try:
        results = list(client.do_action(flight.Action("model-info", b""), flight.FlightCallOptions(headers=headers)))
        return json.loads(results[0].body.to_pybytes())
    except flight.FlightError as e:
        raise JobError(f"cannot ask {endpoint} for its model: {e}") from e
    finally:
        client.close()


def stored_outcomes(spark: SparkSession, source: str) -> Any:
    """The stored outcomes with the label truth and `unix_time`."""
    where = data.cassandra_source(source)
    if where is None:
        raise JobError(f"--source {source}: expected cassandra://HOST:PORT/KEYSPACE")
    outcomes = data.cassandra_table(spark, where.keyspace, "transactions")
    labels = data.cassandra_table(spark, where.keyspace, "labels")
    return retraining.with_label_truth(outcomes, labels).withColumn("unix_time", F.col("trans_time").cast("long"))


def record(spark: SparkSession, keyspace: str, champion: Evaluation, challenger: Evaluation, challenger_meta: dict,
           decision: Decision, mode: str, now: dt.datetime) -> None:
    """Both evaluations and the decision, into `models` and `model_decisions`,
    decided at `now` (given: a retried write must land on the same rows)."""
    verdict = json.dumps({"deployed": decision.deploy, "mode": mode, "reason": decision.reason,
                          "champion": champion.version, "decided_at": now.isoformat(timespec="seconds")})
    models = spark.createDataFrame(
        [
            (champion.version, champion.to_json(), None, None, None, None, None),
            (challenger.version, challenger.to_json(), verdict, challenger_meta["created_at"],
             float(challenger_meta["threshold"]), json.dumps(challenger_meta["metrics"]), json.dumps(challenger_meta)),
        ],
        "version string, evaluation string, decision string, created_at string, threshold double, metrics string, "
        "meta string",
    )
    # The connector writes only the columns given: the champion's row keeps its own.
    champion_row = models.where(F.col("version") == champion.version).select("version", "evaluation")
    challenger_row = models.where(F.col("version") == challenger.version).withColumn("role", F.lit("challenger"))
    for frame in (champion_row, challenger_row):
        frame.write.format("org.apache.spark.sql.cassandra").options(keyspace=keyspace, table="models").mode(
            "append").save()
    decisions = spark.createDataFrame(
        [(now.date(), now, challenger.version, champion.version, decision.deploy, mode, decision.reason,
          champion.to_json(), challenger.to_json())],
        "day date, decided_at timestamp, challenger string, champion string, deployed boolean, mode string, "
        "reason string, champion_evaluation string, challenger_evaluation string",
    )
    decisions.write.format("org.apache.spark.sql.cassandra").options(keyspace=keyspace, table="model_decisions").mode(
        "append").save()


def write_report(out: Path, windows: Windows, trained_from: int, champion: Evaluation, challenger: Evaluation,
                 decision: Decision, mode: str) -> None:
    day = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).date().isoformat()  # noqa: E731
    rows = "\n".join(
        f"| {e.version} | {e.rows} | {e.frauds} | {e.average_precision:.4f} | "
        f"{'-' if e.roc_auc is None else f'{e.roc_auc:.4f}'} | "
        f"{'-' if e.card_precision is None else f'{e.card_precision:.4f}'} | "
        f"{e.threshold:.4f} | {e.precision:.4f} | {e.recall:.4f} |"
        for e in (champion, challenger)
    )
    k = challenger.card_k
    (out / "retrain-report.md").write_text(f"""# Retraining: {challenger.version} against {champion.version}

Trained on {day(trained_from)} to {day(windows.eval_start - 1)}; judged on
{day(windows.eval_start)} to {day(windows.horizon - 1)} (the newest labelled days; labels of the days
after are still coming).

| model | transactions | frauds | AP | ROC AUC | card precision at {k} | threshold | precision | recall |
|---|---|---|---|---|---|---|---|---|
{rows}

Card precision at {k}: per day, the share of fraudulent cards among the {k} cards the model scores highest
(a card by its highest transaction), the mean over the judging days.

**{"Deployed" + (" as shadow" if mode == "shadow" else "") if decision.deploy else "Kept the champion"}**: {decision.reason}.
""")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    where = data.cassandra_source(args.source)
    if where is None:
        raise JobError(f"--source {args.source}: expected cassandra://HOST:PORT/KEYSPACE")
    info = champion_info(args.endpoint, args.token, args.ca)
    roots = args.models or [ROOT / "models", args.output_root]
    champion_dir = retraining.find_model_dir(info["version"], [r for r in roots if r.exists()])
    started = dt.datetime.now(dt.timezone.utc)
    version = args.version or started.strftime("retrained-%Y%m%d-%H%M%S")
    out = args.output_root / version

    spark = spark_session("fraudflight-retrain", data.spark_config(args.source))

    def retried(step: str, run: Callable[[], T]) -> T:
        # A Cassandra restarting or overloaded (the service's own writes)
        # refuses reads for a while: each step waits it out, reading again
        # only what the cache does not hold yet.
        return retraining.with_retries(step, run, args.cassandra_attempts, args.cassandra_pause_seconds)

    # Opening the tables reads their schema from Cassandra.
    outcomes = retried("opening the tables", lambda: stored_outcomes(spark, args.source)).cache()
    oldest, newest = retried("reading the stored outcomes",
                             lambda: outcomes.agg(F.min("unix_time"), F.max("unix_time")).first())
    if newest is None:
        raise JobError(f"{args.source}: no stored transactions")
    windows = Windows.of(int(newest), args.label_delay_days, args.eval_days, args.days)
    judged = outcomes.where((F.col("unix_time") >= windows.eval_start) & (F.col("unix_time") < windows.horizon))
    judged_rows = retried("reading the judging days", judged.toArrow)
    labels = judged_rows.column("is_fraud").to_numpy().astype(int)
    if labels.sum() == 0:
        raise JobError(f"no labelled fraud in the {args.eval_days} judging days before "
                       f"{dt.datetime.fromtimestamp(windows.horizon, dt.timezone.utc).date()}: cannot judge")

    # The challenger's training rows: a history model (whenever the stored
    # days before the judging days hold what train.py needs for one) reads
    # the windows' warm-up before them, up to 30 days; a model without
    # history trains on the --days window only.
    with_history = args.history
    if with_history is None:
        start = max(int(oldest), windows.train_start - WARM_UP_DAYS * DAY)
        with_history, why_not = history.choose(None, start, windows.eval_start - 1)
        if not with_history:
            print(f"retrain.py: the challenger trains without the history features: the stored days before the "
                  f"judging days cover {why_not.removeprefix('the input covers ')} (--no-history to mean it)",
                  file=sys.stderr, flush=True)
    first = windows.train_start - (WARM_UP_DAYS * DAY if with_history else 0)
    # A history model trains on what follows the warm-up of the rows it
    # reads (train.py), later than the window when the store is younger.
    trained_from = max(windows.train_start, int(oldest) + WARM_UP_DAYS * DAY) if with_history else windows.train_start
    record_columns = [c for c in train.RECORD_FIELDS if c in outcomes.columns]
    training = outcomes.where((F.col("unix_time") >= first) & (F.col("unix_time") < windows.eval_start))
    with tempfile.TemporaryDirectory(prefix="fraudflight-retrain-") as tmp:
        parquet = str(Path(tmp) / "training.parquet")
        retried("reading the training days", lambda: training.select(*record_columns).write.mode("overwrite").parquet(parquet))
        outcomes.unpersist()
        train.main(["--input", parquet, "--output", str(out), "--version", version, *args.train_args.split(),
                    "--history" if with_history else "--no-history"])

    challenger_meta = retraining.load_meta(out)
    champion_meta = retraining.load_meta(champion_dir)
    # Each judged row's day and card, for card precision at k.
    cards = (judged_rows.column("unix_time").to_numpy() // DAY, judged_rows.column("cc_num").to_numpy(zero_copy_only=False))
    champion = retraining.evaluate(info["version"], retraining.score(champion_dir, judged_rows), labels,
                                   float(champion_meta["threshold"]), cards, args.card_k)
    challenger = retraining.evaluate(version, retraining.score(out, judged_rows), labels,
                                     float(challenger_meta["threshold"]), cards, args.card_k)
    decision = retraining.decide(champion, challenger, args.margin, args.decide_by)
    mode = "shadow" if args.shadow else "champion"
    # Deployed first, recorded after: the record says what happened, not
    # what was meant to (a refused deployment is recorded as not deployed).
    refused = None
    if decision.deploy:
        try:
            deploy.deploy(args.endpoint, out, args.token, args.ca, mode=mode)
        except deploy.DeployRefused as e:
            refused = e
            decision = dataclasses.replace(decision, deploy=False,
                                           reason=f"{decision.reason}; but the service refused it: {e}")
    write_report(out, windows, trained_from, champion, challenger, decision, mode)
    spark = spark_session("fraudflight-retrain", data.spark_config(args.source))
    decided_at = dt.datetime.now(dt.timezone.utc)
    retried("recording the decision", lambda: record(spark, where.keyspace, champion, challenger, challenger_meta,
                                                      decision, mode, decided_at))
    spark.stop()
    if refused is not None:
        raise JobError(f"{version} won but was not deployed: {refused}") from refused
    print(json.dumps({"deployed": decision.deploy, "mode": mode, "reason": decision.reason,
                      "champion": json.loads(champion.to_json()), "challenger": json.loads(challenger.to_json()),
                      "report": str(out / "retrain-report.md")}))
    sys.stdout.flush()


def run(argv: list[str] | None = None) -> None:
    """`main`, with a Spark failure made one line naming its cause (the
    service logs the end of the job's stderr, which a Java stack trace
    would fill with frames)."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        main(argv)
    except (Py4JJavaError, PySparkException) as e:
        raise SparkFailure(f"Spark failed: {retraining.failure_summary(e)}") from e


if __name__ == "__main__":
    exit_on_job_error(run)()
