"""The self-learning loop, end to end on the real services (run by
`make test-services`; docs/loop.md):

1. `serve` (Cassandra, history on) scores five weeks of the simulator's
   default fraud with the shipped model, and its live AP is high;
2. the fraud pattern changes: the handbook's scenarios (compromised
   merchants, stolen cards, card testing: visible in history) start, and the
   champion's live AP drops;
3. retrain.py trains a challenger on the newest labelled days, judges it
   against the champion and deploys it as a shadow (it wins by far);
4. scored beside the champion on the next days, the shadow's live AP is far
   higher; `promote` makes it the champion, and on the days after, the live
   AP of the model in service has recovered.

Every fraud is labelled an hour after it happens (DoPut ["labels"]). The
numbers are printed. The margins asserted (a drop of 0.4 AP; the shadow and
the promoted model 0.2 and 0.15 AP above the old champion and at least
three times its AP; means of daily AP over 4 to 33 days, each day some 25
frauds among 2,400 transactions) are several times what the day-to-day
spread of AP moves.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import CASSANDRA, SPARK_JOB, binary, flight_action, flight_put, fraud_labels, serve_on_cassandra

pytestmark = pytest.mark.services
CUSTOMERS = "1000"
SEED = "71"
DAY = 86_400


def simulate(tmp: Path, name: str, fraud: str, start: str, count: int) -> Path:
    out = tmp / f"{name}.parquet"
    subprocess.run([binary(), "simulate", "--fraud", fraud, "--start", start, "--count", str(count),
                    "--customers", CUSTOMERS, "--seed", SEED, "--parquet", out], check=True, capture_output=True)
    return out


def days_of(table) -> set[int]:  # type: ignore[no-untyped-def]
    return {t // DAY for t in table.column("unix_time").to_pylist()}


def mean_ap(quality: dict, version: str, days: set[int]) -> float:
    """The mean live AP of `version` over the days (each must be measured)."""
    measured = {d["day"]: d for d in quality["days"] if d["version"] == version and d["day"] in days}
    missing = days - measured.keys()
    assert not missing, f"{version}: days {sorted(missing)} not measured"
    aps = [d["average_precision"] for d in measured.values() if d["average_precision"] is not None]
    assert len(aps) >= len(days) // 2, f"{version}: too few days with a fraud ({len(aps)} of {len(days)})"
    return sum(aps) / len(aps)


def ingest(endpoint: str, table) -> None:  # type: ignore[no-untyped-def]
    flight_put(endpoint, "transactions", table)
    flight_put(endpoint, "labels", fraud_labels(table))


def measured(endpoint: str, version: str, *tables) -> dict:  # type: ignore[no-untyped-def]
    """model-quality once every transaction of `tables` that `version`
    scored is measured with its label (the server measures every second)."""
    days = set().union(*(days_of(t) for t in tables))
    transactions = sum(t.num_rows for t in tables)
    frauds = sum(pc.sum(t.column("is_fraud")).as_py() for t in tables)
    deadline = time.monotonic() + 120
    while True:
        quality = flight_action(endpoint, "model-quality")
        mine = [d for d in quality["days"] if d["version"] == version and d["day"] in days]
        counted = (sum(d["transactions"] for d in mine), sum(d["frauds"] for d in mine))
        if counted == (transactions, frauds):
            return quality
        assert time.monotonic() < deadline, f"{version}: {counted} of {(transactions, frauds)} measured"
        time.sleep(1)


def test_the_champion_decays_on_a_new_fraud_pattern_and_a_retrained_challenger_recovers(tmp_path: Path) -> None:
    keyspace = f"drift_{uuid.uuid4().hex[:10]}"
    old = pq.read_table(simulate(tmp_path, "sparkov", "sparkov", "2025-01-01", 84_000))
    start_new = dt.datetime.fromtimestamp(max(old.column("unix_time").to_pylist()), dt.timezone.utc).date()
    new = pq.read_table(simulate(tmp_path, "handbook", "handbook", (start_new + dt.timedelta(days=1)).isoformat(),
                                 124_000))
    # Same seed, same customers; the second run's transaction ids would
    # repeat the first's, so they get a prefix.
    ids = new.column("trans_num")
    new = new.set_column(new.schema.get_field_index("trans_num"), "trans_num", pc.binary_join_element_wise("h-", ids, ""))
    # The new pattern: 35 days before retraining, then two stretches after it.
    first = min(new.column("unix_time").to_pylist()) // DAY
    day = pc.divide(new.column("unix_time"), DAY)
    drifted = new.filter(pc.less(day, first + 35))
    shadowed = new.filter(pc.and_(pc.greater_equal(day, first + 35), pc.less(day, first + 41)))
    promoted = new.filter(pc.greater_equal(day, first + 41))

    # Quality over the whole run (its default window is the newest 30 days).
    running = serve_on_cassandra(keyspace, tmp_path / "serve.log", FRAUDFLIGHT_QUALITY_DAYS="120")
    try:
        champion = flight_action(running.flight, "model-info")["version"]
        ingest(running.flight, old)
        ingest(running.flight, drifted)
        # Whole days only: the last day of each stretch may be cut short.
        old_days = days_of(old) - {max(days_of(old))}
        drifted_days = days_of(drifted) - {min(days_of(drifted)), max(days_of(drifted))}
        quality = measured(running.flight, champion, old, drifted)
        before, after = mean_ap(quality, champion, old_days), mean_ap(quality, champion, drifted_days)
        print(f"\nchampion {champion}: live AP {before:.3f} on the old pattern, {after:.3f} on the new one")
        assert before >= 0.8, f"the champion knows the pattern it was trained on: AP {before:.3f}"
        assert after <= before - 0.4, f"the new pattern escapes the champion: AP {before:.3f} -> {after:.3f}"

        retrain = subprocess.run(
            [sys.executable, SPARK_JOB / "retrain.py", "--source", f"cassandra://{CASSANDRA}/{keyspace}",
             "--endpoint", running.flight, "--days", "21", "--eval-days", "7", "--shadow",
             "--output-root", str(tmp_path / "retrained"), "--version", "challenger-handbook",
             "--train-args", "--model gbt --single --class-weights none --trees 50 --depth 6 --parity-rows 60"],
            cwd=SPARK_JOB, capture_output=True, text=True, check=False,
        )
        assert retrain.returncode == 0, retrain.stderr[-3000:]
        decision = json.loads(retrain.stdout.strip().splitlines()[-1])
        print(f"retraining: {decision['reason']}")
        assert decision["deployed"] and decision["mode"] == "shadow", decision
        info = flight_action(running.flight, "model-info")
        assert (info["version"], info["shadow"]) == (champion, "challenger-handbook")

        # The shadow scores the next days beside the champion.
        ingest(running.flight, shadowed)
        shadow_days = days_of(shadowed) - {min(days_of(shadowed)), max(days_of(shadowed))}
        measured(running.flight, "challenger-handbook", shadowed)
        quality = measured(running.flight, champion, shadowed)
        champion_ap, shadow_ap = mean_ap(quality, champion, shadow_days), mean_ap(quality, "challenger-handbook",
                                                                                shadow_days)
        print(f"same days, live: champion AP {champion_ap:.3f}, shadow AP {shadow_ap:.3f}")
        learnt = shadow_ap >= champion_ap + 0.2 and shadow_ap >= 3 * champion_ap
        assert learnt, f"the challenger learnt the new pattern: {champion_ap:.3f} vs {shadow_ap:.3f}"

        promoted_to = flight_action(running.flight, "promote")
        assert (promoted_to["champion"], promoted_to["previous"]) == ("challenger-handbook", champion)
        ingest(running.flight, promoted)
        recovered_days = days_of(promoted) - {min(days_of(promoted)), max(days_of(promoted))}
        quality = measured(running.flight, "challenger-handbook", promoted)
        recovered = mean_ap(quality, "challenger-handbook", recovered_days)
        print(f"after promotion: live AP {recovered:.3f} (the old champion had {after:.3f} on this pattern)")
        # A model train.py wrote carries its training reference: its days are measured for drift.
        psis = [d["score_psi"] for d in quality["days"] if d["version"] == "challenger-handbook"]
        assert psis and all(p is not None and p >= 0 for p in psis), psis
        print(f"score PSI of the new champion per day: {', '.join(f'{p:.3f}' for p in psis)}")
        assert recovered >= after + 0.15 and recovered >= 3 * after, f"live AP recovered: {after:.3f} -> {recovered:.3f}"
    finally:
        running.stop(timeout=60)
