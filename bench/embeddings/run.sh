#!/usr/bin/env bash
# hearth /v1/embeddings vs sentence-transformers (PyTorch CPU) in one run, same
# model files, same thread count; writes the embeddings section of BENCHMARKS.md.
#   bash bench/embeddings/run.sh [--threads 2] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HEARTH_HOME="${HEARTH_HOME:-$HOME/.cache/hearth}"

cargo build --release
target/release/hearth pull all-minilm-l6-v2

venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# CPU wheels of torch when that index is reachable, else PyPI's default build (CPU is what runs either way).
"$venv/bin/pip" install --quiet --disable-pip-version-check torch --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || "$venv/bin/pip" install --quiet --disable-pip-version-check torch
"$venv/bin/pip" install --quiet --disable-pip-version-check sentence-transformers

uptime
"$venv/bin/python" bench/embeddings/bench.py --model-dir "$HEARTH_HOME/models/all-minilm-l6-v2" "$@"
