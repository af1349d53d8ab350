"""The soak: the self-learning loop as a bank would run it, for a month of
simulated traffic, measured (not a timed test; `make soak`, or `make bench`
with BENCH_SOAK=1).

- `fraudflight simulate --fraud handbook --labels` produces --transactions
  transactions over --days simulated days into an 8-partition topic, with a
  label for every fraud on `<topic>.labels` (reported 1 hour to 20 days
  later), as fast as Kafka takes them;
- two `serve` instances (Cassandra, history and live quality on, the search
  engine off to leave the two cores to the rest) share the topic, with the
  scheduled retraining on in one of them (--retrain-every seconds after
  the last run ended);
- --hostile hostile labels (oversized, wrong types, far ahead, names over
  the limit, not JSON; and valid ones for cards never seen) are sent into the
  labels topic while the stream runs;
- at a third of the stream one instance is killed with SIGKILL and started
  again; at two thirds Cassandra is stopped for 20 s and started again.

Every --sample seconds it records each instance's RSS, records stored,
labels applied, whether the labels stream is stalled, and live quality's
rows read and minutes counted. At the end it checks, independently of the
service (Spark reading Cassandra, scikit-learn computing AP and ROC AUC):
every transaction stored once; every (day, version) live quality shows
within its stated error of the exact values from `quality_rows`, and
its card precision at 100 equal to the one computed from them; every
hostile label that can never be stored in the DLQ, and only those.
Writes target/bench/soak.json.

    scripts/with-services.sh --services "kafka cassandra" .venv/bin/python benches/soak.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Card precision's k: the service's default (quality.card_k).
CARD_K = 100
# FRAUDFLIGHT_BIN runs a copy, so the tree can be rebuilt while a soak runs.
BIN = Path(os.environ.get("FRAUDFLIGHT_BIN", ROOT / "target" / "release" / "fraudflight"))
BENCH = ROOT / "target" / "bench"
LOGS = BENCH / "logs"
MODEL = ROOT / "models" / "handbook" / "gbt-handbook-history-v1"
BROKERS = os.environ.get("FRAUDFLIGHT_KAFKA_BROKERS", "127.0.0.1:9092")
STAMP = time.strftime("%H%M%S")
# Hostile labels delivered (the sender thread's report).
SENT: list[int] = []
sys.path.insert(0, str(ROOT / "spark-job"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """One `serve` of the soak, started again under the same name after a kill."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name, self.env, self.proc, self.http = name, env, None, ""
        self.log = LOGS / f"soak-{name}.log"
        # The log is appended to across runs: this run's part starts here.
        self.log_from = self.log.stat().st_size if self.log.exists() else 0

    def start(self) -> None:
        self.http = f"127.0.0.1:{free_port()}"
        env = self.env | {"FRAUDFLIGHT_HTTP_ADDR": self.http, "FRAUDFLIGHT_KAFKA_INSTANCE_ID": self.name}
        LOGS.mkdir(parents=True, exist_ok=True)
        log = self.log.open("a")
        self.proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 180
        while self.get("/health") is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start; see {LOGS}/soak-{self.name}.log")
            time.sleep(0.5)

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=10) as r:
                return r.read().decode()
        except OSError:
            return None

    def metric(self, text: str, name: str) -> float:
        found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def sample(self) -> dict | None:
        text = self.get("/metrics")
        if text is None:
            return None
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text()).group(1))
        return {
            "rss_mb": round(rss / 1024, 1),
            "stored": self.metric(text, "fraudflight_records_stored_total"),
            "labels": self.metric(text, "fraudflight_labels_total"),
            "labels_stalled": self.metric(text, "fraudflight_labels_stalled"),
            "quality_rows_read": self.metric(text, "fraudflight_quality_rows_read_total"),
            "quality_minutes": self.metric(text, "fraudflight_quality_minutes_counted_total"),
            "lag": sum(float(v) for v in re.findall(r"^fraudflight_consumer_lag{[^}]*} (\S+)$", text, re.M)),
        }

    def retrains(self) -> list[dict]:
        """The scheduled retraining runs of this soak, as `serve` logged them."""
        with self.log.open("rb") as f:
            f.seek(self.log_from)
            text = f.read().decode(errors="replace")
        runs = []
        for line in text.splitlines():
            if any(end in line for end in ("retraining finished", "retraining failed", "retraining took longer",
                                           "cannot start retraining", "retraining run lost")):
                fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
                runs.append({"instance": self.name, "at": line[:19], "finished": "retraining finished" in line,
                             **{k: v.strip('"') for k, v in fields.items() if k in ("deployed", "mode", "challenger", "reason", "seconds")}})
        return runs

    def retraining_under_way(self) -> bool:
        """Whether a scheduled retraining run has started and not ended yet."""
        with self.log.open("rb") as f:
            f.seek(self.log_from)
            text = f.read().decode(errors="replace")
        return text.count("retraining started") > len(self.retrains())

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def hostile_labels(n: int, cards: list[str]) -> list[tuple[bytes, str | None]]:
    """`n` hostile labels and the words of each one's DLQ reason (None: a
    valid label for a card never seen, which must not reach the DLQ)."""
    out = []
    for i in range(n):
        c = cards[i % len(cards)]
        kind = i % 7
        if i % 500 == 0:
            out.append((json.dumps({"trans_num": f"h{i}", "cc_num": "9" * 70_000, "is_fraud": 1}).encode(), "not a card number"))
        elif kind == 0:
            out.append((json.dumps({"trans_num": "7" * 300, "cc_num": c, "is_fraud": 1}).encode(), "`trans_num`"))
        elif kind == 1:
            out.append((json.dumps({"trans_num": f"h{i}", "cc_num": c, "is_fraud": "maybe"}).encode(), "is_fraud"))
        elif kind == 2:
            out.append((json.dumps({"trans_num": f"h{i}", "cc_num": c, "is_fraud": 1, "reported_at": 4_000_000_000_000}).encode(), "`reported_at`"))
        elif kind == 3:
            out.append((json.dumps({"trans_num": f"h{i}", "cc_num": c, "is_fraud": 0, "decided_by": "b" * 65}).encode(), "`decided_by`"))
        elif kind == 4:
            out.append((b'{"trans_num": "h', "JSON"))
        elif kind == 5:
            out.append((json.dumps({"trans_num": f"h{i}", "is_fraud": 1}).encode(), "cc_num"))
        else:
            out.append((json.dumps({"trans_num": f"stranger-{i}", "cc_num": f"4{i:015d}", "is_fraud": 1}).encode(), None))
    return out


def send_hostile(topic: str, labels: list[tuple[bytes, str | None]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": BROKERS, "message.max.bytes": 1_000_000, "linger.ms": 20})
    partitions = len(producer.list_topics(topic, timeout=30).topics[topic].partitions)
    for i, (value, _) in enumerate(labels):
        while True:
            try:
                producer.produce(topic, value=value, key=b"hostile", partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("hostile labels not all delivered")
    SENT.append(len(labels))


def dead_letters(topic: str) -> tuple[int, int]:
    """Dead letters in `topic`, and how many distinct source records they
    are (each instance reads every labels partition, so each dead-letters
    what it cannot use: the copies share their source partition and offset)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": f"soak-dlq-{STAMP}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    total, sources = 0, set()
    for p in metadata.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += high - low
        consumer.assign([TopicPartition(topic, p, low)])
        read = low
        while read < high:
            for m in consumer.consume(1000, timeout=10):
                if m.error():
                    continue
                h = dict(m.headers() or [])
                sources.add((h.get("source_partition"), h.get("source_offset")))
                read = m.offset() + 1
    consumer.close()
    return total, len(sources)


def services(action: str, name: str) -> None:
    # Its own session: a Ctrl-C of the soak must not reach the database it started.
    subprocess.run([ROOT / "scripts" / "services.sh", action, name], check=True, start_new_session=True)


def independent_quality(keyspace: str) -> tuple[int, list[dict]]:
    """Transactions stored, and per (day, version) the exact AP and ROC AUC
    from `quality_rows` (Spark + scikit-learn) and card precision at 100
    (`evaluation.card_precision_at_k`, a card fraudulent on a day when any
    of its transactions that day is, whichever version scored it), next to
    what the service saved."""
    import numpy as np
    from pyspark.sql import functions as F
    from sklearn.metrics import average_precision_score, roc_auc_score

    from fraudflight_spark import data
    from fraudflight_spark.evaluation import card_precision_at_k
    from fraudflight_spark.session import spark_session

    source = f"cassandra://127.0.0.1:9042/{keyspace}"
    spark = spark_session("fraudflight-soak-check", data.spark_config(source))
    stored = data.cassandra_table(spark, keyspace, "transactions").select("trans_num").distinct().count()
    rows = (
        data.cassandra_table(spark, keyspace, "quality_rows")
        .where(F.col("fraud_score").isNotNull())
        .select(F.col("day").cast("string").alias("date"), "cc_num", "model_version", "fraud_score",
                F.coalesce(F.col("label"), F.lit(False)).alias("fraud"))
        .toPandas()
    )
    saved = data.cassandra_table(spark, keyspace, "model_quality").select("measures").toPandas()
    spark.stop()
    served = {}
    for text in saved["measures"]:
        d = json.loads(text)
        served[(d["date"], d["version"])] = d
    # Live quality measures the newest 30 days (quality.days); older days
    # are no longer counted again when their late labels come.
    newest = max(rows["date"])
    oldest = str(dt.date.fromisoformat(newest) - dt.timedelta(days=29))
    fraud_cards = set(zip(rows.loc[rows["fraud"], "date"], rows.loc[rows["fraud"], "cc_num"], strict=True))
    out = []
    for (date, version), day in rows[rows["date"] >= oldest].groupby(["date", "model_version"]):
        d = served.get((date, version))
        entry = {"date": date, "version": version, "transactions": len(day), "frauds": int(day["fraud"].sum()), "served": d is not None}
        if day["fraud"].any() and not day["fraud"].all():
            entry["ap"] = float(average_precision_score(day["fraud"], day["fraud_score"].astype("float32")))
            entry["auc"] = float(roc_auc_score(day["fraud"], day["fraud_score"].astype("float32")))
        card_fraud = np.array([(date, c) in fraud_cards for c in day["cc_num"]], dtype=np.float64)
        entry["card_precision"] = card_precision_at_k(np.zeros(len(day), dtype=np.int64), day["cc_num"].to_numpy(),
                                                      day["fraud_score"].to_numpy(np.float32), card_fraud, CARD_K)["mean"]
        if d is not None:
            entry["served_transactions"], entry["served_frauds"] = d["transactions"], d["frauds"]
            entry["served_ap"], entry["ap_error"] = d.get("average_precision"), d.get("average_precision_error", 0.0)
            entry["served_auc"], entry["auc_error"] = d.get("roc_auc"), d.get("roc_auc_error", 0.0)
            entry["served_card_precision"] = d.get("card_precision")
            entry["served_card_k"] = d.get("card_precision_k")
        out.append(entry)
    return stored, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transactions", type=int, default=5_000_000)
    p.add_argument("--days", type=int, default=32, help="simulated days the transactions cover")
    p.add_argument("--hostile", type=int, default=100_000)
    p.add_argument("--sample", type=float, default=15.0, help="seconds between samples")
    p.add_argument("--retrain-every", type=int, default=300,
                   help="seconds between instance a's scheduled retrains (after the last one ended); 0 = off")
    p.add_argument("--retrain-wait", type=int, default=1800,
                   help="seconds to wait, after the stream, for a retraining run under way to end")
    p.add_argument("--quality-every", type=int, default=30_000, help="quality.interval_ms")
    p.add_argument("--model", type=Path, default=MODEL)
    args = p.parse_args()

    topic, keyspace = f"soak-{STAMP}", f"soak_{STAMP}"
    # The simulator makes about 2.55 transactions a customer a day.
    customers = max(100, round(args.transactions / args.days / 2.55))
    env = {
        **os.environ,
        "FRAUDFLIGHT_MODEL": str(args.model),
        "FRAUDFLIGHT_KAFKA_BROKERS": BROKERS,
        "FRAUDFLIGHT_KAFKA_TOPIC": topic,
        "FRAUDFLIGHT_KAFKA_GROUP": f"soak-{STAMP}",
        "FRAUDFLIGHT_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "FRAUDFLIGHT_CASSANDRA_KEYSPACE": keyspace,
        "FRAUDFLIGHT_OPENSEARCH_URL": "",
        "FRAUDFLIGHT_FLIGHT_ADDR": "127.0.0.1:0",
        "FRAUDFLIGHT_QUALITY_INTERVAL_MS": str(args.quality_every),
        "FRAUDFLIGHT_RETRAIN_ENABLED": "false",
        "FRAUDFLIGHT_RETRAIN_INTERVAL_MS": str(max(args.retrain_every, 1) * 1000),
    }
    # One instance retrains (two would train the same model twice on two cores).
    retraining = {"FRAUDFLIGHT_RETRAIN_ENABLED": "true" if args.retrain_every else "false"}
    instances = [Instance("a", env | retraining), Instance("b", env)]
    LOGS.mkdir(parents=True, exist_ok=True)
    producer = subprocess.Popen(
        [BIN, "simulate", "--fraud", "handbook", "--labels", "--count", str(args.transactions), "--customers", str(customers),
         "--brokers", BROKERS, "--topic", topic, "--partitions", "8"],
        stdout=subprocess.DEVNULL, stderr=(LOGS / "soak-simulate.log").open("w"),
    )
    time.sleep(5)
    for i in instances:
        i.start()
    cards = [f"4{n:015d}" for n in range(1000)]
    hostile = hostile_labels(args.hostile, cards)
    sender = threading.Thread(target=send_hostile, args=(f"{topic}.labels", hostile))
    started, samples, events = time.monotonic(), [], []
    killed = cassandra_restarted = sender_started = False
    quiet = stalled = 0
    last_stored = -1.0
    while True:
        now = round(time.monotonic() - started, 1)
        points = {i.name: i.sample() for i in instances}
        samples.append({"t": now, **points})
        stored = sum(s["stored"] for s in points.values() if s)
        share = stored / args.transactions
        if not sender_started and share > 0.1:
            sender.start()
            sender_started = True
            events.append((now, "hostile labels sent"))
        if not killed and share > 1 / 3:
            instances[1].kill9()
            events.append((now, "instance b killed (SIGKILL)"))
            time.sleep(5)
            instances[1].start()
            killed = True
        if not cassandra_restarted and share > 2 / 3:
            services("down", "cassandra")
            events.append((now, "Cassandra stopped"))
            time.sleep(20)
            services("up", "cassandra")
            events.append((round(time.monotonic() - started, 1), "Cassandra started"))
            cassandra_restarted = True
        # Done when the producer is, and both instances have read every
        # partition to its end twice in a row (after the kill and the restart).
        # (Or stored nothing more for four samples: a lag the statistics
        # lost track of must not hold the soak for ever.)
        caught_up = producer.poll() is not None and all(s and s["lag"] == 0 for s in points.values())
        still = producer.poll() is not None and stored > 0 and stored == last_stored
        last_stored = stored
        quiet = quiet + 1 if killed and cassandra_restarted and caught_up else 0
        stalled = stalled + 1 if killed and cassandra_restarted and still else 0
        if quiet >= 2 or stalled >= 4:
            # Two more quality rounds: the last minutes are counted.
            time.sleep(2 * args.quality_every / 1000 + 15)
            samples.append({"t": round(time.monotonic() - started, 1), **{i.name: i.sample() for i in instances}})
            break
        time.sleep(args.sample)
    # A retraining run started under the load ends before the instances are
    # stopped (stopping serve stops its run): the report says how it ended.
    waited_from = time.monotonic()
    while args.retrain_every and instances[0].retraining_under_way() and time.monotonic() - waited_from < args.retrain_wait:
        time.sleep(args.sample)
        samples.append({"t": round(time.monotonic() - started, 1), **{i.name: i.sample() for i in instances}})
    if time.monotonic() - waited_from > 1:
        events.append((round(time.monotonic() - started, 1), f"waited {time.monotonic() - waited_from:.0f} s for the retraining run under way"))
    if sender_started:
        sender.join()
    if not SENT:
        raise SystemExit("the hostile labels were not sent (see the traceback above)")
    for i in instances:
        i.stop()

    bad = sum(1 for _, reason in hostile if reason)
    dlq, dlq_sources = dead_letters(f"{topic}.labels.dlq")
    stored, quality = independent_quality(keyspace)
    judged = [q for q in quality if "ap" in q and q["served"] and q.get("served_ap") is not None]
    outside = [q for q in judged if abs(q["served_ap"] - q["ap"]) > q["ap_error"] + 1e-9 or abs(q["served_auc"] - q["auc"]) > q["auc_error"] + 1e-9]
    miscounted = [q for q in quality if q["served"] and (q["served_transactions"], q["served_frauds"]) != (q["transactions"], q["frauds"])]
    cards_off = [q for q in quality if q["served"] and (q["served_card_precision"] is None or q["served_card_k"] != CARD_K
                                                       or abs(q["served_card_precision"] - q["card_precision"]) > 1e-9)]
    rss = {name: [s[name]["rss_mb"] for s in samples if s.get(name)] for name in ("a", "b")}
    # Flat or growing: the median RSS of each quarter of the run.
    quarters = {n: [statistics.median(v[len(v) * q // 4:max(len(v) * (q + 1) // 4, len(v) * q // 4 + 1)]) for q in range(4)]
                for n, v in rss.items() if len(v) >= 4}
    retrains = [run for i in instances for run in i.retrains()]
    rounds = max(1, int((samples[-1]["t"]) / (args.quality_every / 1000)))
    rows_read = sum((samples[-1].get(n) or {}).get("quality_rows_read", 0) for n in ("a", "b"))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        "transactions": args.transactions, "days": args.days, "customers": customers,
        "stored": stored, "lost": args.transactions - stored,
        "labels_stalled_samples": sum(1 for s in samples for n in ("a", "b") if s.get(n) and s[n]["labels_stalled"]),
        "quality_days_versions": len(quality), "quality_judged": len(judged), "quality_outside_error": outside[:5],
        "quality_miscounted": miscounted[:5], "quality_miscounted_count": len(miscounted),
        "card_precision_checked": sum(1 for q in quality if q["served"]), "card_precision_off": cards_off[:5],
        "card_precision_off_count": len(cards_off),
        "quality_rows_read_per_round": round(rows_read / rounds), "quality_rounds": rounds,
        "hostile": args.hostile, "hostile_bad": bad, "dlq": dlq, "dlq_distinct_sources": dlq_sources,
        "rss_mb": {n: {"first": v[0], "max": max(v), "last": v[-1]} for n, v in rss.items() if v},
        "rss_mb_quarter_medians": quarters,
        "retrains": retrains,
        "events": events, "seconds": samples[-1]["t"],
    }
    (BENCH / "soak.json").write_text(json.dumps(result | {"samples": samples}, indent=1))
    print(json.dumps(result, indent=1))
    retrained = not args.retrain_every or any(run["finished"] for run in retrains)
    ok = result["lost"] == 0 and not outside and not miscounted and not cards_off and dlq_sources == bad and retrained
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
