"""The Flight API through pyarrow.flight, the client Spark jobs and analysts
use, against a real `fraudflight demo` process."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from conftest import Server, shipped_model, simulate


def exchange(client: flight.FlightClient, table: pa.Table, chunk: int = 2_000) -> pa.Table:
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("score"))
    answers = []
    with writer:
        writer.begin(table.schema)
        for batch in table.to_batches(max_chunksize=chunk):
            writer.write_batch(batch)
            answers.append(reader.read_chunk().data)
        writer.done_writing()
    return pa.Table.from_batches(answers)


def action(client: flight.FlightClient, name: str, body: bytes = b"") -> dict:
    results = list(client.do_action(flight.Action(name, body)))
    return json.loads(results[0].body.to_pybytes())


def test_exchange_returns_one_score_per_row_in_order(server: Server, tmp_path: Path) -> None:
    table = pq.read_table(simulate(tmp_path, 10_000, seed=21))
    client = flight.connect(server.flight)
    scored = exchange(client, table)
    assert scored.num_rows == 10_000
    assert scored.column_names == ["trans_num", "fraud_score", "is_fraud_predicted", "model_version"]
    assert scored["trans_num"].to_pylist() == table["trans_num"].to_pylist()
    scores = scored["fraud_score"].to_pylist()
    assert all(0.0 <= s <= 1.0 for s in scores)
    # The simulated fraud is mostly caught: frauds score far above genuine rows.
    truth = table["is_fraud"].to_pylist()
    fraud = [s for s, t in zip(scores, truth, strict=True) if t == 1]
    genuine = [s for s, t in zip(scores, truth, strict=True) if t == 0]
    assert sum(fraud) / len(fraud) > 0.7 and sum(genuine) / len(genuine) < 0.05


def test_pandas_style_types_are_accepted(server: Server, tmp_path: Path) -> None:
    table = pq.read_table(simulate(tmp_path, 500, seed=4))
    # pandas hands over card numbers as int64 and amounts as float32 at times.
    table = table.set_column(table.schema.get_field_index("cc_num"), "cc_num", table["cc_num"].cast(pa.int64()))
    table = table.set_column(table.schema.get_field_index("amt"), "amt", table["amt"].cast(pa.float32()))
    scored = exchange(flight.connect(server.flight), table)
    assert scored.num_rows == 500


def test_missing_amt_is_invalid_argument_naming_amt(server: Server, tmp_path: Path) -> None:
    table = pq.read_table(simulate(tmp_path, 100, seed=5)).drop_columns(["amt"])
    client = flight.connect(server.flight)
    # pyarrow raises ArrowInvalid for gRPC INVALID_ARGUMENT.
    with pytest.raises(pa.ArrowInvalid) as err:
        exchange(client, table)
    assert "missing required column `amt`" in str(err.value)
    # ... and the server is still there.
    assert action(client, "health")["status"] == "ok"


def test_alerts_hold_only_predicted_frauds(tmp_path: Path) -> None:
    server = Server(rate=5_000)
    try:
        client = flight.connect(server.flight)
        deadline = time.time() + 30
        alerts = None
        while time.time() < deadline:
            info = {f.descriptor.path[0].decode(): f for f in client.list_flights()}
            alerts = client.do_get(info["alerts"].endpoints[0].ticket).read_all()
            if alerts.num_rows >= 5:
                break
            time.sleep(0.5)
        assert alerts is not None and alerts.num_rows >= 5
        assert all(alerts["is_fraud_predicted"].to_pylist())
        threshold = action(client, "model-info")["threshold"]
        assert min(alerts["fraud_score"].to_pylist()) >= threshold - 1e-6
        recent = client.do_get(flight.Ticket(b"recent")).read_all()
        assert recent.num_rows > alerts.num_rows
        assert not all(recent["is_fraud_predicted"].to_pylist())

        # The HTTP side sees the same stream.
        summary = json.loads(urllib.request.urlopen(f"{server.http}/api/summary").read())
        assert summary["counters"]["scored"] >= recent.num_rows
        assert summary["counters"]["alerts"] >= alerts.num_rows
        assert 0.0 < summary["counters"]["fraud_rate"] < 0.05
        assert summary["model"]["version"] == action(client, "model-info")["version"]
        http_alerts = json.loads(urllib.request.urlopen(f"{server.http}/api/alerts?limit=3").read())
        assert len(http_alerts) == 3 and all(a["is_fraud_predicted"] for a in http_alerts)
        page = urllib.request.urlopen(f"{server.http}/").read().decode()
        assert "/api/summary" in page
    finally:
        server.stop()


def test_load_model_swaps_the_version_reported_by_model_info(server: Server, tmp_path: Path) -> None:
    source = shipped_model()
    target = tmp_path / "next-model"
    shutil.copytree(source, target)
    meta = json.loads((target / "model.json").read_text())
    meta["version"] = "pytest-swapped"
    (target / "model.json").write_text(json.dumps(meta))

    client = flight.connect(server.flight)
    before = action(client, "model-info")["version"]
    assert before != "pytest-swapped"
    loaded = action(client, "load-model", json.dumps({"path": str(target)}).encode())
    assert loaded["version"] == "pytest-swapped" and loaded["previous"] == before
    assert action(client, "model-info")["version"] == "pytest-swapped"

    (target / "model.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(pa.ArrowInvalid) as err:
        action(client, "load-model", json.dumps({"path": str(target)}).encode())
    assert "old model keeps serving" in str(err.value)
    assert action(client, "model-info")["version"] == "pytest-swapped"
