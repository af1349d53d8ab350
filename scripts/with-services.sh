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

# Addresses and the test logins of the services just started (the file
# scripts/services.sh writes; a variable already set wins).
state=${FRAUDFLIGHT_SERVICES_DIR:-$PWD/.services}
while IFS='=' read -r name value; do
  name=${name#export }
  [ -n "${!name:-}" ] || export "$name=$value"
done < <(grep '^export ' "$state/serve.env")
# Elasticsearch 7.17 (when among the services): the search sink's tests run
# against it as well as OpenSearch.
export FRAUDFLIGHT_TEST_ELASTICSEARCH_URL=${FRAUDFLIGHT_TEST_ELASTICSEARCH_URL:-http://127.0.0.1:9250}
export FRAUDFLIGHT_TEST_CA=${FRAUDFLIGHT_TEST_CA:-$state/tls/ca.pem}
"$@"
