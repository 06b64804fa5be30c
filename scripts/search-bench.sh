#!/usr/bin/env bash
# Search quality and speed of Quern's segmented chunk table against a single HNSW index, one command:
#
#   bash scripts/search-bench.sh [--rows N] [--dim D] [--queries Q] [--segment-rows R] [--merge-factor F]
#                                [--no-baseline | --no-segments] [--ef-search 0,10,40] [--vector-storage halfvec]
#                                [--maintenance-work-mem 4GB] [--keep-databases]
#                                [--segments-database URL] [--baseline-database URL]
#
# Starts the services, builds the release binary, then runs benches/src/bin/quern-search-bench.rs: N generated
# vectors (in clusters) written through Quern's writer path into two databases, one maintained in segments during
# the load as the workers maintain it, one indexed once as a single HNSW index; then Q queries on each, with
# recall@10 against exact search and p50/p95 latency. Prints a table and a JSON line. `--keep-databases` keeps
# both databases and prints their URLs; `--segments-database` / `--baseline-database` measure such a database again
# instead of loading one (the same --rows, --dim and --clusters: the vectors are generated from a fixed seed).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
quern_prepare_tests
cargo build --release --quiet -p quern-benches --bin quern-search-bench
exec target/release/quern-search-bench "$@"
