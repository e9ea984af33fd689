#!/usr/bin/env bash
# Batch throughput: N chat completions as one /v1/batches job vs sent concurrently over
# HTTP, one server, one run; writes the batches section of BENCHMARKS.md.
#   bash bench/batches/run.sh [--requests 64] [--max-tokens 16] [--concurrency 16] [--rounds 2]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HEARTH_HOME="${HEARTH_HOME:-$HOME/.cache/hearth}"

cargo build --release
target/release/hearth pull smollm2-135m-instruct-q4_1 >/dev/null

uptime
python3 bench/batches/bench.py "$@"
