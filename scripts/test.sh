#!/usr/bin/env bash
# The whole test suite: starts Redis, a Redis Cluster and the Kafka broker (installing them if
# missing), then runs every test of the workspace against them, then the Python client's. Extra
# arguments go to `cargo test`.
#
# The broker is Apache Kafka unless AGENCY_BROKER=tansu; Tansu has no KIP-848 consumer groups, so
# its clients use the classic protocol, and it answers fetches only at their deadline, so they
# wait 5 ms instead of 100 (it fails tests/restart.rs, see docs/distributed.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ "${AGENCY_BROKER:-kafka}" = tansu ]; then
  export AGENCY_KAFKA_GROUP_PROTOCOL=${AGENCY_KAFKA_GROUP_PROTOCOL:-classic}
  export AGENCY_KAFKA_FETCH_WAIT_MS=${AGENCY_KAFKA_FETCH_WAIT_MS:-5}
fi
# The Redis Cluster (127.0.0.1:7000-7005) is for tests/cluster.rs: the store suites on a cluster.
scripts/services.sh up --redis-cluster
# The secured stack (Kafka over SASL_SSL, Redis over TLS with ACL users) for tests/security.rs
# and the Python client's test_security.py.
scripts/services.sh secure up
# playwright-core for the status page's browser test (tests/status_page.rs), as locked.
npm ci --prefix "$root/tests/browser" --no-audit --no-fund --loglevel=error
cargo test --workspace --locked "$@"

# The Python client's tests, against the same servers and the agency binary just built, in a
# virtual environment of their own (confluent-kafka, redis-py and pytest from PyPI).
venv=${AGENCY_SERVICES_STATE:-$root/.services}/python
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    echo "test: installing python3-venv" >&2
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null; fi
    python3 -m venv "$venv"
  }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$root/clients/python[test]"
cargo build -p agency --bin agency --locked
AGENCY_BIN="$root/target/debug/agency" "$venv/bin/python" -m pytest -q "$root/clients/python/tests"
