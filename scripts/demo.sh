#!/usr/bin/env bash
# Quern's quickstart, end to end, in one command:
#
#   bash scripts/demo.sh
#
# 1. starts (or reuses) RabbitMQ and PostgreSQL+pgvector (scripts/services.sh);
# 2. builds the release binaries quern, quern-worker and quern-fake-embedder;
# 3. applies the database migrations;
# 4. starts the fake embedder, unless QUERN_EMBEDDING_URL points at a real API
#    (then set QUERN_EMBEDDING_MODEL, QUERN_EMBEDDING_DIM and QUERN_EMBEDDING_API_KEY too);
# 5. starts two worker replicas;
# 6. enqueues the sample corpus in corpus/ and shows a progress bar until every job has finished;
# 7. answers a similarity query with `quern search`;
# 8. stops the workers (SIGTERM: they drain and exit 0) and the fake embedder.
#
# Settings: QUERN_DEMO_QUERY (the search), QUERN_DEMO_COLLECTION (default demo),
# QUERN_WORKERS (default 2). Worker logs go to .quern/logs/.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"
demo_started=$SECONDS

collection="${QUERN_DEMO_COLLECTION:-demo}"
query="${QUERN_DEMO_QUERY:-Mr. Darcy, a proud gentleman, refuses to dance at the ball}"
workers="${QUERN_WORKERS:-2}"

bash scripts/services.sh >/dev/null
# shellcheck source=/dev/null
source .quern/env
export QUERN_AMQP_URL QUERN_DATABASE_URL

if ! quern_have cargo && [[ -f ${CARGO_HOME:-$HOME/.cargo}/env ]]; then
    # shellcheck source=/dev/null
    source "${CARGO_HOME:-$HOME/.cargo}/env"
fi
quern_have cargo || quern_die "cargo not found: install Rust from https://rustup.rs (or run scripts/test.sh once, which installs it)"

quern_log "building release binaries (the first build takes a few minutes)"
cargo build --release --quiet -p quern-cli -p quern-worker -p quern-fake-embedder
bin="$QUERN_ROOT/target/release"

mkdir -p .quern/logs
pids=()
cleanup() {
    # SIGTERM: workers stop consuming, finish in-flight jobs, ack them and exit 0.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

if [[ -z ${QUERN_EMBEDDING_URL:-} ]]; then
    port="${QUERN_FAKE_EMBEDDER_PORT:-8089}"
    export QUERN_EMBEDDING_DIM="${QUERN_EMBEDDING_DIM:-384}"
    export QUERN_EMBEDDING_MODEL="${QUERN_EMBEDDING_MODEL:-quern-fake-lexical}"
    export QUERN_EMBEDDING_URL="http://127.0.0.1:$port"
    if quern_tcp_open 127.0.0.1 "$port"; then
        quern_log "something already listens on 127.0.0.1:$port: using it as the embedding API"
    else
        quern_log "no QUERN_EMBEDDING_URL set: starting the fake embedder (lexical hashing, not a neural model) on port $port"
        "$bin/quern-fake-embedder" --port "$port" --dim "$QUERN_EMBEDDING_DIM" >.quern/logs/fake-embedder.log 2>&1 &
        pids+=("$!")
        quern_wait_for 20 "the fake embedder" quern_tcp_open 127.0.0.1 "$port" || quern_die "the fake embedder did not start; see .quern/logs/fake-embedder.log"
    fi
else
    quern_log "using the embedding API at $QUERN_EMBEDDING_URL (model ${QUERN_EMBEDDING_MODEL:-?}, dimension ${QUERN_EMBEDDING_DIM:-384})"
fi
export QUERN_EMBEDDING_URL QUERN_EMBEDDING_DIM

"$bin/quern" migrate

for i in $(seq 1 "$workers"); do
    QUERN_WORKER_ID="demo-worker-$i" QUERN_METRICS_ADDR="127.0.0.1:$((9090 + i))" \
        "$bin/quern-worker" >".quern/logs/worker-$i.log" 2>&1 &
    pids+=("$!")
done
quern_log "started $workers workers (logs in .quern/logs/worker-N.log; metrics on http://127.0.0.1:909N/metrics)"

ingest_started=$SECONDS
"$bin/quern" enqueue corpus --collection "$collection" --extensions txt --wait
quern_log "ingest took $((SECONDS - ingest_started))s"

echo
echo "quern search \"$query\" --collection $collection -k 5"
"$bin/quern" search "$query" --collection "$collection" -k 5
echo
quern_log "quickstart finished in $((SECONDS - demo_started))s (including the build); stopping workers"
