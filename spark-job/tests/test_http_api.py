"""The HTTP API behind the live dashboard, as another tool would use it:
Prometheus `/metrics` (parsed by prometheus_client, the reference parser of
the text format), the Server-Sent Events stream and the JSON endpoints, on a
running `fraudflight demo`."""

from __future__ import annotations

import json
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import Server


def scrape(server: Server) -> dict:
    with urllib.request.urlopen(f"{server.http}/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict, name: str, **labels: str) -> float:
    """The value of sample `name` (a family name, or a histogram's `_count`)."""
    family = families[name.removesuffix("_count")]
    for s in family.samples:
        if s.name in (name, f"{name}_total") and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name} {labels} in {family.samples}")


def events(server: Server, count: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
    """The first `count` events of /api/events, as (event, data)."""
    out: list[tuple[str, dict]] = []
    with urllib.request.urlopen(f"{server.http}/api/events", timeout=timeout) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        event, data = None, []
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "" and event:
                out.append((event, json.loads("\n".join(data))))
                event, data = None, []
                if len(out) == count:
                    return out
    raise AssertionError(f"stream ended after {len(out)} events")


def test_metrics_parse_as_prometheus_text_and_count_the_stream() -> None:
    server = Server(rate=2000)
    try:
        time.sleep(2.5)
        first = scrape(server)
        assert first["fraudflight_records_scored"].type == "counter"
        assert first["fraudflight_end_to_end_latency_seconds"].type == "histogram"
        assert first["fraudflight_batch_records"].type == "histogram"
        assert first["fraudflight_fraud_score"].type == "histogram"
        assert first["fraudflight_model_info"].type == "gauge"
        summary = json.loads(urllib.request.urlopen(f"{server.http}/api/summary").read())
        assert sample(first, "fraudflight_model_info", version=summary["model"]["version"]) == 1.0
        latency_count = sample(first, "fraudflight_end_to_end_latency_seconds_count")
        assert latency_count > 0
        # Buckets are cumulative and end with +Inf equal to the count.
        buckets = [s for s in first["fraudflight_end_to_end_latency_seconds"].samples if s.name.endswith("_bucket")]
        assert [b.value for b in buckets] == sorted(b.value for b in buckets)
        assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == latency_count
        # The demo has no sinks and no Kafka: those families are absent, not empty.
        assert "fraudflight_consumer_lag" not in first and "fraudflight_sink_up" not in first

        time.sleep(1.5)
        second = scrape(server)
        scored = sample(second, "fraudflight_records_scored")
        assert scored > sample(first, "fraudflight_records_scored")
        # The demo stores in memory at once: what was scored by the first
        # scrape is stored by the second (a batch may sit between its
        # scored and stored counters at the instant of a scrape).
        stored = sample(second, "fraudflight_records_stored")
        assert sample(first, "fraudflight_records_scored") <= stored <= scored
        assert sample(second, "fraudflight_fraud_score_count") == scored
    finally:
        server.stop()


def test_event_stream_says_hello_then_ticks_every_second() -> None:
    server = Server(rate=2000)
    try:
        started = time.monotonic()
        (kind, hello), *ticks = events(server, 4)
        took = time.monotonic() - started
        assert kind == "hello"
        assert set(hello) == {"history", "status", "alerts"}
        assert hello["status"]["model"]["version"]
        assert [k for k, _ in ticks] == ["tick"] * 3
        assert 1.5 < took < 6, f"three ticks took {took:.1f} s, expected about one a second"
        points = [t["point"] for _, t in ticks]
        assert all(points[i]["t"] < points[i + 1]["t"] for i in range(2))
        assert points[-1]["scored_per_s"] > 500
        assert points[-1]["latency_p99_ms"] is not None
        alerts = hello["alerts"] + [a for _, t in ticks for a in t["alerts"]]
        assert alerts, "no alert in four seconds at 2,000 tx/s"
        # Alerts carry what an analyst needs, not the cardholder's identity.
        assert all("cc_num" not in a and "first" not in a and "street" not in a for a in alerts)
        assert all(a["fraud_score"] >= hello["status"]["model"]["threshold"] - 1e-6 for a in alerts)
        # Every alert arrives once.
        ids = [a["trans_num"] for a in alerts]
        assert len(ids) == len(set(ids))
    finally:
        server.stop()


def test_alerts_endpoint_honours_its_limit_newest_first_without_card_data() -> None:
    server = Server(rate=2000)
    try:
        time.sleep(3)
        alerts = json.loads(urllib.request.urlopen(f"{server.http}/api/alerts?limit=4").read())
        assert 1 <= len(alerts) <= 4
        times = [a["unix_time"] for a in alerts]
        assert times == sorted(times, reverse=True)
        assert all(a["is_fraud_predicted"] for a in alerts)
        # No cardholder identity over the unauthenticated dashboard API.
        assert not {"cc_num", "first", "last", "street", "dob"} & set(alerts[0])
    finally:
        server.stop()
