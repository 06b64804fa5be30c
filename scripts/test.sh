#!/usr/bin/env bash
# Quern's test command, for developers and CI alike:
#
#   bash scripts/test.sh [extra arguments for cargo test]
#
# 1. starts (or reuses) RabbitMQ and PostgreSQL+pgvector with scripts/services.sh
#    -- unless QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL are both set
#    already, in which case the tests use those services as they are;
# 2. exports QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL, which the tests read;
# 3. runs the doctests, then `cargo test --workspace --all-targets`.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"

quern_prepare_tests
quern_log "$(cargo --version)"

# `--all-targets` leaves out doctests (the producer's axum example among them): run them too.
cargo test --workspace --doc "$@"
# The OTLP export test needs the optional `otlp` feature, and a process of its own (it installs the global
# tracing subscriber).
cargo test -p quern-worker --features otlp --test otlp "$@"
exec cargo test --workspace --all-targets "$@"
