#!/usr/bin/env bash
# The Celery suite (interop/celery): a Django-style Celery web tier's tasks taken over by the real quern-worker.
#
#   bash scripts/test-celery.sh [extra arguments for pytest]
#
# 1. creates (once) a virtual environment in .quern/venv-celery, installing python3-venv with apt-get on a
#    Debian without it;
# 2. installs interop/celery/requirements.txt (Celery, pika, psycopg, pytest) from PyPI, and ./producers/python
#    (the web tier's producer, for the cut-over);
# 3. runs pytest in interop/celery.
#
# It assumes the services are running (scripts/services.sh) at QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL
# (defaults: those of scripts/services.sh), and target/debug/quern-worker and quern-fake-embedder are built
# (scripts/test.sh builds them first; QUERN_BIN_DIR points elsewhere). QUERN_PYTHON picks the interpreter.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"

quern_python_suite_prelude
venv=".quern/venv-celery"
quern_make_venv "$venv" "$python"
quern_log "installing interop/celery/requirements.txt into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r interop/celery/requirements.txt \
    ./producers/python >&2

cd interop/celery
quern_log "running the Celery suite ($("$QUERN_ROOT/$venv/bin/python" -c 'import celery; print("Celery", celery.__version__)'))"
"$QUERN_ROOT/$venv/bin/python" -m pytest -p no:cacheprovider "$@"
