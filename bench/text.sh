#!/usr/bin/env bash
# One command: hearth vs llama.cpp's OpenAI server on SmolLM2-135M Q4_1 and
# Qwen2.5-Coder-0.5B Q4_K_M, 2 threads each; writes BENCHMARKS.md. Then the
# engine-level microbenchmark (no HTTP).
#
# LLAMA_PYTHON: a python with llama-cpp-python built for this CPU (see bench/README.md);
# its server extras are installed into it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_PYTHON=${LLAMA_PYTHON:-/tmp/llamavenv/bin/python}
export HEARTH_HOME=${HEARTH_HOME:-/tmp/hearth-home}
if ! "$LLAMA_PYTHON" -c 'import llama_cpp.server.app, uvicorn' 2>/dev/null; then
  "$LLAMA_PYTHON" -m pip install -q uvicorn fastapi sse-starlette starlette-context pydantic-settings
fi
cargo build --release --bin hearth --example text_engine_bench -p hearth-engine -p hearth
"$LLAMA_PYTHON" bench/bench.py --llama-python "$LLAMA_PYTHON" "$@"
for m in smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m; do
  target/release/examples/text_engine_bench "$HEARTH_HOME/models/$m.gguf"
done | tee -a /dev/stderr | python3 bench/report.py BENCHMARKS.md text-engine
