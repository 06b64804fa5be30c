#!/usr/bin/env bash
# Quern's fault-injection suite (`make chaos`; CI runs it after scripts/test.sh):
#
#   bash scripts/chaos.sh [test-name filter]
#
# Real RabbitMQ, real PostgreSQL+pgvector, real worker processes; faults injected while jobs flow:
# embedder 500s and 429s, a refused document replayed with `quern dlq replay`, malformed bodies,
# kill -9 of workers, RabbitMQ and PostgreSQL restarts, SIGTERM. The scenarios restart the services
# (scripts/services.sh restart-rabbitmq / restart-postgres), so they run one at a time and never beside
# the main test suite. Each prints a `CHAOS` line with its figures; all of them are repeated at the end. Then the
# main suite's slow tests (#[ignore]d there), which want the machine to themselves too.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"

quern_prepare_tests

# The same build as scripts/test.sh (nothing to compile after it): the replay scenario runs the `quern` binary,
# which lives in another package than the suite, and this builds it too.
cargo test "${QUERN_CARGO_TEST_FLAGS[@]}" --no-run --quiet
log="$QUERN_ROOT/target/chaos.log"
status=0
cargo test --workspace "${QUERN_CARGO_FEATURES[@]}" --test chaos -- --ignored --test-threads=1 --nocapture "$@" 2>&1 |
    tee "$log" || status=$?
# The slow tests of the main suite, alone on the machine as these scenarios are (their figures, e.g. timed-out
# requests against a provider that computes one request at a time, must not depend on what runs beside them):
# issue 10's full-scale serial provider, 250 documents of 4 KB at 2.5 s per request, about 105 s.
if [[ $# -eq 0 ]]; then
    cargo test --workspace "${QUERN_CARGO_FEATURES[@]}" --test it -- --ignored --test-threads=1 2>&1 |
        tee -a "$log" || status=$?
fi
echo
echo "Fault-injection figures (also in $log):"
grep -o 'CHAOS .*' "$log" || echo "(no scenario reported figures)"
exit "$status"
