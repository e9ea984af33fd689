#!/usr/bin/env bash
# Training tokens/s: hearth-train vs PyTorch + PEFT LoRA in one run, same GGUF, same
# data, same thread count; writes the train section of BENCHMARKS.md.
#   bash bench/train/run.sh [--threads 2] [--rounds 2] [--epochs 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HEARTH_HOME="${HEARTH_HOME:-$HOME/.cache/hearth}"

cargo build --release
cargo build --release -p hearth-train --example bench
target/release/hearth pull smollm2-135m-instruct-q4_1 gemma-3-270m-q4_k_m >/dev/null

venv=bench/train/.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# PyPI's torch (CPU is what runs); gguf for transformers' GGUF loader.
"$venv/bin/pip" install --quiet --disable-pip-version-check torch transformers peft gguf

uptime
"$venv/bin/python" bench/train/bench.py "$@"
