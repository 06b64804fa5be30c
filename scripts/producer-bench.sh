#!/usr/bin/env bash
# Publishing throughput of the three producers, measured in one run, one after the other against the same broker:
#
#   bash scripts/producer-bench.sh [--single N] [--batched N] [--batch B]
#
# Each publishes 1,000-character jobs with publisher confirms to a throwaway queue prefix (deleted afterwards;
# nothing consumes it) in three modes: awaiting each enqueue in turn (single), batches of B (batched: one confirm
# round trip per batch), and 100 calls in flight on one shared producer (concurrent; the Python producers take
# their calls in turn, so they have no such mode). Starts RabbitMQ if needed, builds the Rust bench in release,
# installs the Python package into the virtual environment scripts/test-python.sh makes and the TypeScript
# package's dependencies with npm ci.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"

single=2000 batched=20000 batch=100
while (($#)); do
    case $1 in
        --single) single=$2 ;;
        --batched) batched=$2 ;;
        --batch) batch=$2 ;;
        *) quern_die "unknown option $1 (expected --single N, --batched N or --batch B)" ;;
    esac
    shift 2 || quern_die "$1 needs a value"
done

quern_prepare_tests
cargo build --release --quiet -p quern-benches --bin quern-producer-bench
python="${QUERN_PYTHON:-python3}"
venv=".quern/venv-python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input ./producers/python >&2
(cd producers/typescript && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >&2)

export QUERN_AMQP_URL="$QUERN_TEST_AMQP_URL"
quern_log "Rust producer"
target/release/quern-producer-bench --single "$single" --batched "$batched" --batch "$batch"
quern_log "Python producer"
"$venv/bin/python" producers/python/bench.py --single-jobs "$single" --batched-jobs "$batched" --batch-size "$batch"
quern_log "TypeScript producer"
(cd producers/typescript && node bench.mjs --single "$single" --batched "$batched" --batch "$batch")
