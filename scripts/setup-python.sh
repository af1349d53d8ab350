#!/usr/bin/env bash
# Creates or refreshes the project's Python environment (.venv) from the
# pinned spark-job/requirements.txt: PySpark (training), onnxruntime (whose
# libonnxruntime.so the Rust server loads), pyarrow (Flight clients), pytest.
# Idempotent: does nothing when .venv already matches the requirements.
set -euo pipefail
cd "$(dirname "$0")/.."

req=spark-job/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "setup-python: need Python 3.10 or newer as \$PYTHON or python3" >&2
  exit 1
fi
if ! command -v java >/dev/null; then
  echo "setup-python: PySpark needs Java 17 or newer on PATH (e.g. apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi

echo "setup-python: installing $req into .venv (first time: PySpark builds from its source archive, a few minutes)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r "$req"
echo "$want" > "$stamp"
