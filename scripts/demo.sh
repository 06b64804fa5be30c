#!/usr/bin/env bash
# Quern's quickstart, end to end, in one command:
#
#   bash scripts/demo.sh
#
# 1. starts (or reuses) RabbitMQ and PostgreSQL+pgvector (scripts/services.sh, which smoke-checks pgvector);
# 2. builds the release binaries quern, quern-worker and quern-embedder (or quern-fake-embedder);
# 3. applies the database migrations to the quickstart's own database;
# 4. starts the embedding API, unless QUERN_EMBEDDING_URL points at one already (then set QUERN_EMBEDDING_MODEL,
#    QUERN_EMBEDDING_DIM and QUERN_EMBEDDING_API_KEY too). QUERN_DEMO_EMBEDDER picks which:
#      local (default)  quern-embedder: the all-MiniLM-L6-v2 model on the CPU, fetched once by
#                       scripts/fetch-model.sh (84 MB, verified by digest); real semantic search, no API key;
#      fake             quern-fake-embedder: lexical hashing, instant, for trying the pipeline without the model;
# 5. starts two worker replicas, each with its own metrics port;
# 6. enqueues the sample corpus in corpus/ and shows a progress bar until every job has finished;
# 7. answers a query with `quern search`: with the local model, a paraphrase that shares no content word with the
#    chapter it finds;
# 8. stops the workers (SIGTERM: they drain and exit 0) and the embedding server it started.
#
# It touches only its own queues and data, whatever else the servers hold: queue prefix `quern-demo` (exchange
# quern-demo, queues quern-demo.*) and database `quern_demo`. It writes .quern/demo.env with both, for
# `quern search` and `quern status` on the quickstart's data afterwards (README, "By hand").
#
# Settings: QUERN_DEMO_EMBEDDER (local or fake), QUERN_DEMO_QUERY (the search), QUERN_DEMO_COLLECTION (default demo), QUERN_WORKERS (default 2),
# QUERN_DEMO_PREFIX (default quern-demo), QUERN_DEMO_DATABASE (default quern_demo). Worker logs go to .quern/logs/.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"
demo_started=$SECONDS

collection="${QUERN_DEMO_COLLECTION:-demo}"
embedder="${QUERN_DEMO_EMBEDDER:-local}"
case "$embedder" in
# A paraphrase of Jonah 1 ("Jonah rose up to flee ... the LORD had prepared a great fish to swallow up Jonah"):
# no content word in common with the book, so only a model that reads meaning finds it.
local) query="${QUERN_DEMO_QUERY:-a reluctant messenger ends up inside a giant marine creature}" ;;
# The lexical fake embedder finds what shares words.
fake) query="${QUERN_DEMO_QUERY:-Mr. Darcy, a proud gentleman, refuses to dance at the ball}" ;;
*) quern_die "QUERN_DEMO_EMBEDDER must be local or fake, not '$embedder'" ;;
esac
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

if [[ -z ${QUERN_EMBEDDING_URL:-} && $embedder == local ]]; then
    model_dir="$(bash scripts/fetch-model.sh)"
fi

quern_log "building release binaries (the first build takes a few minutes)"
cargo build --release --quiet -p quern-cli -p quern-worker -p "$([[ $embedder == local ]] && echo quern-embedder || echo quern-fake-embedder)"
bin="$QUERN_ROOT/target/release"

mkdir -p .quern/logs
pids=()
cleanup() {
    # SIGTERM: workers stop consuming, finish in-flight jobs, ack them and exit 0.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# Starts an embedding server unless one already answers on its port: name, port, log, then its command.
start_embedder() {
    local name=$1 port=$2 log=$3
    shift 3
    if quern_tcp_open 127.0.0.1 "$port"; then
        quern_log "something already listens on 127.0.0.1:$port: using it as the embedding API"
        return
    fi
    "$@" >"$log" 2>&1 &
    pids+=("$!")
    quern_wait_for 60 "$name" quern_tcp_open 127.0.0.1 "$port" || quern_die "$name did not start; see $log"
}

if [[ -n ${QUERN_EMBEDDING_URL:-} ]]; then
    quern_log "using the embedding API at $QUERN_EMBEDDING_URL (model ${QUERN_EMBEDDING_MODEL:-?}, dimension ${QUERN_EMBEDDING_DIM:-384})"
elif [[ $embedder == local ]]; then
    port="${QUERN_EMBEDDER_PORT:-8090}"
    export QUERN_EMBEDDING_DIM=384 QUERN_EMBEDDING_MODEL=all-MiniLM-L6-v2 QUERN_EMBEDDING_URL="http://127.0.0.1:$port"
    quern_log "starting quern-embedder (all-MiniLM-L6-v2 on the CPU, model in $model_dir) on port $port"
    start_embedder quern-embedder "$port" .quern/logs/embedder.log \
        "$bin/quern-embedder" --port "$port" --model-dir "$model_dir"
else
    port="${QUERN_FAKE_EMBEDDER_PORT:-8089}"
    export QUERN_EMBEDDING_DIM="${QUERN_EMBEDDING_DIM:-384}"
    export QUERN_EMBEDDING_MODEL="${QUERN_EMBEDDING_MODEL:-quern-fake-lexical}"
    export QUERN_EMBEDDING_URL="http://127.0.0.1:$port"
    quern_log "starting the fake embedder (lexical hashing, not a neural model) on port $port"
    start_embedder "the fake embedder" "$port" .quern/logs/fake-embedder.log \
        "$bin/quern-fake-embedder" --port "$port" --dim "$QUERN_EMBEDDING_DIM"
fi
export QUERN_EMBEDDING_URL QUERN_EMBEDDING_DIM

"$bin/quern" migrate

{
    echo "# Written by scripts/demo.sh: the quickstart's own queues and database. source it after .quern/env."
    echo "export QUERN_DATABASE_URL='$QUERN_DATABASE_URL'"
    echo "export QUERN_QUEUE_PREFIX='$prefix'"
    echo "export QUERN_EMBEDDING_URL='$QUERN_EMBEDDING_URL'"
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
