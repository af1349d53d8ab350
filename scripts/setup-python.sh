#!/usr/bin/env bash
# The project's Python environment (.venv), from the pinned
# spark-job/requirements.txt.
#
#   scripts/setup-python.sh            everything: PySpark (training; needs Java 17),
#                                      onnxruntime, pyarrow, pytest, ruff, and the
#                                      spark-job package itself (editable)
#   scripts/setup-python.sh --runtime  onnxruntime only: its libonnxruntime.so is what
#                                      the Rust server loads (`make demo` needs no more)
#   scripts/setup-python.sh --lint     ruff only (`make check`)
#
# Idempotent: does nothing when .venv already has what was asked for.
set -euo pipefail
cd "$(dirname "$0")/.."

req=spark-job/requirements.txt
stamp=.venv/.requirements.sha256
want=$(cat "$req" spark-job/pyproject.toml | sha256sum | cut -d' ' -f1)
mode=${1:-all}

complete() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; }
# The exact pin of one package, from the requirements file.
pin() { grep -E "^$1==" "$req" || { echo "setup-python: $1 is not pinned in $req" >&2; exit 1; }; }

venv() {
  python=${PYTHON:-python3}
  if ! "$python" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    echo "setup-python: need Python 3.10 or newer as \$PYTHON or python3" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
  fi
}

case $mode in
  --runtime)
    complete && exit 0
    ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* >/dev/null 2>&1 && exit 0
    venv
    echo "setup-python: installing $(pin onnxruntime) into .venv (ONNX Runtime for the server)"
    .venv/bin/python -m pip install --quiet "$(pin onnxruntime)"
    ;;
  --lint)
    complete && exit 0
    [ -x .venv/bin/ruff ] && .venv/bin/ruff --version | grep -q "${ruff_pin:=$(pin ruff | cut -d= -f3)}" && exit 0
    venv
    .venv/bin/python -m pip install --quiet "$(pin ruff)"
    ;;
  all)
    complete && exit 0
    if ! command -v java >/dev/null; then
      echo "setup-python: PySpark needs Java 17 or newer on PATH (e.g. apt-get install openjdk-17-jre-headless)" >&2
      exit 1
    fi
    venv
    echo "setup-python: installing $req and spark-job/ into .venv (first time: PySpark builds from its source archive, a few minutes)"
    .venv/bin/python -m pip install --quiet -r "$req"
    .venv/bin/python -m pip install --quiet --no-deps -e spark-job
    echo "$want" > "$stamp"
    ;;
  *)
    echo "setup-python: usage: $0 [--runtime|--lint]" >&2
    exit 2
    ;;
esac
