#!/usr/bin/env bash
# Real Apache Kafka (KRaft), Apache Cassandra 5.0 and OpenSearch 2.19 on this
# machine, without Docker, from their Maven Central artifacts and the
# machine's Java 17; and, on request, Elasticsearch 7.17 the same way.
#
#   scripts/services.sh up|down|status|logs [kafka|cassandra|opensearch|opensearch-tls|elasticsearch ...]
#
# No name means kafka, cassandra and opensearch (Elasticsearch, 127.0.0.1:9250,
# only when named: the search sink's tests run against both engines;
# opensearch-tls, OpenSearch's HTTPS front, only when named: it needs nginx,
# which only the TLS tests use). A failed `up` stops what it started. Jars are resolved once by Maven into ~/.m2 (the
# download cache; poms in scripts/services/). Each service keeps its data,
# pid file and log under .services/<name>/ (git-ignored; override with
# FRAUDFLIGHT_SERVICES_DIR). `up` returns only when the service answers a
# real request (Kafka: a metadata request; Cassandra: a CQL query;
# OpenSearch: cluster health yellow or green), or fails with the log tail
# after a bounded wait. `up` on a running service does nothing; `down` stops
# only the processes this script started, by their pid files.
#
# Local test credentials (they guard services on loopback, nothing else):
# - Kafka also listens with SASL_PLAINTEXT + SCRAM-SHA-256/512 on
#   127.0.0.1:9094 and with SASL_SSL (SCRAM or PLAIN) on 127.0.0.1:9095, for
#   the user `fraudflight`, password `fraudflight-scram-test` (the SCRAM
#   credential is created through the Admin API at each start; PLAIN's is in
#   the listener's JAAS line).
# - Cassandra requires a login (PasswordAuthenticator): user `fraudflight`,
#   password `fraudflight-cql-test` (created at each start), and takes TLS or
#   plain text on 9042 (client_encryption_options with optional: true).
# - OpenSearch itself is plain HTTP on 9200 (its security plugin is not part
#   of the Maven Central jars); nginx in front of it serves HTTPS with basic
#   auth on 127.0.0.1:9201, user `fraudflight`, password
#   `fraudflight-search-test`.
# The TLS certificates (a test CA, and a server certificate for 127.0.0.1 and
# localhost) are made once with openssl under .services/tls/; clients trust
# .services/tls/ca.pem.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/scripts/services
STATE=${FRAUDFLIGHT_SERVICES_DIR:-$ROOT/.services}
ALL=(kafka cassandra opensearch)
TLS=$STATE/tls
KEYSTORE_PASSWORD=fraudflight-keystore
CQL_USER=fraudflight
CQL_PASSWORD=fraudflight-cql-test
SEARCH_USER=fraudflight
SEARCH_PASSWORD=fraudflight-search-test
SEARCH_TLS_PORT=9201

die() { echo "services: $*" >&2; exit 1; }

port_of() {
  case $1 in
    kafka) echo 9092 ;;
    cassandra) echo 9042 ;;
    opensearch) echo 9200 ;;
    elasticsearch) echo 9250 ;;
  esac
}

# Heaps sized for a 2-core, shared test machine. Cassandra's 2g: the order-of-arrival
# tests (tests/history_orders.rs) write ~33,000 outcomes into six tables per scenario,
# and 768m ran out of heap under them.
heap_of() {
  case $1 in
    kafka) echo "${KAFKA_HEAP:-512m}" ;;
    cassandra) echo "${CASSANDRA_HEAP:-2g}" ;;
    opensearch) echo "${OPENSEARCH_HEAP:-512m}" ;;
    elasticsearch) echo "${ELASTICSEARCH_HEAP:-512m}" ;;
  esac
}

# Seconds `up` waits for a service to answer.
wait_of() {
  case $1 in
    kafka) echo 120 ;;
    cassandra) echo 300 ;;
    opensearch) echo 240 ;;
    elasticsearch) echo 240 ;;
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

# The test CA and a server certificate for 127.0.0.1 / localhost (PEM, and
# PKCS#12 for Java), made once.
tls_material() {
  [ -s "$TLS/server.p12" ] && return 0
  need openssl "needed to make the local TLS test certificates"
  mkdir -p "$TLS"
  (
    cd "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=fraudflight test CA" -keyout ca.key -out ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf '%s\n' subjectAltName=DNS:localhost,IP:127.0.0.1 basicConstraints=CA:FALSE \
      keyUsage=digitalSignature,keyEncipherment extendedKeyUsage=serverAuth >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile server.ext -out server.pem
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name server \
      -passout "pass:$KEYSTORE_PASSWORD" -out server.p12.tmp
    mv server.p12.tmp server.p12
  ) >"$STATE/tls.log" 2>&1 || { cat "$STATE/tls.log" >&2; die "making the TLS test certificates failed"; }
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
      cql_probe >/dev/null 2>&1 ;;
    opensearch | elasticsearch)
      curl -fsS --max-time 5 "http://127.0.0.1:$(port_of "$name")/_cluster/health?wait_for_status=yellow&timeout=3s" \
        2>/dev/null | grep -Eq '"status":"(green|yellow)"' ;;
  esac
}

# CqlProbe logged in as the default superuser (Cassandra creates `cassandra`
# / `cassandra` when it first starts with PasswordAuthenticator); extra
# arguments USER PASSWORD make it create that login role too.
cql_probe() {
  java -Dlogback.configurationFile="$HERE/logback-quiet.xml" -cp "$(classpath cassandra)" \
    "$HERE/CqlProbe.java" 127.0.0.1 9042 cassandra cassandra "$@"
}

start_kafka() {
  local dir=$STATE/kafka cp
  cp=$(classpath kafka)
  tls_material
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094,SASL_SSL://127.0.0.1:9095
advertised.listeners=PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094,SASL_SSL://127.0.0.1:9095
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_fraudflight="fraudflight-scram-test";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/server.p12
ssl.keystore.password=$KEYSTORE_PASSWORD
ssl.key.password=$KEYSTORE_PASSWORD
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
  tls_material
  sed -e "s#@DIR@#$dir#g" -e "s#@TLS@#$TLS#g" -e "s#@KEYSTORE_PASSWORD@#$KEYSTORE_PASSWORD#g" \
    "$HERE/cassandra.yaml.template" >"$dir/cassandra.yaml"
  nohup java -Xms"$(heap_of cassandra)" -Xmx"$(heap_of cassandra)" @"$HERE/cassandra-jvm17.options" \
    -Dcassandra.config="file://$dir/cassandra.yaml" -Dcassandra-foreground=yes \
    -Dcassandra.storagedir="$dir" -Dcassandra.logdir="$dir/logs" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.superuser_setup_delay_ms=0 \
    -Dlogback.configurationFile="$HERE/logback.xml" \
    -cp "$cp" org.apache.cassandra.service.CassandraDaemon >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

# OpenSearch and Elasticsearch: a small launcher of our own (a Node
# subclass, from SearchNode.java.template) compiled against the engine's jars.
start_search_node() {
  local name=$1 http_port=$2 transport_port=$3 dir=$STATE/$1 cp
  cp=$(classpath "$name")
  mkdir -p "$dir/config" "$dir/classes" "$dir/src"
  touch "$dir/config/$name.yml"
  if [ ! -f "$dir/classes/SearchNode.class" ] || [ "$HERE/SearchNode.java.template" -nt "$dir/classes/SearchNode.class" ]; then
    need javac "needed to compile the $name launcher"
    sed "s/ENGINE/$name/g" "$HERE/SearchNode.java.template" >"$dir/src/SearchNode.java"
    javac -d "$dir/classes" -cp "$cp" "$dir/src/SearchNode.java" || die "compiling the $name launcher failed"
  fi
  nohup java -Xms"$(heap_of "$name")" -Xmx"$(heap_of "$name")" -XX:+UseG1GC \
    -Dfraudflight.home="$dir" -Dfraudflight.http.port="$http_port" -Dfraudflight.transport.port="$transport_port" \
    -cp "$dir/classes:$cp" SearchNode >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

start_opensearch() { start_search_node opensearch 9200 9300; }
start_elasticsearch() { start_search_node elasticsearch 9250 9350; }

# nginx in front of OpenSearch: HTTPS with basic auth on $SEARCH_TLS_PORT.
start_search_proxy() {
  local dir=$STATE/opensearch/nginx i
  need nginx "needed for the HTTPS + basic-auth front of OpenSearch (scripts/setup-system.sh installs it)"
  tls_material
  stop_search_proxy
  mkdir -p "$dir/tmp"
  # nginx's {SHA} scheme: base64 of the password's SHA-1 (a test credential).
  python3 -c 'import base64, hashlib, sys
print(sys.argv[1] + ":{SHA}" + base64.b64encode(hashlib.sha1(sys.argv[2].encode()).digest()).decode())' \
    "$SEARCH_USER" "$SEARCH_PASSWORD" >"$dir/htpasswd"
  sed -e "s#@DIR@#$dir#g" -e "s#@TLS@#$TLS#g" -e "s#@PORT@#$SEARCH_TLS_PORT#g" \
    "$HERE/nginx-opensearch.conf.template" >"$dir/nginx.conf"
  nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ||
    die "nginx (OpenSearch's HTTPS front) did not start; see $dir/error.log"
  for i in $(seq 1 50); do
    port_open "$SEARCH_TLS_PORT" && return 0
    sleep 0.1
  done
  die "nginx (OpenSearch's HTTPS front) does not listen on $SEARCH_TLS_PORT; see $dir/error.log"
}

stop_search_proxy() {
  local pidfile=$STATE/opensearch/nginx/nginx.pid pid i
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -QUIT "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$pidfile"
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
    STARTED+=("$name")
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
  if [ "$name" = cassandra ]; then
    cql_probe "$CQL_USER" "$CQL_PASSWORD" >>"$dir/log" 2>&1 || die "cassandra: creating the test role failed (see $dir/log)"
  fi
}

# OpenSearch's HTTPS front (nginx), on OpenSearch (started first if needed).
up_search_proxy() {
  alive opensearch && answers opensearch || up_one opensearch
  if port_open "$SEARCH_TLS_PORT"; then
    echo "opensearch-tls: already running, answering on 127.0.0.1:$SEARCH_TLS_PORT"
    return 0
  fi
  STARTED+=(opensearch-tls)
  start_search_proxy
  echo "opensearch-tls: HTTPS + basic auth (nginx) on 127.0.0.1:$SEARCH_TLS_PORT"
}

# What this `up` started, stopped again when it fails (a half-started set
# is worse than none: the next `up` would find ports taken).
STARTED=()
stop_started_on_failure() {
  local rc=$? n
  [ "$rc" -ne 0 ] && [ ${#STARTED[@]} -gt 0 ] || return 0
  echo "services: up failed; stopping what it started: ${STARTED[*]}" >&2
  for n in "${STARTED[@]}"; do
    if [ "$n" = opensearch-tls ]; then stop_search_proxy; else down_one "$n" >&2 || true; fi
  done
  exit "$rc"
}

down_one() {
  local name=$1 pid i
  if [ "$name" = opensearch-tls ]; then
    stop_search_proxy
    echo "opensearch-tls: stopped"
    return 0
  fi
  if [ "$name" = opensearch ]; then stop_search_proxy; fi
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
  if [ "$name" = opensearch-tls ]; then
    if port_open "$SEARCH_TLS_PORT"; then state=answering; else state=stopped; fi
    printf '%-11s pid %-8s port %-5s %s\n' "$name" "$(cat "$STATE/opensearch/nginx/nginx.pid" 2>/dev/null || echo -)" "$SEARCH_TLS_PORT" "$state"
    return 0
  fi
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
  if [ "$1" = opensearch-tls ]; then
    echo "== $1: $STATE/opensearch/nginx/error.log"
    tail -n "${LINES:-40}" "$STATE/opensearch/nginx/error.log" 2>/dev/null || echo "(no log yet)"
    return 0
  fi
  echo "== $1: $STATE/$1/log"
  tail -n "${LINES:-40}" "$STATE/$1/log" 2>/dev/null || echo "(no log yet)"
}

# What `fraudflight serve` needs to reach these services: their addresses and
# the test logins above, as `export` lines a shell sources before serve (the
# README's path) and scripts/with-services.sh reads for the tests.
write_serve_env() {
  mkdir -p "$STATE"
  cat >"$STATE/serve.env" <<EOF
# Written by scripts/services.sh: how fraudflight serve reaches the local
# services (their addresses and test logins). Source it before serve:
#   . .services/serve.env
export FRAUDFLIGHT_KAFKA_BROKERS=127.0.0.1:$(port_of kafka)
export FRAUDFLIGHT_CASSANDRA_NODES=127.0.0.1:$(port_of cassandra)
export FRAUDFLIGHT_CASSANDRA_USERNAME=$CQL_USER
export FRAUDFLIGHT_CASSANDRA_PASSWORD=$CQL_PASSWORD
export FRAUDFLIGHT_OPENSEARCH_URL=http://127.0.0.1:$(port_of opensearch)
EOF
}

main() {
  local cmd=${1:-}
  [ -n "$cmd" ] || die "usage: $0 up|down|status|logs [kafka|cassandra|opensearch|opensearch-tls|elasticsearch ...]"
  shift
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
  for n in "${names[@]}"; do
    case $n in
      kafka | cassandra | opensearch | opensearch-tls | elasticsearch) ;;
      *) die "unknown service '$n' (kafka, cassandra, opensearch, opensearch-tls, elasticsearch)" ;;
    esac
  done
  case $cmd in
    up)
      need java "Java 17 or newer runs the services"
      trap stop_started_on_failure EXIT
      for n in "${names[@]}"; do
        if [ "$n" = opensearch-tls ]; then up_search_proxy; else up_one "$n"; fi
      done
      trap - EXIT
      write_serve_env
      echo "services: up; '. .services/serve.env' points fraudflight serve at them ($STATE/serve.env)" ;;
    down) for n in "${names[@]}"; do down_one "$n"; done ;;
    status) for n in "${names[@]}"; do status_one "$n"; done ;;
    logs) for n in "${names[@]}"; do logs_one "$n"; done ;;
    *) die "unknown command '$cmd' (up, down, status, logs)" ;;
  esac
}

main "$@"
