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

if [[ ${CI:-} == true ]]; then
    # CI's database is thrown away after the run, so crash safety buys
    # nothing there: no fsync (see scripts/services.sh). Developers keep fsync
    # unless they ask for QUERN_PG_FAST=1 themselves.
    export QUERN_PG_FAST="${QUERN_PG_FAST:-1}"
    # A fresh clone builds once; incremental artifacts would only cost time and disk.
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

if [[ -n ${QUERN_TEST_AMQP_URL:-} && -n ${QUERN_TEST_DATABASE_URL:-} ]]; then
    quern_log "QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL are set: using them, not starting services"
else
    bash scripts/services.sh >/dev/null
    # shellcheck source=/dev/null
    source .quern/env
    export QUERN_TEST_AMQP_URL="${QUERN_TEST_AMQP_URL:-$QUERN_AMQP_URL}"
    export QUERN_TEST_DATABASE_URL="${QUERN_TEST_DATABASE_URL:-$QUERN_DATABASE_URL}"
fi
quern_log "QUERN_TEST_AMQP_URL=$QUERN_TEST_AMQP_URL"
quern_log "QUERN_TEST_DATABASE_URL=$QUERN_TEST_DATABASE_URL"

# The Rust toolchain: on PATH, or installed by rustup but not on PATH in this
# (non-login) shell, or -- on a fresh machine without one -- installed now.
if ! quern_have cargo && [[ -f ${CARGO_HOME:-$HOME/.cargo}/env ]]; then
    # shellcheck source=/dev/null
    source "${CARGO_HOME:-$HOME/.cargo}/env"
fi
if ! quern_have cargo; then
    # A fresh machine needs a toolchain; rustup's installer picks the stable
    # one, which satisfies the workspace's rust-version. (Not exercised on the
    # project's machines, which come with cargo.)
    quern_log "cargo not found: installing the Rust toolchain with rustup"
    quern_have curl || quern_die "cargo is missing and so is curl to install it; install Rust from https://rustup.rs"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
    # shellcheck source=/dev/null
    source "${CARGO_HOME:-$HOME/.cargo}/env"
fi
quern_log "$(cargo --version)"

# `--all-targets` leaves out doctests (the producer's axum example among them): run them too.
cargo test --workspace --doc "$@"
exec cargo test --workspace --all-targets "$@"
