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

quern_python_suite_prelude
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# One environment per Python version, so QUERN_PYTHON=python3.9 and the default never share one.
venv=".quern/venv-python$version"
quern_make_venv "$venv" "$python"

# A plain (not editable) install, as a user's `pip install ./producers/python` would do; pip rebuilds a local
# directory every time, so the tests always run the current sources.
quern_log "installing ./producers/python[test] into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "./producers/python[test]" >&2

cd producers/python
quern_log "running the Python producer's tests (Python $version)"
"$QUERN_ROOT/$venv/bin/python" -m pytest "$@"
