#!/usr/bin/env bash
# The whole test suite: starts Redis and the Kafka broker (installing them if missing), then runs
# every test of the workspace against them. Extra arguments go to `cargo test`.
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
scripts/services.sh up
cargo test --workspace --locked "$@"
