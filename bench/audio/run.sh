#!/usr/bin/env bash
# hearth vs faster-whisper on the same CTranslate2 Whisper files, 2 threads each,
# a 60 s espeak-ng clip: real-time factor and word error rate for whisper-base
# and whisper-tiny.en, at beam 5 and greedy. Writes the "Audio" section of BENCHMARKS.md.
# Needs: espeak-ng, ffmpeg, python3; builds hearth's `transcribe` example;
# installs faster-whisper into bench/audio/.venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HEARTH_HOME="${HEARTH_HOME:-$HOME/.cache/hearth}"
venv=bench/audio/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check faster-whisper==1.2.1
cargo build --release --workspace --bins --example transcribe
target/release/hearth pull whisper-base whisper-tiny.en >/dev/null
exec "$venv/bin/python" bench/audio/bench.py "$@"
