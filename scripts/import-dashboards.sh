#!/bin/sh
# Imports the "Fraud overview" and "Model quality" saved objects into Kibana 8 or OpenSearch
# Dashboards 2 through the saved-objects import API. Idempotent: objects have
# fixed ids and are overwritten, so running it again changes nothing else.
#
#   scripts/import-dashboards.sh URL [kibana|opensearch-dashboards]
#
# URL: the Kibana / OpenSearch Dashboards base URL (http://127.0.0.1:5601).
# The product is detected from URL/api/status unless given. Credentials:
# DASHBOARDS_USER and DASHBOARDS_PASSWORD (basic auth) when security is on.
# Waits up to DASHBOARDS_WAIT seconds (default 300) for the server to answer.
# POSIX sh and curl only, so it runs in a plain curl container (compose.yaml).
set -eu

url=${1:?usage: import-dashboards.sh URL [kibana|opensearch-dashboards]}
url=${url%/}
product=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
wait=${DASHBOARDS_WAIT:-300}

auth=""
if [ -n "${DASHBOARDS_USER:-}" ]; then
  auth="${DASHBOARDS_USER}:${DASHBOARDS_PASSWORD:-}"
fi
call() {
  if [ -n "$auth" ]; then curl --silent --show-error --user "$auth" "$@"; else curl --silent --show-error "$@"; fi
}

# Wait until the server answers its status API.
waited=0
until status=$(call --fail "$url/api/status" 2>/dev/null); do
  if [ "$waited" -ge "$wait" ]; then
    echo "import-dashboards: $url/api/status did not answer within ${wait}s" >&2
    exit 1
  fi
  sleep 5
  waited=$((waited + 5))
done

if [ -z "$product" ]; then
  # OpenSearch Dashboards reports "opensearchDashboards" in its status; Kibana does not.
  case "$status" in
    *opensearch*|*OpenSearch*) product=opensearch-dashboards ;;
    *) product=kibana ;;
  esac
fi
case "$product" in
  kibana|opensearch-dashboards) ;;
  *) echo "import-dashboards: unknown product '$product' (kibana or opensearch-dashboards)" >&2; exit 2 ;;
esac

failed=0
for file in "$here/dashboards/$product"/*.ndjson; do
  # Both products need their anti-CSRF header; each ignores the other's.
  response=$(call -X POST "$url/api/saved_objects/_import?overwrite=true" \
    -H 'kbn-xsrf: fraudflight' -H 'osd-xsrf: fraudflight' \
    --form "file=@$file") || { echo "import-dashboards: cannot reach $url" >&2; exit 1; }
  case "$response" in
    *'"success":true'*)
      echo "import-dashboards: imported $(basename "$file") into $product at $url" ;;
    *)
      echo "import-dashboards: $product refused $(basename "$file"): $response" >&2
      failed=1 ;;
  esac
done
exit "$failed"
