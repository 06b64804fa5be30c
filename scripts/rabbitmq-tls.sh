#!/usr/bin/env bash
# A throwaway RabbitMQ node with a TLS listener, and the certificates to talk to it, for the amqps:// tests
# (the Rust ones through quern_testkit::tls::TlsBroker, the Python and the TypeScript producers' suites):
#
#   scripts/rabbitmq-tls.sh start DIR [OWNER_PID]   make a CA and certificates in DIR/tls, start a node whose
#                                                   data, logs and config all live in DIR; print its settings
#   scripts/rabbitmq-tls.sh stop DIR                stop that node and delete DIR
#
# The machine's own RabbitMQ (scripts/services.sh) is left alone: this is a second node, with its own node name,
# ports, Erlang cookie (HOME=DIR/home) and no plugins, started from the installed rabbitmq-server's scripts as
# whoever runs this (root or not). It listens on 127.0.0.1 only, with TLS only (no plain AMQP port), and asks
# clients for a certificate (`verify_peer`) without requiring one (`fail_if_no_peer_cert = false`): a client
# that sends none is let in, one that sends a certificate the CA did not sign is refused.
#
# DIR/tls, made with openssl (P-256 keys, valid two days):
#   ca.pem                              the CA that signed the node's certificate and client.pem
#   server.pem, server.key              the node's, for DNS:localhost and IP:127.0.0.1
#   client.pem, client.key              a client certificate the node accepts
#   other-ca.pem                        a CA that signed nothing the node uses (the "wrong CA" of the tests)
#   other-client.pem, other-client.key  a client certificate signed by other-ca.pem, which the node refuses
#
# `start` prints shell assignments on stdout (and writes them to DIR/broker.env):
#   QUERN_TLS_PORT=<port>  QUERN_TLS_DIR=<DIR/tls>  QUERN_TLS_PID=<pid of the node>
# With OWNER_PID (a test process), a watchdog stops the node and deletes DIR once that process is gone, so a
# test run that dies or is killed leaves nothing running; call `stop` anyway when done. Starting takes a few
# seconds (QUERN_TLS_TIMEOUT, default 60, bounds the wait).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVER=${QUERN_RABBITMQ_SERVER:-/usr/lib/rabbitmq/bin/rabbitmq-server}
TIMEOUT=${QUERN_TLS_TIMEOUT:-60}
MARKER=.quern-rabbitmq-tls

# openssl req/x509 in one place: every certificate is X.509 v3 with the extensions rustls insists on.
make_certificates() {
    local tls=$1
    mkdir -p "$tls"
    local key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    local ca_ext=(-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign")
    (
        cd "$tls"
        for ca in ca other-ca; do
            openssl req -x509 "${key[@]}" -keyout "$ca.key" -out "$ca.pem" -days 2 -subj "/CN=quern-test-$ca" \
                "${ca_ext[@]}" 2>/dev/null
        done
        # name, CA, subject, extensions
        sign() {
            openssl req -new "${key[@]}" -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
            printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "$4" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 -out "$1.pem" \
                -extfile "$1.ext" 2>/dev/null
            rm -f "$1.csr" "$1.ext"
        }
        sign server ca /CN=localhost \
            "$(printf '%s\n' 'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1')"
        sign client ca /CN=quern-test-client extendedKeyUsage=clientAuth
        sign other-client other-ca /CN=quern-test-other-client extendedKeyUsage=clientAuth
        rm -f ./*.srl
        # The node may run as another user than the one who made the files (never here, but cheap to allow).
        chmod 644 ./*.pem ./*.key
    ) || quern_die "openssl could not make the test certificates in $tls"
}

# A TCP port nothing listens on, from a range clear of the usual services.
free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 20000))
        quern_tcp_open 127.0.0.1 "$port" || {
            echo "$port"
            return
        }
    done
    quern_die "found no free TCP port"
}

node_pid() {
    [[ -s $1/rabbitmq.pid ]] && cat "$1/rabbitmq.pid"
}

start() {
    local dir=$1 owner=${2:-}
    [[ -x $SERVER ]] || quern_die "$SERVER not found: install rabbitmq-server (scripts/services.sh does)"
    quern_have openssl || quern_die "openssl not found: it makes the test certificates"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    [[ -z $(ls -A "$dir") ]] || quern_die "$dir is not empty: give start a new directory"
    touch "$dir/$MARKER"
    make_certificates "$dir/tls"

    local port dist
    port=$(free_port)
    dist=$(free_port)
    mkdir -p "$dir/home" "$dir/log" "$dir/data" "$dir/conf.d"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$port
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
log.file.level = info
log.console = false
EOF
    echo '[].' >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"

    local node="quern-tls-$port@localhost" started=$SECONDS
    quern_log "starting a throwaway RabbitMQ node $node with TLS on 127.0.0.1:$port (in $dir)"
    # setsid: the node outlives this script, and a ctrl-c meant for a test run reaches the watchdog, not it.
    env HOME="$dir/home" \
        RABBITMQ_NODENAME="$node" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_DIST_PORT="$dist" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_CONFIG_FILES="$dir/conf.d" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/data" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        setsid "$SERVER" </dev/null >"$dir/log/stdout.log" 2>&1 &
    echo $! >"$dir/launcher.pid"

    until grep -q "Server startup complete" "$dir"/log/*.log 2>/dev/null && quern_tcp_open 127.0.0.1 "$port"; do
        if ! kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null; then
            tail -n 30 "$dir"/log/*.log >&2 || true
            stop "$dir"
            quern_die "the TLS RabbitMQ node exited while starting (log above)"
        fi
        if ((SECONDS - started >= TIMEOUT)); then
            tail -n 30 "$dir"/log/*.log >&2 || true
            stop "$dir"
            quern_die "the TLS RabbitMQ node did not start within ${TIMEOUT}s (log above)"
        fi
        sleep 0.25
    done
    quern_log "TLS RabbitMQ node up in $((SECONDS - started))s"

    if [[ -n $owner ]]; then
        # Stops the node once the owner is gone; `stop` ends this watchdog first when it is called in time.
        setsid bash -c '
            while kill -0 "$0" 2>/dev/null && [[ -d $1 ]]; do sleep 1; done
            [[ -d $1 ]] && exec bash "$2" stop "$1"
        ' "$owner" "$dir" "${BASH_SOURCE[0]}" </dev/null >/dev/null 2>&1 &
        echo $! >"$dir/watchdog.pid"
    fi

    local pid
    pid=$(node_pid "$dir" || cat "$dir/launcher.pid")
    printf 'QUERN_TLS_PORT=%s\nQUERN_TLS_DIR=%s\nQUERN_TLS_PID=%s\n' "$port" "$dir/tls" "$pid" | tee "$dir/broker.env"
}

stop() {
    local dir=$1 pid
    [[ -e $dir/$MARKER ]] || quern_die "$dir was not made by '$0 start'; not touching it"
    # The watchdog first, unless it is the one stopping.
    if [[ -s $dir/watchdog.pid ]] && [[ $(cat "$dir/watchdog.pid") != "$$" ]]; then
        kill "$(cat "$dir/watchdog.pid")" 2>/dev/null || true
    fi
    for pid in $(node_pid "$dir") $(cat "$dir/launcher.pid" 2>/dev/null); do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}

case "${1:-}" in
start)
    [[ $# -ge 2 ]] || quern_die "usage: $0 start DIR [OWNER_PID]"
    start "$2" "${3:-}"
    ;;
stop)
    [[ $# -eq 2 ]] || quern_die "usage: $0 stop DIR"
    stop "$2"
    ;;
*) quern_die "usage: $0 start DIR [OWNER_PID] | stop DIR" ;;
esac
