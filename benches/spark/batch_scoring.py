"""Spark benchmark: training time and metrics, and batch scoring of the same
rows through fraudflight's Flight service (spark-job/score_flight.py) next
to Spark's own PipelineModel.transform (transform.py), on the same master.

    .venv/bin/python benches/spark/batch_scoring.py [--rows 1000000] [--master spark://127.0.0.1:7077]

Steps: simulate ROWS training transactions and ROWS other ones to score
(Parquet, `fraudflight simulate`); train with spark-job/train.py (timed;
TRAIN_ARGS, default the shipped model's recipe); start one `fraudflight
demo` server (release build) with that model; then submit score_flight.py
and transform.py alternately, --repeats times each, both reading the same
Parquet and writing every input column plus score and label as Parquet,
then again with Spark's no-op sink (the scoring alone, no Parquet writing).
Reports medians; writes target/bench/spark.json. With the cluster master,
scripts/spark-cluster.sh is started (and stopped after) if it is not up.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fraudflight_spark import server

ROOT = Path(__file__).resolve().parents[2]
SPARK_JOB = ROOT / "spark-job"
BIN = ROOT / "target" / "release" / "fraudflight"
PY = Path(sys.executable)


def run(command: list[object], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(map(str, command))}\n{(done.stdout + done.stderr)[-3000:]}")
    return done


def submit(master: str, script: Path, *args: object) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": str(PY), "PYSPARK_DRIVER_PYTHON": str(PY)}
    done = run([PY.parent / "spark-submit", "--master", master, "--driver-memory", "3g",
                "--conf", "spark.executor.memory=3g", script, *args], cwd=SPARK_JOB, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    running = server.start([BIN, "demo", "--rate", "0", "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
                            "--model", model], cwd=ROOT)
    return running.proc, running.flight


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--master", default="local[*]")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-args", default=os.environ.get("TRAIN_ARGS", "--model gbt --single --class-weights none --no-history"))
    p.add_argument("--model", type=Path, help="a model train.py wrote (with spark-model/): skips training")
    p.add_argument("--work", type=Path, default=ROOT / "target" / "bench" / "spark")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)

    train_data, score_data = args.work / "train.parquet", args.work / "score.parquet"
    for path, seed in ((train_data, 1), (score_data, 2)):
        if not path.exists() and not (args.model and path == train_data):
            run([BIN, "simulate", "--count", args.rows, "--seed", seed, "--parquet", path])

    cluster = ROOT / "scripts" / "spark-cluster.sh"
    started_cluster = args.master.startswith("spark://127.0.0.1") and "workers alive: 0" in run([cluster, "status"]).stdout
    if started_cluster:
        run([cluster, "up"])
    server = None
    try:
        if args.model:
            model = args.model
            meta = json.loads((model / "model.json").read_text())
            train_seconds = meta["training"]["seconds"]
        else:
            model = args.work / "model"
            began = time.monotonic()
            submit(args.master, SPARK_JOB / "train.py", "--input", train_data, "--output", model,
                   "--version", "bench-spark", *shlex.split(args.train_args))
            train_seconds = time.monotonic() - began
            meta = json.loads((model / "model.json").read_text())

        server, endpoint = start_server(model)
        runs: dict[str, list[dict]] = {}
        for i in range(args.repeats):
            for fmt in ("parquet", "noop"):
                flight_run = submit(args.master, SPARK_JOB / "score_flight.py", "--input", score_data, "--output",
                                    args.work / "scored-flight", "--endpoint", endpoint, "--partitions", args.partitions,
                                    "--format", fmt)
                spark_run = submit(args.master, ROOT / "benches" / "spark" / "transform.py", "--input", score_data,
                                   "--model", model, "--output", args.work / "scored-spark", "--partitions",
                                   args.partitions, "--format", fmt)
                runs.setdefault(f"flight_{fmt}", []).append(flight_run)
                runs.setdefault(f"spark_{fmt}", []).append(spark_run)
                print(f"repeat {i + 1}, {fmt} output: flight {flight_run['rows_per_second']:,} rows/s, "
                      f"spark transform {spark_run['rows_per_second']:,} rows/s", flush=True)
    finally:
        if server:
            server.terminate()
            server.wait()
        if started_cluster:
            run([cluster, "down"])

    median = {name: statistics.median(r["rows_per_second"] for r in rs) for name, rs in runs.items()}
    result = {
        "machine": f"{os.cpu_count()} cores",
        "master": args.master,
        "rows": args.rows,
        "training": {
            "args": "(given model)" if args.model else args.train_args,
            "input": meta["training"]["input"],
            "wall_seconds": round(train_seconds, 1),
            "algorithm": meta["algorithm"],
            "rows": meta["training"]["rows"],
            "candidates": meta["training"]["candidates"],
            "metrics": meta["metrics"],
            "threshold": meta["threshold"],
        },
        # parquet: read, repartition, score, write every column + score as
        # Parquet; noop: the same with Spark's no-op sink (scoring cost only).
        "batch_scoring": {
            "partitions": args.partitions,
            "repeats": args.repeats,
            "flight_rows_per_second": median["flight_parquet"],
            "spark_transform_rows_per_second": median["spark_parquet"],
            "ratio": round(median["flight_parquet"] / median["spark_parquet"], 2),
            "noop_sink": {
                "flight_rows_per_second": median["flight_noop"],
                "spark_transform_rows_per_second": median["spark_noop"],
                "ratio": round(median["flight_noop"] / median["spark_noop"], 2),
            },
            "runs": runs,
        },
    }
    out = ROOT / "target" / "bench" / "spark.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"train_seconds": result["training"]["wall_seconds"], "median_rows_per_second": median}))
    print(f"written {out}")


if __name__ == "__main__":
    main()
