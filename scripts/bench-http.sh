#!/usr/bin/env bash
# What serving /metrics costs the 1M benchmark (docs/benchmarks.md): `agency run` of
# examples/matrix-1000x1000.json (1,000,000 no-op instances), alternating without --http and
# with --http while a scraper reads /metrics every 100 ms (150 times Prometheus' default rate).
# The machine's noise is larger than the difference: take many runs (15 or more).
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

# Seconds of one run with --http while one client reads /metrics every 100 ms over a kept
# connection. The client starts first (a Python interpreter starting would otherwise compete
# with the run for this machine's two cores) and waits for the port; how many scrapes answered
# goes to stderr.
served() {
  local start end pid scraper
  python3 - "$port" <<'SCRAPER' >&2 &
import http.client, sys, time
port = int(sys.argv[1])
answered, connection, seen = 0, None, False
while True:
    try:
        connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        response.read()
        answered += response.status == 200
        seen = True
        time.sleep(0.1)
    except OSError:
        connection = None
        if seen:
            break  # the run ended
        time.sleep(0.005)
print(f"  {answered} scrapes answered during the run")
SCRAPER
  scraper=$!
  sleep 0.5
  start=$(date +%s.%N)
  "$agency" run --quiet --http "127.0.0.1:$port" "$session" >/dev/null
  end=$(date +%s.%N)
  wait "$scraper"
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
