#!/usr/bin/env bash
# Quern's quickstart, end to end, in one command:
#
#   bash scripts/demo.sh
#
# 1. starts (or reuses) RabbitMQ and PostgreSQL+pgvector (scripts/services.sh, which smoke-checks pgvector);
# 2. builds the release binaries quern, quern-worker and quern-fake-embedder;
# 3. applies the database migrations to the quickstart's own database;
# 4. starts the fake embedder, unless QUERN_EMBEDDING_URL points at a real API
#    (then set QUERN_EMBEDDING_MODEL, QUERN_EMBEDDING_DIM and QUERN_EMBEDDING_API_KEY too);
# 5. starts two worker replicas, each with its own metrics port;
# 6. enqueues the sample corpus in corpus/ and shows a progress bar until every job has finished;
# 7. answers a similarity query with `quern search`;
# 8. stops the workers (SIGTERM: they drain and exit 0) and the fake embedder.
#
# It touches only its own queues and data, whatever else the servers hold: queue prefix `quern-demo` (exchange
# quern-demo, queues quern-demo.*) and database `quern_demo`. It writes .quern/demo.env with both, for
# `quern search` and `quern status` on the quickstart's data afterwards (README, "By hand").
#
# Settings: QUERN_DEMO_QUERY (the search), QUERN_DEMO_COLLECTION (default demo), QUERN_WORKERS (default 2),
# QUERN_DEMO_PREFIX (default quern-demo), QUERN_DEMO_DATABASE (default quern_demo). Worker logs go to .quern/logs/.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"
demo_started=$SECONDS

collection="${QUERN_DEMO_COLLECTION:-demo}"
query="${QUERN_DEMO_QUERY:-Mr. Darcy, a proud gentleman, refuses to dance at the ball}"
workers="${QUERN_WORKERS:-2}"
prefix="${QUERN_DEMO_PREFIX:-quern-demo}"
database="${QUERN_DEMO_DATABASE:-quern_demo}"

bash scripts/services.sh >/dev/null
# shellcheck source=/dev/null
source .quern/env
QUERN_DATABASE_URL="$(bash scripts/services.sh database "$database")"
export QUERN_AMQP_URL QUERN_DATABASE_URL
export QUERN_QUEUE_PREFIX="$prefix"
quern_log "the quickstart uses only queue prefix \`$prefix\` and database \`$database\`: nothing else on these servers is read or written"

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

{
    echo "# Written by scripts/demo.sh: the quickstart's own queues and database. source it after .quern/env."
    echo "export QUERN_DATABASE_URL='$QUERN_DATABASE_URL'"
    echo "export QUERN_QUEUE_PREFIX='$prefix'"
    echo "export QUERN_EMBEDDING_MODEL='${QUERN_EMBEDDING_MODEL:-}'"
    echo "export QUERN_EMBEDDING_DIM='$QUERN_EMBEDDING_DIM'"
} >.quern/demo.env

# A small prefetch, so that the replicas share the 90 documents: with the default (256) the first worker to
# connect would be handed every job of a corpus this small.
metrics_ports=()
for i in $(seq 1 "$workers"); do
    metrics_ports+=("$((9090 + i))")
    QUERN_WORKER_ID="demo-worker-$i" QUERN_METRICS_ADDR="127.0.0.1:$((9090 + i))" QUERN_PREFETCH="${QUERN_PREFETCH:-8}" \
        "$bin/quern-worker" >".quern/logs/worker-$i.log" 2>&1 &
    pids+=("$!")
done
quern_log "started $workers workers (logs in .quern/logs/worker-N.log; metrics on http://127.0.0.1:909N/metrics)"

ingest_started=$SECONDS
"$bin/quern" enqueue corpus --collection "$collection" --extensions txt --wait
quern_log "ingest took $((SECONDS - ingest_started))s"
for i in $(seq 1 "$workers"); do
    done_jobs="$(quern_http_get 127.0.0.1 "${metrics_ports[$((i - 1))]}" /metrics |
        awk '$1 == "quern_jobs_succeeded_total" { print $2 }')"
    quern_log "worker $i finished ${done_jobs:-?} jobs"
done

echo
echo "quern search \"$query\" --collection $collection -k 5"
"$bin/quern" search "$query" --collection "$collection" -k 5
echo
quern_log "quickstart finished in $((SECONDS - demo_started))s (including the build); stopping workers"
quern_log "its data stays in database \`$database\`: see README, \"By hand\", to search it again"
