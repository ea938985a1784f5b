#!/usr/bin/env bash
# Installs the real Flamenco Worker (Python) for the end-to-end tests
# (flamenco-cli/tests/real_worker.rs): version 2.0.6 into .venv-worker-2.0.6/ with Python 3.6
# and version 2.5 into .venv-worker-2.5/ with Python 3.7, each with the dependency pins of
# its own time. Both folders are git-ignored. Idempotent: a venv whose worker already
# reports the right version is left as it is.
#
# Usage: ./scripts/install-workers.sh
#
# The worker sources come from ../shared/real-worker/<version> (unmodified upstream
# sources; see its README), or from $FLAMENCO_REAL_WORKER_SRC. They may be read-only, so
# each is copied to a temporary folder before pip builds it.
#
# Python is found as ~/.pyenv/versions/3.6*/bin/python (3.7* for 2.5), or as python3.6 /
# python3.7 on PATH, or from FLAMENCO_PYTHON36 / FLAMENCO_PYTHON37. When one is missing,
# that version is not installed: the tests then skip it visibly, and fail under CI=true.
# Under CI=true a missing Python or worker source is an error here too.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC="${FLAMENCO_REAL_WORKER_SRC:-$PWD/../shared/real-worker}"
CI_STRICT=""
if [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then CI_STRICT=1; fi

missing() {
    if [ -n "$CI_STRICT" ]; then
        echo "error: $1" >&2
        exit 1
    fi
    echo "NOTICE: $1; the real-worker tests will skip it" >&2
}

# find_python MINOR ENV_VAR: prints the interpreter's path, or nothing.
find_python() {
    local minor="$1" env_var="$2" candidate
    if [ -n "${!env_var:-}" ]; then
        echo "${!env_var}"
        return
    fi
    for candidate in "$HOME"/.pyenv/versions/3."$minor".*/bin/python; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    if command -v "python3.$minor" >/dev/null 2>&1; then
        # pyenv's shim answers even when the version is not installed: ask it to run.
        if "python3.$minor" -c 'import sys' >/dev/null 2>&1; then
            command -v "python3.$minor"
        fi
    fi
}

# install VERSION PYTHON_MINOR ENV_VAR PINS...
install() {
    local version="$1" minor="$2" env_var="$3"
    shift 3
    local venv=".venv-worker-$version" python build
    if [ -x "$venv/bin/flamenco-worker" ] &&
        [ "$("$venv/bin/python" -m pip show flamenco-worker 2>/dev/null | sed -n 's/^Version: //p')" = "$version" ]; then
        return
    fi
    if [ ! -d "$SRC/$version/flamenco_worker" ]; then
        missing "Flamenco Worker $version sources not found in $SRC/$version"
        return
    fi
    python="$(find_python "$minor" "$env_var")"
    if [ -z "$python" ]; then
        missing "Python 3.$minor not found (pyenv's ~/.pyenv/versions/3.$minor.*, python3.$minor on PATH, or $env_var) for Flamenco Worker $version"
        return
    fi
    echo "== installing Flamenco Worker $version into $venv/ ($python)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    build="$(mktemp -d)"
    cp -r "$SRC/$version" "$build/src"
    chmod -R u+w "$build/src"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$build/src"
    rm -rf "$build"
    "$venv/bin/flamenco-worker" --help >/dev/null
}

install 2.0.6 6 FLAMENCO_PYTHON36 attrs==16.3.0 requests==2.12.4
install 2.5 7 FLAMENCO_PYTHON37 attrs==19.1.0 certifi==2019.3.9 chardet==3.0.4 idna==2.8 \
    psutil==5.6.1 PyJWT==1.7.1 requests==2.21.0 urllib3==1.24.2
