"""Flight DoExchange benchmark: one `pyarrow.flight` client on loopback sends
ROWS simulated transactions in batches of BATCH rows through DoExchange and
reads every answer, against fraudflight (`demo --rate 0`, release build)
and against the Python peer (benches/peers/flight_onnx_server.py), same
model, same client, same batches, alternating, REPEATS times each.

    .venv/bin/python benches/flight_exchange.py [--rows 10000000] [--batch 65536] [--repeats 3]

The client keeps the stream full: a thread writes while the main thread
reads. Before timing, each server scores the same first batch and the two
answers must agree within 1e-5 (the peer computes what the server computes).
Writes target/bench/flight_exchange.json; prints the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from fraudflight_spark import server

ROOT = Path(__file__).resolve().parents[1]
# FRAUDFLIGHT_BIN: another build to measure (an A/B of two commits).
BIN = Path(os.environ.get("FRAUDFLIGHT_BIN", ROOT / "target" / "release" / "fraudflight"))


def start(command: list[str]) -> tuple[subprocess.Popen, str]:
    running = server.start(command, cwd=ROOT)
    return running.proc, running.flight


def exchange(endpoint: str, batches: list[pa.RecordBatch], count: int) -> tuple[int, float, pa.RecordBatch]:
    """Sends `count` batches (cycling through `batches`); (rows answered, seconds, first answer)."""
    client = flight.FlightClient(endpoint)
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("score"))
    failure: list[BaseException] = []

    def write() -> None:
        try:
            writer.begin(batches[0].schema)
            for i in range(count):
                writer.write_batch(batches[i % len(batches)])
            writer.done_writing()
        except BaseException as e:  # reported by the reader side
            failure.append(e)

    started = time.perf_counter()
    thread = threading.Thread(target=write)
    thread.start()
    rows, first = 0, None
    for _ in range(count):
        chunk = reader.read_chunk().data
        first = first if first is not None else chunk
        rows += chunk.num_rows
    seconds = time.perf_counter() - started
    thread.join()
    writer.close()
    client.close()
    if failure:
        raise failure[0]
    return rows, seconds, first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=65_536)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", type=Path, help="model directory (default: the shipped one)")
    p.add_argument("--distinct-rows", type=int, default=1_048_576, help="simulated rows, sent over and over")
    args = p.parse_args()
    model = args.model or sorted(d for d in (ROOT / "models").iterdir() if (d / "model.json").exists())[-1]
    data = ROOT / "target" / "bench" / f"flight-{args.distinct_rows}.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        subprocess.run([BIN, "simulate", "--count", str(args.distinct_rows), "--seed", "3", "--parquet", data], check=True,
                       stderr=subprocess.DEVNULL)
    batches = pq.read_table(data).combine_chunks().to_batches(max_chunksize=args.batch)
    count = -(-args.rows // args.batch)

    ours, ours_endpoint = start([str(BIN), "demo", "--rate", "0", "--flight-addr", "127.0.0.1:0", "--http-addr",
                                 "127.0.0.1:0", "--model", str(model)])
    peer, peer_endpoint = start([sys.executable, str(ROOT / "benches" / "peers" / "flight_onnx_server.py"), "--model", str(model)])
    try:
        _, _, a = exchange(ours_endpoint, batches, 1)
        _, _, b = exchange(peer_endpoint, batches, 1)
        diff = float(np.max(np.abs(a.column("fraud_score").to_numpy() - b.column("fraud_score").to_numpy())))
        if diff > 1e-5:
            raise SystemExit(f"the peer's scores differ from fraudflight's by {diff}: not the same computation")
        for endpoint in (ours_endpoint, peer_endpoint):  # warm-up
            exchange(endpoint, batches, 10)
        runs: dict[str, list[float]] = {"fraudflight": [], "python_peer": []}
        for i in range(args.repeats):
            for name, endpoint in (("fraudflight", ours_endpoint), ("python_peer", peer_endpoint)):
                rows, seconds, _ = exchange(endpoint, batches, count)
                runs[name].append(rows / seconds)
                print(f"repeat {i + 1}: {name} {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s", flush=True)
    finally:
        for proc in (ours, peer):
            proc.terminate()
            proc.wait()

    result = {
        "rows": count * args.batch,
        "batch_rows": args.batch,
        "model": model.name,
        "score_diff_vs_peer": diff,
        "fraudflight_rows_per_second": statistics.median(runs["fraudflight"]),
        "python_peer_rows_per_second": statistics.median(runs["python_peer"]),
        "runs": runs,
    }
    result["ratio_vs_peer"] = result["fraudflight_rows_per_second"] / result["python_peer_rows_per_second"]
    (ROOT / "target" / "bench" / "flight_exchange.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    main()
