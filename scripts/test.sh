#!/usr/bin/env bash
# THE test command: builds, fetches the default models, runs the Rust suites
# (unit + end-to-end against the real server) and the Python SDK suite.
# Exits non-zero if any part fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export HEARTH_HOME="${HEARTH_HOME:-$HOME/.cache/hearth}"
export HEARTH_TEST_MODELS="$HEARTH_HOME/models"

step() { printf '\n==> %s\n' "$*"; }

# The audio tests synthesise speech (espeak-ng), convert it (ffmpeg) and
# insert pauses (sox); the server decodes Opus with the system's libopus.
if ! command -v espeak-ng >/dev/null || ! command -v ffmpeg >/dev/null || ! command -v sox >/dev/null || ! ldconfig -p | grep -q libopus.so.0; then
    step "apt-get install espeak-ng ffmpeg sox libopus0"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng ffmpeg sox libopus0 >/dev/null || exit 1
fi

step "cargo build --release"
cargo build --release || exit 1

step "hearth pull (models into $HEARTH_HOME)"
target/release/hearth pull || exit 1

failed=()

step "cargo test --release --workspace"
cargo test --release --workspace --no-fail-fast || failed+=("cargo test")

step "Python SDK suite (tests/sdk)"
venv=.venv-sdk
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || exit 1
fi
if "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt; then
    HEARTH_BIN="$PWD/target/release/hearth" "$venv/bin/python" -m pytest tests/sdk -q || failed+=("pytest tests/sdk")
else
    failed+=("pip install tests/sdk/requirements.txt")
fi

if [ ${#failed[@]} -gt 0 ]; then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "all tests passed"
