#!/usr/bin/env bash
# Quern's throughput harness, one command:
#
#   bash scripts/bench.sh [--workers N] [--documents M] [--document-bytes B] [--latency-ms L]
#                         [--concurrency C] [--batch-size S] [--prefetch P] [--vector-index segments|live]
#                         [--segment-rows R]
#                         [--embedder-max-concurrency K] [--fixed-concurrency] [--baseline celery]
#
# Starts the services, builds release binaries, then runs benches/src/bin/quern-bench.rs: N worker processes
# against real RabbitMQ and Postgres and the fake embedder at L ms, M documents of B bytes. Prints a table and
# a JSON line, and writes the JSON to target/bench/<time>.json so runs of two commits can be compared.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
quern_prepare_tests
cargo build --release --quiet -p quern-worker -p quern-benches
exec target/release/quern-bench "$@"
