#!/usr/bin/env bash
# The Python producer's tests (producers/python), against the real services and the real worker:
#
#   bash scripts/test-python.sh [extra arguments for pytest]
#
# 1. creates (once) a virtual environment in .quern/venv-python<version> -- installing python3-venv with apt-get
#    on a Debian without it;
# 2. installs ./producers/python with its `test` extra (pytest, psycopg, flask, opentelemetry-api) from PyPI;
# 3. runs pytest in producers/python.
#
# It assumes RabbitMQ and PostgreSQL+pgvector are running (scripts/services.sh), at QUERN_TEST_AMQP_URL and
# QUERN_TEST_DATABASE_URL (defaults: those of scripts/services.sh), and that target/debug/quern-worker and
# target/debug/quern-fake-embedder are built (scripts/test.sh builds them first; QUERN_BIN_DIR points elsewhere).
# QUERN_PYTHON picks the interpreter (default python3; 3.9 or later), e.g. QUERN_PYTHON=python3.13.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"

export QUERN_TEST_AMQP_URL="${QUERN_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export QUERN_TEST_DATABASE_URL="${QUERN_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5433/postgres}"

bin_dir="${QUERN_BIN_DIR:-$QUERN_ROOT/target/debug}"
for binary in quern-worker quern-fake-embedder; do
    [[ -x $bin_dir/$binary ]] ||
        quern_die "$bin_dir/$binary is missing: build it first (cargo test ${QUERN_CARGO_TEST_FLAGS[*]} --no-run)"
done

python="${QUERN_PYTHON:-python3}"
quern_have "$python" || quern_die "$python not found: install Python 3.9 or later (or set QUERN_PYTHON)"
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    quern_die "$python is Python $version; the producer needs 3.9 or later"

# One environment per Python version, so QUERN_PYTHON=python3.9 and the default never share one.
venv=".quern/venv-python$version"
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p .quern
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a package of their own.
        rm -rf "$venv"
        quern_have apt-get || quern_die "$python -m venv failed, and there is no apt-get to install python3-venv"
        quern_log "$python -m venv failed: installing python3-venv with apt-get"
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv "python$version-venv" >&2 ||
            quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 ||
            quern_die "could not install python3-venv"
        "$python" -m venv "$venv" || quern_die "$python -m venv $venv failed"
    fi
    quern_log "created $venv ($("$venv/bin/python" --version))"
fi

# A plain (not editable) install, as a user's `pip install ./producers/python` would do; pip rebuilds a local
# directory every time, so the tests always run the current sources.
quern_log "installing ./producers/python[test] into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "./producers/python[test]" >&2

cd producers/python
quern_log "running the Python producer's tests (Python $version)"
"$QUERN_ROOT/$venv/bin/python" -m pytest "$@"
