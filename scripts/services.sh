#!/usr/bin/env bash
# Real Apache Kafka (KRaft), Apache Cassandra 5.0 and OpenSearch 2.19 on this
# machine, without Docker, from their Maven Central artifacts and the
# machine's Java 17.
#
#   scripts/services.sh up|down|status|logs [kafka|cassandra|opensearch ...]
#
# No name means all three. Jars are resolved once by Maven into ~/.m2 (the
# download cache; poms in scripts/services/). Each service keeps its data,
# pid file and log under .services/<name>/ (git-ignored; override with
# FRAUDFLIGHT_SERVICES_DIR). `up` returns only when the service answers a
# real request (Kafka: a metadata request; Cassandra: a CQL query;
# OpenSearch: cluster health yellow or green), or fails with the log tail
# after a bounded wait. `up` on a running service does nothing; `down` stops
# only the processes this script started, by their pid files.
#
# Kafka also listens with SASL_PLAINTEXT + SCRAM-SHA-256/512 on 127.0.0.1:9094
# for the user `fraudflight`, password `fraudflight-scram-test` (a local test
# credential, created through the Admin API each time Kafka starts).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/scripts/services
STATE=${FRAUDFLIGHT_SERVICES_DIR:-$ROOT/.services}
ALL=(kafka cassandra opensearch)

die() { echo "services: $*" >&2; exit 1; }

port_of() {
  case $1 in
    kafka) echo 9092 ;;
    cassandra) echo 9042 ;;
    opensearch) echo 9200 ;;
  esac
}

# Heaps sized for a 2-core, shared test machine.
heap_of() {
  case $1 in
    kafka) echo "${KAFKA_HEAP:-512m}" ;;
    cassandra) echo "${CASSANDRA_HEAP:-768m}" ;;
    opensearch) echo "${OPENSEARCH_HEAP:-512m}" ;;
  esac
}

# Seconds `up` waits for a service to answer.
wait_of() {
  case $1 in
    kafka) echo 120 ;;
    cassandra) echo 300 ;;
    opensearch) echo 240 ;;
  esac
}

need() { command -v "$1" >/dev/null || die "$1 is not installed ($2)"; }

# The service's classpath, resolved by Maven once (and again when its pom changes).
classpath() {
  local name=$1 dir=$STATE/$1
  mkdir -p "$dir"
  if [ ! -s "$dir/classpath" ] || [ "$HERE/$name.pom.xml" -nt "$dir/classpath" ]; then
    need mvn "needed to fetch the $name jars from Maven Central"
    echo "services: resolving $name jars from Maven Central (first time only)" >&2
    mvn -q -B -f "$HERE/$name.pom.xml" dependency:build-classpath -Dmdep.outputFile="$dir/classpath" >"$dir/maven.log" 2>&1 ||
      { tail -n 30 "$dir/maven.log" >&2; die "could not resolve the $name jars (Maven log above)"; }
  fi
  cat "$dir/classpath"
}

pid_of() { cat "$STATE/$1/pid" 2>/dev/null || true; }

alive() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Does the service answer a real request?
answers() {
  local name=$1
  port_open "$(port_of "$name")" || return 1
  case $name in
    kafka)
      java -cp "$(classpath kafka)" "$HERE/KafkaProbe.java" 127.0.0.1:9092 >/dev/null 2>&1 ;;
    cassandra)
      java -Dlogback.configurationFile="$HERE/logback-quiet.xml" -cp "$(classpath cassandra)" \
        "$HERE/CqlProbe.java" 127.0.0.1 9042 >/dev/null 2>&1 ;;
    opensearch)
      curl -fsS --max-time 5 "http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=3s" 2>/dev/null |
        grep -Eq '"status":"(green|yellow)"' ;;
  esac
}

start_kafka() {
  local dir=$STATE/kafka cp
  cp=$(classpath kafka)
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094
advertised.listeners=PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
message.max.bytes=8388608
EOF
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    # Base64 of a random UUID, as `kafka-storage random-uuid` makes it; one
    # in 64 starts with '-', which the tool would read as an option, so pass
    # it as --cluster-id=ID and draw again in that case anyway.
    cluster_id=$(python3 -c 'import base64, uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(i)')
    java -cp "$cp" -Dlog4j2.configurationFile="$HERE/log4j2.properties" kafka.tools.StorageTool format \
      --cluster-id="$cluster_id" -c "$dir/server.properties" >>"$dir/log" 2>&1 || die "formatting Kafka storage failed (see $dir/log)"
  fi
  nohup java -Xms"$(heap_of kafka)" -Xmx"$(heap_of kafka)" -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

start_cassandra() {
  local dir=$STATE/cassandra cp
  cp=$(classpath cassandra)
  mkdir -p "$dir/data" "$dir/logs"
  sed "s#@DIR@#$dir#g" "$HERE/cassandra.yaml.template" >"$dir/cassandra.yaml"
  nohup java -Xms"$(heap_of cassandra)" -Xmx"$(heap_of cassandra)" @"$HERE/cassandra-jvm17.options" \
    -Dcassandra.config="file://$dir/cassandra.yaml" -Dcassandra-foreground=yes \
    -Dcassandra.storagedir="$dir" -Dcassandra.logdir="$dir/logs" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dlogback.configurationFile="$HERE/logback.xml" \
    -cp "$cp" org.apache.cassandra.service.CassandraDaemon >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

start_opensearch() {
  local dir=$STATE/opensearch cp
  cp=$(classpath opensearch)
  mkdir -p "$dir/config" "$dir/classes"
  touch "$dir/config/opensearch.yml"
  if [ ! -f "$dir/classes/OpenSearchNode.class" ] || [ "$HERE/OpenSearchNode.java" -nt "$dir/classes/OpenSearchNode.class" ]; then
    need javac "needed to compile the OpenSearch launcher"
    javac -d "$dir/classes" -cp "$cp" "$HERE/OpenSearchNode.java" || die "compiling OpenSearchNode.java failed"
  fi
  nohup java -Xms"$(heap_of opensearch)" -Xmx"$(heap_of opensearch)" -XX:+UseG1GC \
    -Dfraudflight.home="$dir" -Dfraudflight.http.port=9200 -Dfraudflight.transport.port=9300 \
    -cp "$dir/classes:$cp" OpenSearchNode >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

up_one() {
  local name=$1 dir=$STATE/$1 started deadline
  mkdir -p "$dir"
  if alive "$name" && answers "$name"; then
    echo "$name: already running (pid $(pid_of "$name")), answering on 127.0.0.1:$(port_of "$name")"
    return 0
  fi
  if ! alive "$name"; then
    if port_open "$(port_of "$name")"; then
      die "$name: port $(port_of "$name") is taken by a process this script did not start; stop it first"
    fi
    rm -f "$dir/pid"
    echo "--- $(date -u +%FT%TZ) starting $name" >>"$dir/log"
    "start_$name"
  fi
  started=$(date +%s)
  deadline=$((started + $(wait_of "$name")))
  while ! answers "$name"; do
    if ! alive "$name"; then
      tail -n 40 "$dir/log" >&2
      rm -f "$dir/pid"
      die "$name exited during start-up (log tail above; full log $dir/log)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 40 "$dir/log" >&2
      die "$name did not answer within $(wait_of "$name")s (log tail above; still running as pid $(pid_of "$name"); full log $dir/log)"
    fi
    sleep 2
  done
  echo "$name: up (pid $(pid_of "$name")) on 127.0.0.1:$(port_of "$name"), answered after $(($(date +%s) - started))s"
  if [ "$name" = kafka ]; then
    java -cp "$(classpath kafka)" "$HERE/KafkaScram.java" 127.0.0.1:9092 fraudflight fraudflight-scram-test \
      >>"$dir/log" 2>&1 || die "kafka: creating the SCRAM test user failed (see $dir/log)"
  fi
}

down_one() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  if [ -z "$pid" ]; then
    echo "$name: not started by this script"
    return 0
  fi
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$name: still running after 30s, killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$STATE/$name/pid"
  echo "$name: stopped"
}

status_one() {
  local name=$1 pid state
  pid=$(pid_of "$name")
  if alive "$name"; then
    if answers "$name"; then state=answering; else state="running, not answering"; fi
  else
    pid=-
    state=stopped
  fi
  printf '%-11s pid %-8s port %-5s %s\n' "$name" "${pid:--}" "$(port_of "$name")" "$state"
}

logs_one() {
  echo "== $1: $STATE/$1/log"
  tail -n "${LINES:-40}" "$STATE/$1/log" 2>/dev/null || echo "(no log yet)"
}

main() {
  local cmd=${1:-}
  [ -n "$cmd" ] || die "usage: $0 up|down|status|logs [kafka|cassandra|opensearch ...]"
  shift
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
  for n in "${names[@]}"; do
    case $n in kafka | cassandra | opensearch) ;; *) die "unknown service '$n' (kafka, cassandra, opensearch)" ;; esac
  done
  case $cmd in
    up)
      need java "Java 17 or newer runs the services"
      for n in "${names[@]}"; do up_one "$n"; done ;;
    down) for n in "${names[@]}"; do down_one "$n"; done ;;
    status) for n in "${names[@]}"; do status_one "$n"; done ;;
    logs) for n in "${names[@]}"; do logs_one "$n"; done ;;
    *) die "unknown command '$cmd' (up, down, status, logs)" ;;
  esac
}

main "$@"
