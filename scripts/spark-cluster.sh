#!/usr/bin/env bash
# A Spark standalone cluster on loopback from the pip-installed PySpark in
# .venv: one master (spark://127.0.0.1:7077, web UI and JSON status on
# 127.0.0.1:8081) and one worker, so jobs are submitted to a real cluster.
#
#   scripts/spark-cluster.sh up|down|status
#
# Worker size: SPARK_WORKER_CORES (default: all cores), SPARK_WORKER_MEMORY
# (default 4g). State, logs and pid files under .services/spark/ (git-ignored;
# FRAUDFLIGHT_SERVICES_DIR moves it). Executors run .venv's Python. `up`
# returns when the master lists the worker as ALIVE; `down` stops only what
# this script started.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${FRAUDFLIGHT_SERVICES_DIR:-$ROOT/.services}/spark
PY=$ROOT/.venv/bin/python
MASTER=spark://127.0.0.1:7077
UI=http://127.0.0.1:8081

die() { echo "spark-cluster: $*" >&2; exit 1; }

[ -x "$PY" ] || die ".venv is missing: run scripts/setup-python.sh (make setup) first"
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$PY SPARK_LOG_DIR=$STATE
mkdir -p "$STATE/work"

alive() { [ -s "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

workers_alive() {
  curl -fsS --max-time 3 "$UI/json/" 2>/dev/null | "$PY" -c 'import json, sys; print(json.load(sys.stdin).get("aliveworkers", 0))' 2>/dev/null || echo 0
}

start() {
  local name=$1
  shift
  alive "$name" && return 0
  nohup "$SPARK_HOME/bin/spark-class" "$@" >>"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

up() {
  start master org.apache.spark.deploy.master.Master --host 127.0.0.1 --port 7077 --webui-port 8081
  start worker org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --webui-port 8082 \
    --cores "${SPARK_WORKER_CORES:-$(nproc)}" --memory "${SPARK_WORKER_MEMORY:-4g}" --work-dir "$STATE/work" "$MASTER"
  local i
  for i in $(seq 1 90); do
    if [ "$(workers_alive)" -ge 1 ]; then
      echo "spark-cluster: up at $MASTER (UI $UI), 1 worker"
      return 0
    fi
    alive master || { tail -n 30 "$STATE/master.log" >&2; die "the master exited"; }
    alive worker || { tail -n 30 "$STATE/worker.log" >&2; die "the worker exited"; }
    sleep 1
  done
  tail -n 20 "$STATE/worker.log" >&2
  die "no worker registered with $MASTER within 90 s"
}

down() {
  local name pid i
  for name in worker master; do
    alive "$name" || { rm -f "$STATE/$name.pid"; continue; }
    pid=$(cat "$STATE/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$STATE/$name.pid"
    echo "spark-cluster: $name stopped"
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) echo "master $(alive master && echo running || echo stopped), workers alive: $(workers_alive)" ;;
  *) die "usage: $0 up|down|status" ;;
esac
