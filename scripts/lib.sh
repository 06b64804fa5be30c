# shellcheck shell=bash
# Small helpers shared by Quern's scripts. Source it; don't run it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything here logs to stderr, so a script's stdout stays free for
# machine-readable output (services.sh prints `export` lines there).

# Repository root, resolved from this file's location (works from any cwd).
QUERN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export QUERN_ROOT

quern_log() { printf '[quern] %s\n' "$*" >&2; }
quern_warn() { printf '[quern] WARNING: %s\n' "$*" >&2; }
quern_die() {
    printf '[quern] ERROR: %s\n' "$*" >&2
    exit 1
}

quern_have() { command -v "$1" >/dev/null 2>&1; }

# Run a command as root: directly when we are root, else through sudo.
quern_as_root() {
    if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        "$@"
    elif quern_have sudo; then
        sudo -- "$@"
    else
        quern_die "need root for: $* (not root and no sudo)"
    fi
}

# The path of a Python with pip, installing python3-pip with apt-get when there is none; dies naming WHAT it was
# needed for. pip only downloads wheels here (never installs them), so any Python with pip will do, including a
# Debian one that is "externally managed".
quern_python_with_pip() {
    local what=$1 attempt c
    for attempt in first after-install; do
        for c in python3 python /usr/bin/python3; do
            if quern_have "$c" && "$c" -m pip --version >/dev/null 2>&1; then
                command -v "$c"
                return
            fi
        done
        [[ $attempt == first ]] && quern_have apt-get || break
        quern_log "no Python with pip: installing python3-pip with apt-get"
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2 || true
    done
    quern_die "python3 with pip is needed to download $what from PyPI"
}

# True when something accepts a TCP connection on host:port.
# quern_python_suite_prelude: what a Python suite run after the Rust tests needs: the services' URLs (defaults:
# scripts/services.sh's), the worker and fake embedder built (target/debug or QUERN_BIN_DIR), and a Python 3.9+
# (QUERN_PYTHON, default python3), whose name it sets in $python.
quern_python_suite_prelude() {
    export QUERN_TEST_AMQP_URL="${QUERN_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
    export QUERN_TEST_DATABASE_URL="${QUERN_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5433/postgres}"
    local bin_dir="${QUERN_BIN_DIR:-$QUERN_ROOT/target/debug}" binary
    for binary in quern-worker quern-fake-embedder; do
        [[ -x $bin_dir/$binary ]] ||
            quern_die "$bin_dir/$binary is missing: build it first (cargo test ${QUERN_CARGO_TEST_FLAGS[*]} --no-run)"
    done
    python="${QUERN_PYTHON:-python3}"
    quern_have "$python" || quern_die "$python not found: install Python 3.9 or later (or set QUERN_PYTHON)"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        quern_die "$python is Python $("$python" --version 2>&1); Quern's Python suites need 3.9 or later"
}

# quern_make_venv DIR PYTHON: a virtual environment with pip in DIR (kept if it works), made with PYTHON --
# installing python3-venv with apt-get on a Debian or Ubuntu without it (they ship venv's pip bootstrap apart).
quern_make_venv() {
    local venv=$1 python=$2 version
    "$venv/bin/python" -m pip --version >/dev/null 2>&1 && return 0
    version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        quern_have apt-get || quern_die "$python -m venv failed, and there is no apt-get to install python3-venv"
        quern_log "$python -m venv failed: installing python3-venv with apt-get"
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv "python$version-venv" >&2 ||
            quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 ||
            quern_die "could not install python3-venv"
        "$python" -m venv "$venv" || quern_die "$python -m venv $venv failed"
    fi
    quern_log "created $venv ($("$venv/bin/python" --version))"
}

quern_tcp_open() {
    # shellcheck disable=SC2016  # $0 and $1 expand in the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# True when host:port speaks AMQP 0-9-1: send the protocol header and expect
# the first byte of a method frame (type 1, Connection.Start) back.
quern_amqp_answers() {
    local reply
    # shellcheck disable=SC2016  # $0 and $1 expand in the inner bash
    reply="$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        head -c 1 <&3 | od -An -tx1
    ' "$1" "$2" 2>/dev/null)" || return 1
    [[ ${reply//[[:space:]]/} == 01 ]]
}

# The body of an HTTP GET of http://host:port/path, without curl (a fresh machine may lack it).
quern_http_get() {
    # shellcheck disable=SC2016  # $0, $1 and $2 expand in the inner bash
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$0" >&3
        sed "1,/^\r\{0,1\}$/d" <&3
    ' "$1" "$2" "$3" 2>/dev/null
}

# True when host is a loopback name or address (we only ever start local servers).
quern_is_loopback() {
    case "$1" in
    localhost | 127.* | ::1 | '[::1]') return 0 ;;
    *) return 1 ;;
    esac
}

# Wait until "$@" succeeds, polling every half second, for at most $1 seconds.
# Usage: quern_wait_for SECONDS DESCRIPTION COMMAND [ARGS...]
quern_wait_for() {
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@"; do
        if ((SECONDS - start >= limit)); then
            quern_warn "gave up waiting for $what after ${limit}s"
            return 1
        fi
        sleep 0.5
    done
}

# PgBouncer, which the Postgres TLS tests (quern_testkit::tls::TlsPostgres) start, TLS-only, in front of the test
# server: installed with apt-get when missing. Debian's package may start its own service on port 6432; the tests
# use their own instances on free ports, not that one.
quern_ensure_pgbouncer() {
    if quern_have pgbouncer || [[ -x /usr/sbin/pgbouncer ]]; then
        return 0
    fi
    quern_have apt-get || quern_die "pgbouncer is not installed and there is no apt-get to install it; the Postgres TLS tests need it"
    quern_log "installing pgbouncer with apt-get (for the Postgres TLS tests)"
    quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >&2 ||
        quern_die "apt-get install pgbouncer failed; the Postgres TLS tests need it"
}

# The features and targets every `cargo test` of the suites builds with (scripts/test.sh, scripts/chaos.sh): one
# feature set and one profile, so the workspace compiles once.
QUERN_CARGO_FEATURES=(--features quern-worker/otlp)
QUERN_CARGO_TEST_FLAGS=(--workspace --all-targets "${QUERN_CARGO_FEATURES[@]}")

# What the test and fault-injection suites need before `cargo test`: in CI, a database without fsync and no
# incremental builds; the services started (unless QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL are both
# set) and their URLs exported for the tests; the local model in its cache; pgbouncer; cargo on PATH, installed with rustup
# on a fresh machine.
quern_prepare_tests() {
    cd "$QUERN_ROOT" || quern_die "cannot enter $QUERN_ROOT"
    if [[ ${CI:-} == true ]]; then
        # CI's database is thrown away after the run, so crash safety buys
        # nothing there: no fsync (see scripts/services.sh). Developers keep fsync
        # unless they ask for QUERN_PG_FAST=1 themselves.
        export QUERN_PG_FAST="${QUERN_PG_FAST:-1}"
        # A fresh clone builds once; incremental artifacts would only cost time and disk.
        export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
    fi

    if [[ -n ${QUERN_TEST_AMQP_URL:-} && -n ${QUERN_TEST_DATABASE_URL:-} ]]; then
        QUERN_SERVICES_GIVEN=1
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
    # quern-embedder's tests and the quickstart's semantic search test run the real model: fetched once into the
    # cache (84 MB, verified by digest), only verified on later runs.
    bash scripts/fetch-model.sh >/dev/null
    quern_ensure_pgbouncer

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
}
