#!/usr/bin/env bash
# The Celery baseline: Quern's job (chunk, embed, write to pgvector) done by a Celery prefork worker.
#
#   bash benches/baselines/celery/run.sh --documents FILE.jsonl --amqp-url URL --database-url URL \
#       --embedding-url URL --embedding-dim 384 --workers N --concurrency C --batch-size B \
#       --chunk-size 1000 --chunk-overlap 200 --queue-name NAME
#
# Prints one JSON object on stdout; everything else goes to stderr. On first use (or when requirements.txt changes)
# it installs its pinned Python dependencies from PyPI into .quern/celery-venv at the repository's root.
# PYTHON picks the interpreter that makes the venv (default python3; 3.10 or newer). See README.md beside this file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$root/.quern/celery-venv"
requirements="$here/requirements.txt"
python="${PYTHON:-python3}"

mkdir -p "$root/.quern"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
(
    # One installer at a time if two runs start together.
    flock 9
    if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
        echo "[celery-baseline] installing $requirements into $venv" >&2
        setup_start=$SECONDS
        rm -rf "$venv"
        "$python" -m venv "$venv" >&2
        "$venv/bin/pip" install --disable-pip-version-check --quiet -r "$requirements" >&2
        echo "$want" >"$venv/.requirements.sha256"
        echo "[celery-baseline] venv ready in $((SECONDS - setup_start)) s" >&2
    fi
) 9>"$root/.quern/celery-venv.lock"

exec "$venv/bin/python" "$here/runner.py" "$@"
