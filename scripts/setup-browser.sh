#!/usr/bin/env bash
# Installs what the live dashboard's browser test needs: Debian's Chromium
# (headless, driven by playwright-core; no browser download from anywhere
# else) and the pinned npm packages of web/ (package-lock.json).
# Idempotent: does nothing when both are present.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup-browser: $chromium not found; install Debian's chromium package (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
  fi
  echo "setup-browser: installing Debian's chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if ! command -v npm >/dev/null; then
  echo "setup-browser: npm (Node.js 18 or newer) is needed for the browser test" >&2
  exit 1
fi
stamp=web/node_modules/.package-lock.sha256
want=$(sha256sum web/package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup-browser: npm ci in web/"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
