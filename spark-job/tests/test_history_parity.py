"""Spark and the stream compute the same history features: every feature of
every record of an in-order replay, to 1e-9.

Spark: `fraudflight_spark.history.with_history` over simulated transactions
(`is_fraud` as the label). Stream: a real `fraudflight demo`, sent the
labels of the frauds (reported three days after each, within the 7-day
delay) and then the transactions in time order through Flight DoPut; its
stored outcomes, read back with DoGet, carry the features it computed.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import Server, binary, train
from fraudflight_spark import history
from fraudflight_spark.data import read_transactions
from fraudflight_spark.deploy import varint
from fraudflight_spark.session import spark_session

COUNT = 8_000
# Few cards, so the 8,000 transactions span 54 days: every window fills.
CUSTOMERS = 60
TOLERANCE = 1e-9


def recent_ticket(limit: int) -> flight.Ticket:
    """A `Query{recent: true, limit}` (proto/fraudflight.proto)."""
    return flight.Ticket(b"\x10\x01\x20" + varint(limit))


def put(client: flight.FlightClient, path: list[str], table: pa.Table, rows: int = 1_000) -> None:
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(*path), table.schema)
    for batch in table.to_batches(max_chunksize=rows):
        writer.write_batch(batch)
        reader.read()
    writer.close()


def spark_features(data: Path) -> dict[str, dict[str, float]]:
    spark = spark_session("history-parity")
    try:
        df = history.with_history(read_transactions(spark, str(data)))
        rows = df.select("trans_num", *history.NAMES).collect()
    finally:
        spark.stop()
    return {r["trans_num"]: {n: r[n] for n in history.NAMES} for r in rows}


def stream_features(data: Path) -> dict[str, dict[str, float]]:
    with data.open() as f:
        rows = sorted(csv.DictReader(f), key=lambda r: (int(r["unix_time"]), r["trans_num"]))
    frauds = [r for r in rows if r["is_fraud"] == "1"]
    labels = pa.table({
        "trans_num": [r["trans_num"] for r in frauds],
        "cc_num": [r["cc_num"] for r in frauds],
        "is_fraud": pa.array([1] * len(frauds), pa.int64()),
        "reported_at": pa.array([int(r["unix_time"]) + 3 * 86_400 for r in frauds], pa.int64()),
    })
    # The stream never reads a record's own is_fraud: drop it to be sure.
    columns = [c for c in rows[0] if c not in ("", "is_fraud")]
    numbers = {"amt", "lat", "long", "merch_lat", "merch_long"}
    integers = {"unix_time", "city_pop"}
    transactions = pa.table({
        c: pa.array(
            [float(r[c]) if c in numbers else int(r[c]) if c in integers else r[c] for r in rows],
            pa.float64() if c in numbers else pa.int64() if c in integers else pa.string(),
        )
        for c in columns
    })
    server = Server()
    try:
        client = flight.connect(server.flight)
        put(client, ["labels"], labels)
        put(client, ["transactions"], transactions)
        stored = client.do_get(recent_ticket(COUNT)).read_all().to_pylist()
    finally:
        server.stop()
    return {r["trans_num"]: {n: r[n] for n in history.NAMES} for r in stored}


def test_spark_and_the_stream_agree_on_every_history_feature(tmp_path: Path) -> None:
    data = tmp_path / "history.csv"
    command = [binary(), "simulate", "--count", COUNT, "--customers", CUSTOMERS, "--seed", 7, "--csv", data]
    subprocess.run([str(c) for c in command], check=True)
    expected = spark_features(data)
    got = stream_features(data)
    assert len(expected) == COUNT and set(got) == set(expected), "the stream stored every transaction"
    worst = {n: 0.0 for n in history.NAMES}
    for trans_num, features in expected.items():
        for name, want in features.items():
            have = got[trans_num][name]
            assert have is not None, f"{trans_num}: {name} not computed"
            diff = abs(have - want)
            worst[name] = max(worst[name], diff)
            assert diff <= TOLERANCE * max(1.0, abs(want)), f"{trans_num} {name}: stream {have}, Spark {want}"
    # The data exercise every feature: none is constant (a feature that is
    # always 0 on both sides would agree and prove nothing).
    for name in history.NAMES:
        assert len({round(f[name], 9) for f in expected.values()}) > 2, f"{name} takes too few values"
    assert any(f["merch_fraud_rate_30d"] > 0 for f in expected.values()), "labels reached merchant risk"
    print("largest differences:", {n: d for n, d in worst.items() if d})


@pytest.mark.parametrize("bad", [{"is_fraud": 2}, {"is_fraud": None}])
def test_a_bad_label_is_refused_by_name(bad: dict[str, object]) -> None:
    server = Server()
    try:
        client = flight.connect(server.flight)
        row = {"trans_num": "t1", "cc_num": "4111", "is_fraud": 1} | bad
        table = pa.table({k: pa.array([v], pa.int64() if k == "is_fraud" else pa.string()) for k, v in row.items()})
        with pytest.raises(pa.ArrowInvalid, match="is_fraud"):
            put(client, ["labels"], table)
    finally:
        server.stop()


def test_a_model_trained_with_history_loads_and_scores_with_the_streams_history(tmp_path: Path) -> None:
    """train.py without options on 78 days: the history features are model
    inputs (the default when the input covers their warm-up), the parity
    vectors carry Spark's values (the server checks them at load), and the
    server feeds the model the history it computes itself."""
    data = tmp_path / "train.csv"
    command = [binary(), "simulate", "--count", 20_000, "--customers", 100, "--seed", 3, "--csv", data]
    subprocess.run([str(c) for c in command], check=True)
    out = tmp_path / "with-history"
    train(data, out, "--model", "gbt", "--single", "--trees", 10, "--parity-rows", 150)
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["history"] == {"used": True, "why_not": None}
    inputs = [i["name"] for i in meta["inputs"]]
    assert set(history.NAMES) <= set(inputs), inputs
    first = json.loads((out / "parity.jsonl").read_text().splitlines()[0])
    assert set(history.NAMES) <= set(first["features"]), "parity vectors carry the history features"

    server = Server(model=out)
    try:
        client = flight.connect(server.flight)
        info = json.loads(next(client.do_action(flight.Action("model-info", b""))).body.to_pybytes())
        assert info["version"] == out.name
        with data.open() as f:
            rows = sorted(csv.DictReader(f), key=lambda r: (int(r["unix_time"]), r["trans_num"]))[:3_000]
        numbers = {"amt", "lat", "long", "merch_lat", "merch_long"}
        columns = [c for c in rows[0] if c not in ("", "is_fraud", "unix_time", "city_pop")]
        table = pa.table({
            **{c: pa.array([float(r[c]) if c in numbers else r[c] for r in rows]) for c in columns},
            "unix_time": pa.array([int(r["unix_time"]) for r in rows], pa.int64()),
        })
        put(client, ["transactions"], table)
        stored = client.do_get(recent_ticket(len(rows))).read_all().to_pylist()
    finally:
        log = server.stop()
    assert len(stored) == len(rows), log[-2000:]
    assert all(r["model_version"] == out.name and 0.0 <= r["fraud_score"] <= 1.0 for r in stored)
    assert max(r["card_tx_30d"] for r in stored) > 10, "the stream's own history reached the model's inputs"
