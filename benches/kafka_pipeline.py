"""The whole-system benchmarks through Kafka, each next to its peer, on the
same machine, in one run, with the same model:

1. Kafka to score: a pre-filled 8-partition topic consumed and scored by
   `fraudflight serve` with both sinks and the outcome topic off (records/s,
   median of --repeats, each with a fresh consumer group), then by the
   original design's scorer, a PySpark Structured Streaming job
   (benches/peers/structured_streaming.py) on the same topic. `serve`'s peak
   RSS is read from /proc (VmHWM) at the end of each run.
2. Latency under load: records produced at 5,000/s for 60 s to a fresh
   topic; time from each record's Kafka timestamp to scored: `serve`'s
   end-to-end latency histogram (/metrics), and the peer's own measure.
3. Full pipeline: `serve` with Cassandra and OpenSearch on (fresh keyspace
   and index prefix each repeat), sustained records/s from the `stored`
   counter (acknowledged by both sinks), and zero loss checked by counting
   the rows and documents afterwards; after each repeat, the sinks' ceilings
   without Kafka or scoring (benches/sink_ceiling.rs: the same outcomes,
   written with the same client settings): Cassandra alone, OpenSearch
   alone, and both at once.

    scripts/with-services.sh .venv/bin/python benches/kafka_pipeline.py

Each part warms up first, unmeasured: one extra Kafka-to-score run, 5 s at
the latency rate (left out of both sides' quantiles), a quarter-size
pipeline run. Rates are measured from the first record received to the last stored, so
`serve`'s start and its consumer-group join (and the peer's first
micro-batch) are left out. The model is a Spark-trained one with its PipelineModel
(target/bench/spark/model, made once with spark-job/train.py, or --model).
Writes target/bench/kafka.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "release" / "fraudflight"
PY = Path(sys.executable)
BENCH = ROOT / "target" / "bench"
LOGS = BENCH / "logs"
BROKERS = os.environ.get("FRAUDFLIGHT_KAFKA_BROKERS", "127.0.0.1:9092")
OPENSEARCH = os.environ.get("FRAUDFLIGHT_OPENSEARCH_URL", "http://127.0.0.1:9200")
PEER = ROOT / "benches" / "peers" / "structured_streaming.py"
# The peer's Kafka source, as its module names it.
KAFKA_PACKAGE = re.search(r'KAFKA_PACKAGE = "([^"]+)"', PEER.read_text()).group(1)
STAMP = time.strftime("%H%M%S")
# Latency under load: seconds produced at the same rate before measuring.
WARM_UP_SECONDS = 5


def run(command: list[object], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(map(str, command))}\n{(done.stdout + done.stderr)[-3000:]}")
    return done


def spark_env() -> dict[str, str]:
    return {**os.environ, "PYSPARK_PYTHON": str(PY), "PYSPARK_DRIVER_PYTHON": str(PY)}


def spark_submit(script: Path, *args: object, packages: str = "") -> list[str]:
    extra = ["--packages", packages] if packages else []
    return [str(PY.parent / "spark-submit"), "--master", "local[*]", "--driver-memory", "3g", *extra, str(script),
            *map(str, args)]


def peer_submit(*args: object) -> list[str]:
    """The Structured Streaming peer under spark-submit, with the Kafka source
    (spark.jars.packages set inside a job is too late: spark-submit has
    started the JVM)."""
    return spark_submit(PEER, "--brokers", BROKERS, *args, packages=KAFKA_PACKAGE)


def simulate(topic: str, count: int, seed: int, rate: int = 0, customers: int = 2000) -> None:
    run([BIN, "simulate", "--brokers", BROKERS, "--topic", topic, "--partitions", 8, "--count", count, "--seed", seed,
         "--rate", rate, "--customers", customers])


def ensure_model(given: Path | None) -> Path:
    """A model with its Spark PipelineModel beside the ONNX file."""
    if given:
        return given
    model = BENCH / "spark" / "model"
    if (model / "spark-model").is_dir() and (model / "model.onnx").exists():
        return model
    data = BENCH / "spark" / "train-200k.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        run([BIN, "simulate", "--count", 200_000, "--seed", 1, "--parquet", data])
    print("training the benchmark model (once): GBT, 50 trees, depth 5, 200,000 rows", flush=True)
    run(spark_submit(ROOT / "spark-job" / "train.py", "--input", data, "--output", model, "--version", "bench-kafka",
                     "--model", "gbt", "--single", "--class-weights", "none", "--no-history"), cwd=ROOT / "spark-job", env=spark_env())
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`fraudflight serve` on a topic, with its HTTP API on a free port."""

    def __init__(self, name: str, model: Path, topic: str, group: str, sinks: bool, keyspace: str = "", prefix: str = ""):
        self.http = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "FRAUDFLIGHT_MODEL": str(model), "FRAUDFLIGHT_KAFKA_BROKERS": BROKERS,
               "FRAUDFLIGHT_KAFKA_TOPIC": topic, "FRAUDFLIGHT_KAFKA_GROUP": group,
               "FRAUDFLIGHT_FLIGHT_ADDR": "127.0.0.1:0", "FRAUDFLIGHT_HTTP_ADDR": self.http}
        if sinks:
            env |= {"FRAUDFLIGHT_CASSANDRA_KEYSPACE": keyspace, "FRAUDFLIGHT_OPENSEARCH_INDEX_PREFIX": prefix}
        else:
            env |= {"FRAUDFLIGHT_CASSANDRA_NODES": "", "FRAUDFLIGHT_OPENSEARCH_URL": ""}
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"{name}.log"
        self.log_file = self.log.open("w")
        self.proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=self.log_file)
        deadline = time.monotonic() + 120
        while not self.get("/health", quiet=True):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"serve did not start; log {self.log}:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def get(self, path: str, quiet: bool = False) -> str | None:
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=10) as r:
                return r.read().decode()
        except OSError:
            if quiet:
                return None
            raise

    def counters(self) -> dict:
        return json.loads(self.get("/api/summary"))["counters"]

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def wait_stored(self, count: int, timeout: float) -> dict:
        """Polls until `count` records are stored; the rate from the first
        poll that saw a record received to the one that saw all stored (from
        the first stored would leave out the batches already in flight then)."""
        deadline = time.monotonic() + timeout
        first = None
        while True:
            c = self.counters()
            now = time.monotonic()
            if c["ingested"] > 0 and first is None:
                first = (now, c["stored"])
            if c["stored"] >= count:
                break
            if now > deadline or self.proc.poll() is not None:
                raise SystemExit(f"serve stored {c['stored']} of {count} records in {timeout:.0f} s; log {self.log}")
            time.sleep(0.05)
        seconds = now - first[0]
        return {"records": c["stored"], "timed_records": c["stored"] - first[1], "seconds": round(seconds, 2),
                "records_per_second": round((c["stored"] - first[1]) / seconds) if seconds > 0 else None,
                "invalid": c["invalid"], "dead_letters": c["dead_letters"]}

    def latency_buckets(self) -> list[tuple[float, float]]:
        """The end-to-end latency histogram (Kafka timestamp to stored; with
        the sinks off, to scored): (upper bound in s, cumulative count)."""
        return sorted(
            (float("inf") if le == "+Inf" else float(le), float(n))
            for le, n in re.findall(r'fraudflight_end_to_end_latency_seconds_bucket\{le="([^"]+)"\} (\S+)', self.get("/metrics"))
        )

    def latency_quantiles(self, since: list[tuple[float, float]] | None = None) -> dict:
        """p50 / p99 of the latency histogram, interpolated in its bucket;
        counts in `since` (an earlier `latency_buckets`: the warm-up) left out."""
        buckets = self.latency_buckets()
        if since:
            buckets = [(le, n - m) for (le, n), (_, m) in zip(buckets, since, strict=True)]
        total = buckets[-1][1]

        def q(p: float) -> float:
            below, lower = 0.0, 0.0
            for le, n in buckets:
                if n >= p * total:
                    if le == float("inf"):
                        return lower * 1000
                    return (lower + (le - lower) * (p * total - below) / max(n - below, 1)) * 1000
                below, lower = n, le
            return lower * 1000

        return {"records": int(total), "p50_ms": round(q(0.5), 1), "p99_ms": round(q(0.99), 1),
                "bucket_bounds_ms": [round(le * 1000, 1) for le, _ in buckets if le != float("inf")]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def kafka_to_score(model: Path, records: int, repeats: int, peer: bool, customers: int = 2000) -> dict:
    topic = f"bench-kafka-{STAMP}"
    simulate(topic, records, seed=21, customers=customers)
    runs = []
    # Repeat 0 is the warm-up (the broker's page cache and JIT, the model's
    # first load), not counted.
    for r in range(repeats + 1):
        serve = Serve(f"kafka-{r}", model, topic, f"{topic}-g{r}", sinks=False)
        try:
            result = serve.wait_stored(records, timeout=600)
            result["peak_rss_mb"] = round(serve.peak_rss_mb(), 1)
        finally:
            serve.stop()
        print(f"kafka to score, {f'repeat {r}' if r else 'warm-up'}: {result['records_per_second']:,} records/s, "
              f"peak RSS {result['peak_rss_mb']} MB", flush=True)
        if r:
            runs.append(result)
    out = {"topic_partitions": 8, "records": records, "customers": customers, "runs": runs,
           "records_per_second": statistics.median(r["records_per_second"] for r in runs),
           "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    if peer:
        done = run(peer_submit("--topic", topic, "--model", model, "--mode", "throughput"),
                   cwd=ROOT, env=spark_env())
        out["peer"] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"kafka to score, Structured Streaming peer: {out['peer']['records_per_second']:,} records/s", flush=True)
    return out


def latency_under_load(model: Path, rate: int, seconds: int, peer: bool) -> dict:
    count = rate * seconds
    warm_up = rate * WARM_UP_SECONDS
    topic = f"bench-latency-{STAMP}"
    simulate(topic, 0, seed=31)
    serve = Serve("latency", model, topic, f"{topic}-g", sinks=False)
    try:
        # Produce only once the consumer owns its partitions (lag is reported).
        deadline = time.monotonic() + 60
        while len(json.loads(serve.get("/api/summary"))["consumer_lag"]) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        # Warm-up at the same rate; its records are left out of the quantiles.
        simulate(topic, warm_up, seed=33, rate=rate)
        serve.wait_stored(warm_up, timeout=60)
        before = serve.latency_buckets()
        simulate(topic, count, seed=32, rate=rate)
        serve.wait_stored(warm_up + count, timeout=120)
        out = {"rate": rate, "seconds": seconds, "warm_up_seconds": WARM_UP_SECONDS,
               "fraudflight": serve.latency_quantiles(since=before)}
    finally:
        serve.stop()
    print(f"latency at {rate}/s: fraudflight p99 {out['fraudflight']['p99_ms']} ms", flush=True)
    if peer:
        peer_topic = f"{topic}-peer"
        simulate(peer_topic, 0, seed=31)
        proc = subprocess.Popen(peer_submit("--topic", peer_topic, "--model", model, "--mode", "latency", "--records", count,
                                            "--warm-up", warm_up),
                                cwd=ROOT, env=spark_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "STARTED":
                break
        simulate(peer_topic, warm_up, seed=33, rate=rate)
        simulate(peer_topic, count, seed=32, rate=rate)
        lines += proc.stdout.readlines()
        if proc.wait() != 0 or not lines:
            raise SystemExit(f"Structured Streaming peer failed: {''.join(lines)[-2000:]}")
        out["peer"] = json.loads(lines[-1])
        print(f"latency at {rate}/s: Structured Streaming peer p99 {out['peer']['p99_ms']} ms", flush=True)
    return out


def opensearch(method: str, path: str) -> dict:
    """One request; 429 / 503 (OpenSearch still busy with the bulk load just
    sent) are retried for up to two minutes."""
    deadline = time.monotonic() + 120
    while True:
        req = urllib.request.Request(f"{OPENSEARCH}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def sink_bench(*args: object, env: dict | None = None) -> str:
    done = run(["cargo", "bench", "--quiet", "--bench", "sink_ceiling", "--", *args], cwd=ROOT,
               env={**os.environ, **(env or {})})
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def full_pipeline(model: Path, records: int, repeats: int) -> dict:
    # Indices an interrupted earlier run left behind (one per simulated day
    # per repeat) count against OpenSearch's shard limit.
    opensearch("DELETE", "/bench-*")
    topic = f"bench-pipeline-{STAMP}"
    simulate(topic, records, seed=41)
    # Warm-up, not counted: a smaller topic through the same path, so the
    # measured runs meet warm Cassandra and OpenSearch JVMs.
    warm_up = max(records // 4, 1)
    simulate(f"{topic}-warm-up", warm_up, seed=42)
    serve = Serve("pipeline-warm-up", model, f"{topic}-warm-up", f"{topic}-warm-up-g", sinks=True,
                  keyspace=f"bench_{STAMP}_warm_up", prefix=f"bench-{STAMP}-warm-up")
    try:
        print(f"full pipeline, warm-up: {serve.wait_stored(warm_up, timeout=900)['records_per_second']:,} records/s", flush=True)
    finally:
        serve.stop()
    opensearch("DELETE", f"/bench-{STAMP}-warm-up-*")
    sink_bench("drop", f"bench_{STAMP}_warm_up")
    runs, ceilings = [], {"cassandra": [], "opensearch": [], "both": []}
    for r in range(repeats):
        keyspace, prefix = f"bench_{STAMP}_{r}", f"bench-{STAMP}-{r}"
        serve = Serve(f"pipeline-{r}", model, topic, f"{topic}-g{r}", sinks=True, keyspace=keyspace, prefix=prefix)
        try:
            result = serve.wait_stored(records, timeout=900)
        finally:
            serve.stop()
        opensearch("POST", f"/{prefix}-*/_refresh")
        result["opensearch_documents"] = opensearch("GET", f"/{prefix}-*/_count")["count"]
        result["cassandra_rows"] = int(sink_bench("count", keyspace))
        opensearch("DELETE", f"/{prefix}-*")
        sink_bench("drop", keyspace)
        result["lost"] = max(records - result["opensearch_documents"], records - result["cassandra_rows"])
        runs.append(result)
        print(f"full pipeline, repeat {r + 1}: {result['records_per_second']:,} records/s, "
              f"Cassandra {result['cassandra_rows']:,} rows, OpenSearch {result['opensearch_documents']:,} documents",
              flush=True)
        # The ceilings right after, in each repeat: the services' JVMs keep
        # getting faster for minutes, and this way the drift is shared.
        # Fresh keyspace and indices for each, so every write is an insert.
        for sink, rates in ceilings.items():
            space, indices = f"bench_ceiling_{STAMP}_{r}_{sink}", f"bench-ceiling-{STAMP}-{r}-{sink}"
            env = {"FRAUDFLIGHT_MODEL": str(model), "FRAUDFLIGHT_CASSANDRA_KEYSPACE": space,
                   "FRAUDFLIGHT_OPENSEARCH_INDEX_PREFIX": indices}
            rates.append(json.loads(sink_bench("write", sink, records, 1, env=env))["median_records_per_second"])
            print(f"{'both sinks' if sink == 'both' else sink} alone, repeat {r + 1}: {rates[-1]:,.0f} records/s", flush=True)
            if sink != "opensearch":
                sink_bench("drop", space)
            if sink != "cassandra":
                opensearch("DELETE", f"/{indices}-*")
    rate = statistics.median(r["records_per_second"] for r in runs)
    ceilings = {sink: {"records_per_second": rates, "median_records_per_second": statistics.median(rates)}
                for sink, rates in ceilings.items()}
    slower = min(ceilings["cassandra"]["median_records_per_second"], ceilings["opensearch"]["median_records_per_second"])
    return {"records": records, "runs": runs, "records_per_second": rate, "sink_ceilings": ceilings,
            "ratio_to_slower_sink": round(rate / slower, 2),
            "ratio_to_both_sinks": round(rate / ceilings["both"]["median_records_per_second"], 2),
            "lost": max(r["lost"] for r in runs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="model directory with spark-model/ (default: train one, once)")
    p.add_argument("--records", type=int, default=1_500_000, help="Kafka to score: records in the topic")
    p.add_argument("--customers", type=int, default=2000,
                   help="Kafka to score: distinct cards (1000000 measures the history's card cache)")
    p.add_argument("--pipeline-records", type=int, default=100_000, help="full pipeline: records")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rate", type=int, default=5000, help="latency: records/s produced")
    p.add_argument("--seconds", type=int, default=60, help="latency: seconds of producing")
    p.add_argument("--no-peer", action="store_true", help="skip the Structured Streaming peer")
    p.add_argument("--only", choices=["kafka", "latency", "pipeline"], action="append", help="run only these parts")
    args = p.parse_args()
    parts = args.only or ["kafka", "latency", "pipeline"]
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    model = ensure_model(args.model)
    out_path = BENCH / "kafka.json"
    result = json.loads(out_path.read_text()) if args.only and out_path.exists() else {}
    result |= {"machine": f"{os.cpu_count()} cores", "model": str(model)}
    steps = {"kafka": ("kafka_to_score", lambda: kafka_to_score(model, args.records, args.repeats, not args.no_peer, args.customers)),
             "latency": ("latency", lambda: latency_under_load(model, args.rate, args.seconds, not args.no_peer)),
             "pipeline": ("pipeline", lambda: full_pipeline(model, args.pipeline_records, args.repeats))}
    for part in parts:
        key, measure = steps[part]
        result[key] = measure()
        # Written after each part, so a later failure keeps what was measured.
        out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out_path}")


if __name__ == "__main__":
    main()
