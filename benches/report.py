"""Collects every benchmark's numbers into target/bench/results.json and a
Markdown table, target/bench/results.md, with each target and whether this
run met it. Reads criterion's estimates (target/criterion/GROUP/FUNCTION/
VALUE/new/estimates.json: the median time per iteration) and the JSON files
the whole-system benchmarks write under target/bench/. A benchmark that did
not run is listed as such, not left out.

    .venv/bin/python benches/report.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CRITERION = ROOT / "target" / "criterion"
BENCH = ROOT / "target" / "bench"


def criterion_rate(group: str, function: str, value: str | None = None) -> float | None:
    """Elements per second at the median iteration time, or None if not run."""
    base = CRITERION / group / function / value if value else CRITERION / group / function
    try:
        meta = json.loads((base / "new" / "benchmark.json").read_text())
        estimates = json.loads((base / "new" / "estimates.json").read_text())
    except FileNotFoundError:
        return None
    elements = meta["throughput"]["Elements"]
    return elements / (estimates["median"]["point_estimate"] / 1e9)


def load(name: str) -> dict[str, Any] | None:
    path = BENCH / name
    return json.loads(path.read_text()) if path.exists() else None


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    return f"{os.cpu_count()} cores ({cpu}), {mem / 2**20:.0f} GiB, {platform.system()} {platform.release()}"


def row(name: str, value: str, target: str, met: bool | None, note: str = "") -> dict[str, Any]:
    return {"benchmark": name, "value": value, "target": target, "met": met, "note": note}


def rows() -> list[dict[str, Any]]:
    out = []
    for n in ("1", "64", "1024", "65536"):
        whole, bare = criterion_rate("score", "batch", n), criterion_rate("onnx_runtime", "batch", n)
        if whole is None or bare is None:
            out.append(row(f"scoring core, batch {n}", "not run", ">= 0.8 x bare ONNX Runtime (batch >= 1024)", None))
            continue
        ratio = whole / bare
        target = ">= 0.8 x bare ONNX Runtime" if int(n) >= 1024 else "(reported)"
        out.append(row(f"scoring core, batch {n}", f"{whole:,.0f} rows/s = {ratio:.2f} x bare ({bare:,.0f} rows/s)",
                       target, ratio >= 0.8 if int(n) >= 1024 else None))
    latency = load("scoring_latency.json")
    out.append(row("scoring latency, batch 1", f"p99 {latency['p99_us']:.1f} µs (p50 {latency['p50_us']:.1f} µs)" if latency
                   else "not run", "p99 < 100 µs", latency["p99_us"] < 100 if latency else None))
    decode = criterion_rate("json_decode", "to_arrow")
    out.append(row("JSON decode to Arrow, one core", f"{decode:,.0f} records/s" if decode else "not run",
                   ">= 1,000,000 records/s", decode >= 1e6 if decode else None))
    fx = load("flight_exchange.json")
    in_process = criterion_rate("score", "batch", "65536")
    if fx:
        ours, peer = fx["fraudflight_rows_per_second"], fx["python_peer_rows_per_second"]
        out.append(row(f"Flight DoExchange, {fx['rows']:,} rows in {fx['batch_rows']:,}-row batches",
                       f"{ours:,.0f} rows/s = {ours / in_process:.2f} x in-process" if in_process else f"{ours:,.0f} rows/s",
                       ">= 0.6 x in-process scoring", ours / in_process >= 0.6 if in_process else None))
        out.append(row("Flight DoExchange vs Python peer (pyarrow.flight + onnxruntime)",
                       f"{ours / peer:.2f} x ({peer:,.0f} rows/s)", ">= 3 x", ours / peer >= 3))
    else:
        out.append(row("Flight DoExchange", "not run", ">= 0.6 x in-process; >= 3 x Python peer", None))
    for name, what in (("generate", "generate only"), ("csv_file", "to a CSV file"), ("parquet_file", "to a Parquet file")):
        rate = criterion_rate("simulate", name, "200000")
        target, met = (">= 500,000 transactions/s", rate >= 5e5 if rate else None) if name != "generate" else ("(reported)", None)
        out.append(row(f"simulator, {what}", f"{rate:,.0f} transactions/s" if rate else "not run", target, met))
    out += kafka_rows(load("kafka.json") or {})
    spark = load("spark.json")
    if spark:
        b = spark["batch_scoring"]
        out.append(row(f"Spark batch scoring, {spark['rows']:,} rows ({spark['master']})",
                       f"through Flight {b['flight_rows_per_second']:,.0f} rows/s = {b['ratio']:.2f} x Spark transform "
                       f"({b['spark_transform_rows_per_second']:,.0f} rows/s)", "(reported)", None))
    model = load("history_model.json")
    target = ">= 1.0 x the handbook's windowed random forest (AP, last week)"
    if model:
        ours, forest = model["ours"], model["handbook_random_forest"]
        out.append(row(
            f"Model with history, handbook data ({model['transactions']:,} transactions, {model['test_frauds']} test frauds)",
            f"AP {ours['average_precision']:.3f} (ROC {ours['roc_auc']:.3f}) = {model['ratio']:.2f} x the random forest's "
            f"{forest['average_precision']:.3f} (ROC {forest['roc_auc']:.3f}); without history "
            f"{model['ours_without_history']['average_precision']:.3f}",
            target, model["ratio"] >= 1.0))
    else:
        out.append(row("Model with history vs the handbook's random forest", "not run", target, None))
    return out


def kafka_rows(k: dict[str, Any]) -> list[dict[str, Any]]:
    """Kafka to score, latency under load, full pipeline and memory
    (benches/kafka_pipeline.py)."""
    out = []
    ks = k.get("kafka_to_score")
    if ks:
        rate = ks["records_per_second"]
        out.append(row(f"Kafka to score, {ks['records']:,} records, {ks['topic_partitions']} partitions, sinks off",
                       f"{rate:,.0f} records/s", ">= 200,000 records/s", rate >= 2e5))
        peer = ks.get("peer")
        out.append(row("Kafka to score vs Structured Streaming peer (same topic, same Spark model)",
                       f"{rate / peer['records_per_second']:.1f} x ({peer['records_per_second']:,.0f} records/s)" if peer
                       else "peer not run", ">= 10 x", rate / peer["records_per_second"] >= 10 if peer else None))
        out.append(row("Memory: peak RSS of serve in the Kafka benchmark", f"{ks['peak_rss_mb']:.0f} MB", "< 300 MB",
                       ks["peak_rss_mb"] < 300))
    else:
        out.append(row("Kafka to score", "not run", ">= 200,000 records/s; >= 10 x Structured Streaming; RSS < 300 MB", None))
    lat = k.get("latency")
    if lat:
        ours, peer = lat["fraudflight"], lat.get("peer")
        value = f"p99 {ours['p99_ms']:.1f} ms (p50 {ours['p50_ms']:.1f} ms)"
        if peer:
            value += f"; Structured Streaming peer p99 {peer['p99_ms']:,.0f} ms (p50 {peer['p50_ms']:,.0f} ms)"
        out.append(row(f"Latency, Kafka timestamp to scored, {lat['rate']:,}/s for {lat['seconds']} s", value,
                       "p99 < 50 ms", ours["p99_ms"] < 50))
    else:
        out.append(row("Latency under load", "not run", "p99 < 50 ms", None))
    pipe = k.get("pipeline")
    if pipe:
        ceilings = {name: c["median_records_per_second"] for name, c in pipe["sink_ceilings"].items()}
        both = ceilings.pop("both", None)
        slower = min(ceilings, key=ceilings.get)
        value = (f"{pipe['records_per_second']:,.0f} records/s = {pipe['ratio_to_slower_sink']:.2f} x the slower "
                 f"sink alone ({slower} {ceilings[slower]:,.0f}; "
                 + ", ".join(f"{n} {c:,.0f}" for n, c in ceilings.items() if n != slower) + " records/s)")
        if both:
            value += f" = {pipe['ratio_to_both_sinks']:.2f} x both sinks at once without Kafka or scoring ({both:,.0f})"
        out.append(row(f"Full pipeline, Cassandra + OpenSearch, {pipe['records']:,} records", value + f"; lost {pipe['lost']}",
                       ">= 0.8 x slower sink, zero loss", pipe["ratio_to_slower_sink"] >= 0.8 and pipe["lost"] == 0))
    else:
        out.append(row("Full pipeline", "not run", ">= 0.8 x slower sink, zero loss", None))
    return out


def markdown(result: dict[str, Any]) -> str:
    mark = {True: "yes", False: "**no**", None: "-"}
    lines = [f"Run {result['finished']} on {result['machine']}, commit {result['commit']}.", "",
             "| benchmark | measured (median) | target | met |", "|---|---|---|---|"]
    lines += [f"| {r['benchmark']} | {r['value']} | {r['target']} | {mark[r['met']]} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    BENCH.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    result = {
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit,
        "rows": rows(),
        "details": {name: load(f"{name}.json") for name in ("scoring_latency", "flight_exchange", "kafka", "spark")},
    }
    (BENCH / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (BENCH / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
