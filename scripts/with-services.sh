#!/usr/bin/env bash
# Runs a command with the real services up, and afterwards stops the ones it
# started (an EXIT trap, so a failing command or Ctrl-C stops them too).
# Services that were already running are left running.
#
#   scripts/with-services.sh [--services "kafka cassandra"] COMMAND ...
set -euo pipefail
cd "$(dirname "$0")/.."

services="kafka cassandra opensearch"
if [ "${1:-}" = "--services" ]; then
  services=$2
  shift 2
fi

started=()
stop_started() {
  if [ ${#started[@]} -gt 0 ]; then
    scripts/services.sh down "${started[@]}" || true
  fi
}
trap stop_started EXIT

for s in $services; do
  if ! scripts/services.sh status "$s" | grep -q answering; then
    started+=("$s")
  fi
  scripts/services.sh up "$s"
done

export FRAUDFLIGHT_KAFKA_BROKERS=${FRAUDFLIGHT_KAFKA_BROKERS:-127.0.0.1:9092}
export FRAUDFLIGHT_CASSANDRA_NODES=${FRAUDFLIGHT_CASSANDRA_NODES:-127.0.0.1:9042}
export FRAUDFLIGHT_OPENSEARCH_URL=${FRAUDFLIGHT_OPENSEARCH_URL:-http://127.0.0.1:9200}
# The local Cassandra requires a login (scripts/services.sh makes this test
# role); clients that want TLS trust the test CA.
export FRAUDFLIGHT_CASSANDRA_USERNAME=${FRAUDFLIGHT_CASSANDRA_USERNAME:-fraudflight}
export FRAUDFLIGHT_CASSANDRA_PASSWORD=${FRAUDFLIGHT_CASSANDRA_PASSWORD:-fraudflight-cql-test}
export FRAUDFLIGHT_TEST_CA=${FRAUDFLIGHT_TEST_CA:-${FRAUDFLIGHT_SERVICES_DIR:-$PWD/.services}/tls/ca.pem}
"$@"
