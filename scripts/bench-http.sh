#!/usr/bin/env bash
# What serving /metrics costs the 1M benchmark (docs/benchmarks.md): `agency run` of
# examples/matrix-1000x1000.json (1,000,000 no-op instances), alternating without --http and
# with --http while a scraper reads /metrics every 100 ms (150 times Prometheus' default rate).
# With BASELINE=path/to/agency, that binary (a build from before the metrics) runs a third
# case. Prints one line per run and the medians.
#
#   scripts/bench-http.sh [RUNS]        (default 5; needs target/release/agency)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-5}
agency=target/release/agency
session=examples/matrix-1000x1000.json
[ -x "$agency" ] || { echo "bench-http: $agency is missing: cargo build --release -p agency" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# Seconds of one run of "$@" (the session's result goes to /dev/null).
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" --quiet "$session" >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

# Seconds of one run with --http while /metrics is read every 100 ms; how many scrapes
# answered goes to stderr.
served() {
  local start end pid answered=0
  start=$(date +%s.%N)
  "$agency" run --quiet --http "127.0.0.1:$port" "$session" >/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if curl -sf "http://127.0.0.1:$port/metrics" -o /dev/null; then answered=$((answered + 1)); fi
    sleep 0.1
  done
  wait "$pid"
  end=$(date +%s.%N)
  echo "  $answered scrapes answered during the run" >&2
  echo "$end - $start" | bc
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

plain=() with=() base=()
for i in $(seq 1 "$runs"); do
  p=$(timed "$agency" run)
  w=$(served)
  line="run $i: without --http ${p} s, with --http and scraping ${w} s"
  plain+=("$p") with+=("$w")
  if [ -n "${BASELINE:-}" ]; then
    b=$(timed "$BASELINE" run)
    base+=("$b")
    line="$line, baseline ${b} s"
  fi
  echo "$line"
done
mp=$(printf '%s\n' "${plain[@]}" | median)
mw=$(printf '%s\n' "${with[@]}" | median)
echo "median: without --http ${mp} s, with --http and scraping ${mw} s ($(echo "scale=1; 100 * ($mw - $mp) / $mp" | bc)%)"
if [ -n "${BASELINE:-}" ]; then
  mb=$(printf '%s\n' "${base[@]}" | median)
  echo "median: baseline ${mb} s; counting costs $(echo "scale=1; 100 * ($mp - $mb) / $mb" | bc)%, serving and counting $(echo "scale=1; 100 * ($mw - $mb) / $mb" | bc)%"
fi
