"""The peer for the Flight DoExchange benchmark: a scoring server written the
obvious way in Python. A `pyarrow.flight` server whose DoExchange reads each
Arrow batch of transactions, derives the model's features with numpy
(haversine distance, age at the transaction date, UTC hour: the formulas of
src/features.rs), runs `onnxruntime` on the same model.onnx, and
answers with fraud_score, is_fraud_predicted and model_version, batch by
batch — the same contract as fraudflight's DoExchange.

    python flight_onnx_server.py --model models/gbt-sim-v1 [--port 0]
Prints `READY flight=grpc://127.0.0.1:PORT` once it listens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.flight as flight

EARTH_RADIUS_KM = 6371.0
OUT_SCHEMA = pa.schema([("fraud_score", pa.float32()), ("is_fraud_predicted", pa.bool_()), ("model_version", pa.string())])


def features(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    col = lambda name: batch.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
    lat, long, mlat, mlong = (np.radians(col(c).astype(np.float64)) for c in ("lat", "long", "merch_lat", "merch_long"))
    a = np.sin((mlat - lat) / 2) ** 2 + np.cos(lat) * np.cos(mlat) * np.sin((mlong - long) / 2) ** 2
    distance = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))
    unix = col("unix_time").astype(np.int64)
    hour = (unix % 86_400) // 3600
    at = unix.astype("datetime64[s]").astype("datetime64[D]")
    dob = np.array(col("dob"), dtype="datetime64[D]")
    years = at.astype("datetime64[Y]").astype(int) - dob.astype("datetime64[Y]").astype(int)
    # Birthday not yet reached this year: one year less.
    at_md = at - at.astype("datetime64[Y]")
    dob_md = dob - dob.astype("datetime64[Y]")
    age = years - (at_md < dob_md)
    return {"distance_km": distance, "age": age.astype(np.float64), "hour": hour.astype(np.float64)}


class Peer(flight.FlightServerBase):
    def __init__(self, location: str, model: Path) -> None:
        super().__init__(location)
        meta = json.loads((model / "model.json").read_text())
        self.version = meta["version"]
        self.threshold = meta["threshold"]
        self.inputs = meta["inputs"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(model / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        derived = features(batch)
        feeds = {}
        for i in self.inputs:
            if i["type"] == "string":
                feeds[i["name"]] = np.array(batch.column(i["name"]).fill_null("").to_pylist(), dtype=object).reshape(-1, 1)
            else:
                values = derived.get(i["name"])
                if values is None:
                    values = batch.column(i["name"]).to_numpy(zero_copy_only=False).astype(np.float64)
                feeds[i["name"]] = values.reshape(-1, 1)
        scores = self.session.run(["probability"], feeds)[0][:, 0].astype(np.float32)
        return pa.RecordBatch.from_arrays(
            [pa.array(scores), pa.array(scores >= self.threshold), pa.array([self.version] * len(scores))],
            schema=OUT_SCHEMA,
        )

    def do_exchange(self, context, descriptor, reader, writer) -> None:
        started = False
        for chunk in reader:
            answer = self.score(chunk.data)
            if not started:
                writer.begin(OUT_SCHEMA)
                started = True
            writer.write_batch(answer)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    server = Peer(f"grpc://127.0.0.1:{args.port}", args.model)
    print(f"READY flight=grpc://127.0.0.1:{server.port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
