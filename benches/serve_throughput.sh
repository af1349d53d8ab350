#!/usr/bin/env bash
# Whole-pipeline throughput of `fraudflight serve`: fills a fresh topic with
# COUNT simulated transactions, starts serve (release build) on it, and
# reports how long until every record was scored and acknowledged by every
# enabled sink (the `scored` counter of /api/summary). Needs the services
# (scripts/services.sh up). Extra FRAUDFLIGHT_* variables pass through, e.g.
#   FRAUDFLIGHT_OPENSEARCH_URL= benches/serve_throughput.sh        # Cassandra only
#   FRAUDFLIGHT_KAFKA_BATCH_MAX_RECORDS=1024 benches/serve_throughput.sh
# Prints one line: records, seconds, records/s.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-100000}
PARTITIONS=${PARTITIONS:-8}
BIN=target/release/fraudflight
HTTP=127.0.0.1:${HTTP_PORT:-18080}
run=bench$(date +%s%N | tail -c 10)

cargo build --release --quiet
"$BIN" simulate --brokers 127.0.0.1:9092 --topic "$run" --partitions "$PARTITIONS" --count "$COUNT" --seed 5 2>/dev/null
FRAUDFLIGHT_KAFKA_TOPIC=$run FRAUDFLIGHT_KAFKA_GROUP=$run FRAUDFLIGHT_CASSANDRA_KEYSPACE=$run \
  FRAUDFLIGHT_OPENSEARCH_INDEX_PREFIX=$run FRAUDFLIGHT_FLIGHT_ADDR=127.0.0.1:0 FRAUDFLIGHT_HTTP_ADDR=$HTTP \
  "$BIN" serve >/dev/null 2>"target/$run.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
until curl -fs "http://$HTTP/health" >/dev/null 2>&1; do sleep 0.2; done
start=$(date +%s.%N)
while true; do
  scored=$(curl -fs "http://$HTTP/api/summary" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["counters"]["scored"])')
  [ "$scored" -ge "$COUNT" ] && break
  sleep 0.2
done
end=$(date +%s.%N)
.venv/bin/python -c "c=$COUNT; s=$end-$start; print(f'{c} records, {s:.2f} s, {c/s:,.0f} records/s')"
