#!/usr/bin/env bash
# Image denoising steps/s: hearth vs diffusers in one run, same weights (the tiny
# stand-in, or any SD 1.x diffusers directory), same size, 2 threads each.
#   bash bench/images/run.sh [DIR] [SIZE] [STEPS_LO] [STEPS_HI] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:-tests/fixtures/tiny-sd}"
size="${2:-256}" lo="${3:-2}" hi="${4:-8}" rounds="${5:-2}"

cargo build --release -p hearth-engine --example image_bench
venv=.venv-img
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check torch diffusers transformers safetensors

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
    target/release/examples/image_bench "$dir" "$size" "$lo" "$hi" 2
    "$venv/bin/python" bench/images/diffusers_bench.py "$dir" "$size" "$lo" "$hi" 2 2>/dev/null | tail -1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
