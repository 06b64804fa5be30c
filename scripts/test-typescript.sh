#!/usr/bin/env bash
# Tests of the TypeScript producer (producers/typescript, package @quern/producer):
#
#   bash scripts/test-typescript.sh
#
# `npm ci` in producers/typescript, then `node --test` over its test files: the contract's shared examples,
# the committed build, `npm install` of the folder, the producer against the real RabbitMQ, jobs processed by a
# real quern-worker into Postgres, and the Express example. Expects the services running and the Rust binaries
# built in target/debug (scripts/test.sh calls this after cargo test); QUERN_TEST_AMQP_URL and
# QUERN_TEST_DATABASE_URL default to what scripts/services.sh starts. Needs Node.js 20 or later with npm.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QUERN_ROOT/producers/typescript"

export QUERN_TEST_AMQP_URL="${QUERN_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export QUERN_TEST_DATABASE_URL="${QUERN_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5433/postgres}"

quern_have node && quern_have npm || quern_die "Node.js 20 or later with npm is needed for the TypeScript producer's tests"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || quern_die "Node.js $(node --version) is too old: the TypeScript producer needs 20 or later"
for binary in quern-worker quern-fake-embedder; do
    [[ -x ${QUERN_BIN_DIR:-$QUERN_ROOT/target/debug}/$binary ]] ||
        quern_die "${QUERN_BIN_DIR:-target/debug}/$binary is missing: build the workspace first (scripts/test.sh does)"
done

quern_log "TypeScript producer: npm ci (node $(node --version), npm $(npm --version))"
started=$SECONDS
# --prefer-offline: the lock pins every version and hash, so a cached copy is as good as a download.
npm ci --prefer-offline --no-audit --no-fund --loglevel=error
quern_log "TypeScript producer: installed in $((SECONDS - started))s; running node --test"
started=$SECONDS
# One file at a time: each starts processes and queues of its own, and the machine may have 2 cores.
node --test --test-concurrency=1 test/*.test.mjs
quern_log "TypeScript producer: tests ran in $((SECONDS - started))s"
