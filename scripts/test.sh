#!/usr/bin/env bash
# Quern's test command, for developers and CI alike:
#
#   bash scripts/test.sh [extra arguments for cargo test]
#
# 1. starts (or reuses) RabbitMQ and PostgreSQL+pgvector with scripts/services.sh (which smoke-checks pgvector)
#    -- unless QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL are both set already, in which case the tests use
#    those services as they are;
# 2. exports QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL, which the tests read;
# 3. compiles the workspace ONCE (one profile, one feature set: `otlp` on) and runs every test target, then the
#    doctests, which reuse the same build;
# 4. runs the Python producer's tests (pytest, in a virtual environment it makes) and the TypeScript producer's
#    (`npm ci`, then `node --test`), both against a real quern-worker, and the Celery suite (a real Celery app's
#    tasks taken over by the worker, in a virtual environment of its own), then the web console's browser tests
#    (`quern console` driven in Debian's headless Chromium by playwright-core, installing both when missing);
# 5. runs scripts/pg-cpu-check.sh: the installed PostgreSQL + pgvector under emulated older CPUs (skipped when the
#    services were given from outside, or with QUERN_SKIP_CPU_CHECK=1).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"

quern_prepare_tests
quern_log "$(cargo --version)"

# Every cargo invocation of the suites uses these flags, so that nothing is compiled twice (scripts/chaos.sh too).
# The OTLP export test needs the optional `otlp` feature; it is a test binary of its own, so its global tracing
# subscriber stays in its own process.
started=$SECONDS
cargo test "${QUERN_CARGO_TEST_FLAGS[@]}" --no-run
quern_log "compiled the workspace's tests in $((SECONDS - started))s"
started=$SECONDS
cargo test "${QUERN_CARGO_TEST_FLAGS[@]}" "$@"
# `--all-targets` leaves out doctests (the producer's axum example among them).
cargo test --workspace --doc "${QUERN_CARGO_FEATURES[@]}" "$@"
quern_log "ran the tests in $((SECONDS - started))s"

# The Python and TypeScript producers, against the same services and the worker just built (target/debug).
bash scripts/test-python.sh
bash scripts/test-typescript.sh
bash scripts/test-celery.sh
bash scripts/test-console.sh

if [[ ${QUERN_SERVICES_GIVEN:-} == 1 || ${QUERN_SKIP_CPU_CHECK:-} == 1 ]]; then
    quern_log "skipping scripts/pg-cpu-check.sh (services given from outside, or QUERN_SKIP_CPU_CHECK=1)"
else
    bash scripts/pg-cpu-check.sh
fi
