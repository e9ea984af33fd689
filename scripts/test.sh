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

# The playground test drives a real headless Chromium (tests/sdk/test_playground.py).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    step "apt-get install chromium chromium-driver"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null || exit 1
fi

# The store suite runs on PostgreSQL as well as SQLite: a throwaway cluster
# (Debian's postgresql package) on a free port, in a temporary directory,
# stopped and removed when this script exits. The suite fails in CI without it.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ]; then
    step "apt-get install postgresql"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || exit 1
fi
start_postgres() {
    local bin port
    bin="$(pg_bin)"
    pg_dir="$(mktemp -d /tmp/hearth-pg.XXXXXX)"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # PostgreSQL refuses to run as root: as root (CI), the cluster belongs to
    # the package's `postgres` user.
    as_pg=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$pg_dir"
        as_pg=(runuser -u postgres --)
    fi
    "${as_pg[@]}" "$bin/initdb" -D "$pg_dir/data" -U hearth --auth=trust -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 || {
        cat "$pg_dir/initdb.log"; return 1; }
    "${as_pg[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
        -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null || { cat "$pg_dir/server.log"; return 1; }
    export HEARTH_TEST_DATABASE_URL="postgres://hearth@127.0.0.1:$port/postgres"
}
stop_postgres() {
    [ -n "${pg_dir:-}" ] || return 0
    "${as_pg[@]}" "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$pg_dir"
}
trap stop_postgres EXIT
step "start a throwaway PostgreSQL"
start_postgres || exit 1
echo "HEARTH_TEST_DATABASE_URL=$HEARTH_TEST_DATABASE_URL"

failed=()

# Lints first: warnings are errors (a failure fails the run, the other parts still run).
step "cargo clippy --workspace --all-targets --release -- -D warnings"
if ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add clippy || failed+=("rustup component add clippy")
fi
cargo clippy --workspace --all-targets --release -- -D warnings || failed+=("cargo clippy")
step "cargo fmt --check"
if ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add rustfmt || failed+=("rustup component add rustfmt")
fi
cargo fmt --check || failed+=("cargo fmt --check")

step "cargo build --release"
cargo build --release || exit 1

step "hearth pull (models into $HEARTH_HOME)"
target/release/hearth pull || exit 1

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
