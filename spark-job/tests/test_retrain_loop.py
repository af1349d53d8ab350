"""retrain.py against the real services (run by `make test-services`):
`serve` (Cassandra only) stores five weeks of simulated transactions sent
through DoPut, their fraud labels come back through DoPut ["labels"], and
retrain.py trains a challenger from what Cassandra holds, judges it against
the champion on the newest labelled week and records the decision.

- A margin no model can reach keeps the champion; the decision, its reason
  and both evaluations are in Cassandra and in the server's `model-info`.
- Against a champion with a useless threshold, the challenger wins and is
  deployed; `serve` itself runs retrain.py on its `[retrain]` schedule.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import CASSANDRA, SPARK_JOB, binary, flight_put, fraud_labels, serve_on_cassandra, shipped_model
from conftest import flight_action as action

pytestmark = pytest.mark.services
# Quick to train: a small GBT without history (the simulator's default fraud shows in single transactions).
TRAIN_ARGS = "--model gbt --single --class-weights none --trees 10 --depth 4 --parity-rows 60"
WINDOWS = ["--days", "14", "--eval-days", "7", "--no-history", "--train-args", TRAIN_ARGS]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A keyspace holding five weeks of outcomes and their fraud labels."""
    keyspace = f"retrain_{uuid.uuid4().hex[:10]}"
    tmp = tmp_path_factory.mktemp("retrain")
    data = tmp / "sim.parquet"
    subprocess.run([binary(), "simulate", "--count", "25000", "--customers", "300", "--seed", "53",
                    "--parquet", data], check=True, capture_output=True)
    table = pq.read_table(data)
    running = serve_on_cassandra(keyspace, tmp / "serve.log")
    try:
        flight_put(running.flight, "transactions", table)
        flight_put(running.flight, "labels", fraud_labels(table))
    finally:
        running.stop(timeout=60)
    yield keyspace, tmp


def retrain(keyspace: str, endpoint: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, SPARK_JOB / "retrain.py", "--source", f"cassandra://{CASSANDRA}/{keyspace}",
         "--endpoint", endpoint, *WINDOWS, *args],
        cwd=SPARK_JOB, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_unreachable_margin_keeps_the_champion_and_the_decision_is_recorded(stored: tuple[str, Path]) -> None:
    keyspace, tmp = stored
    running = serve_on_cassandra(keyspace, tmp / "kept.log")
    try:
        champion = action(running.flight, "model-info")["version"]
        result = retrain(keyspace, running.flight, "--margin", "1.0", "--output-root", str(tmp / "kept"),
                         "--version", "challenger-kept")
        assert result["deployed"] is False and "under the margin 1.0" in result["reason"]
        assert result["champion"]["version"] == champion and result["challenger"]["version"] == "challenger-kept"
        # Both were judged on the same labelled days.
        assert result["champion"]["rows"] == result["challenger"]["rows"] > 1_000
        assert result["champion"]["frauds"] == result["challenger"]["frauds"] > 0
        assert 0.5 < result["champion"]["average_precision"] <= 1.0
        assert (tmp / "kept" / "challenger-kept" / "retrain-report.md").read_text().count("Kept the champion") == 1
        assert action(running.flight, "model-info")["version"] == champion
        # The server shows the decision it read from Cassandra.
        deadline = time.monotonic() + 60
        while True:
            decisions = action(running.flight, "model-info").get("retraining", [])
            if any(d["challenger"] == "challenger-kept" for d in decisions):
                break
            assert time.monotonic() < deadline, decisions
            time.sleep(1)
        decision = next(d for d in decisions if d["challenger"] == "challenger-kept")
        assert decision["deployed"] is False and decision["champion"] == champion
        assert decision["challenger_evaluation"]["average_precision"] == pytest.approx(
            result["challenger"]["average_precision"])
    finally:
        running.stop(timeout=60)


def test_serve_runs_retraining_on_schedule_and_a_better_challenger_is_deployed(stored: tuple[str, Path]) -> None:
    keyspace, tmp = stored
    # A champion whose threshold alerts on almost everything: any sensible challenger is more precise.
    weak = tmp / "models" / "weak-threshold"
    shutil.copytree(shipped_model(), weak)
    meta = json.loads((weak / "model.json").read_text())
    meta.update(version="weak-threshold", threshold=0.0001)
    (weak / "model.json").write_text(json.dumps(meta))
    args = json.dumps(["--margin", "-1", "--models", str(tmp / "models"), "--output-root", str(tmp / "scheduled"),
                       *WINDOWS])
    running = serve_on_cassandra(keyspace, tmp / "scheduled.log", FRAUDFLIGHT_MODEL=str(weak),
                          FRAUDFLIGHT_RETRAIN_ENABLED="true", FRAUDFLIGHT_RETRAIN_INTERVAL_MS="2000",
                          FRAUDFLIGHT_RETRAIN_ARGS=args)
    try:
        assert action(running.flight, "model-info")["version"] == "weak-threshold"
        deadline = time.monotonic() + 600
        while action(running.flight, "model-info")["version"] == "weak-threshold":
            assert time.monotonic() < deadline, (tmp / "scheduled.log").read_text()[-3000:]
            time.sleep(2)
        info = action(running.flight, "model-info")
        assert info["version"].startswith("retrained-")
        assert info["previous"] == "weak-threshold", "the champion stays loaded for a rollback"
        report = (tmp / "scheduled" / info["version"] / "retrain-report.md").read_text()
        assert "**Deployed**" in report
        # serve logs the run's decision once the job exits (after it deployed).
        log = tmp / "scheduled.log"
        while "retraining finished" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        finished = next(line for line in log.read_text().splitlines() if "retraining finished" in line)
        assert "deployed=true" in finished and info["version"] in finished, finished
    finally:
        running.stop(timeout=60)
