#!/usr/bin/env bash
# End-to-end browser tests of `quern console` (tests/console):
#
#   bash scripts/test-console.sh
#
# Debian's Chromium (installed with apt-get when /usr/bin/chromium is missing: browser downloads by test tools do
# not work on the project's machines), `npm ci` in tests/console (playwright-core, amqplib, pg), then
# `node --test` over its test files: a real quern-worker and the Rust fake embedder per test, `quern console` in
# front of them, pages driven and read in headless Chromium. Full-page screenshots land in
# target/console-screenshots/. Expects the services running and the Rust binaries built in target/debug
# (scripts/test.sh calls this after cargo test); QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL default to what
# scripts/services.sh starts. Needs Node.js 20 or later with npm. QUERN_CHROMIUM names another Chromium.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT"

export QUERN_TEST_AMQP_URL="${QUERN_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export QUERN_TEST_DATABASE_URL="${QUERN_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5433/postgres}"

quern_have node && quern_have npm || quern_die "Node.js 20 or later with npm is needed for the console's browser tests"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || quern_die "Node.js $(node --version) is too old: the console's browser tests need 20 or later"

bin_dir="${QUERN_BIN_DIR:-$QUERN_ROOT/target/debug}"
for binary in quern quern-worker quern-fake-embedder; do
    [[ -x $bin_dir/$binary ]] ||
        quern_die "$bin_dir/$binary is missing: build the workspace first (scripts/test.sh does)"
done

chromium="${QUERN_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x $chromium && -z ${QUERN_CHROMIUM:-} ]]; then
    quern_have apt-get || quern_die "$chromium is missing and there is no apt-get to install Debian's chromium"
    quern_log "$chromium is missing: installing Debian's chromium with apt-get"
    if ! quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; then
        # A machine whose package lists are stale or absent: refresh them once and try again.
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 ||
            quern_die "could not install Debian's chromium"
    fi
fi
[[ -x $chromium ]] || quern_die "$chromium is missing (set QUERN_CHROMIUM to a Chromium to use)"
export QUERN_CHROMIUM="$chromium"

quern_log "console browser tests: npm ci (node $(node --version), npm $(npm --version), $("$chromium" --version 2>/dev/null || echo chromium))"
started=$SECONDS
# --prefer-offline: the lock pins every version and hash, so a cached copy is as good as a download.
(cd tests/console && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
quern_log "console browser tests: installed in $((SECONDS - started))s; running node --test"
started=$SECONDS
screenshots="${QUERN_CONSOLE_SCREENSHOTS:-target/console-screenshots}"
# This run's pictures only: one left from an earlier run would pass for a page this run never reached.
rm -f "$screenshots"/*.png
# One file at a time, and within a file one test at a time (node's default): each test starts a worker, a fake
# embedder, a console and a browser context of its own, and the machine may have 2 cores.
status=0
node --test --test-concurrency=1 tests/console/*.test.mjs || status=$?
quern_log "console browser tests: ran in $((SECONDS - started))s; screenshots in $screenshots/"
exit "$status"
