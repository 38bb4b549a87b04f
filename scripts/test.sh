#!/usr/bin/env bash
# The whole test suite: starts Redis and the Kafka broker (installing them if missing), then runs
# every test of the workspace against them. Extra arguments go to `cargo test`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/services.sh up
cargo test --workspace --locked "$@"
