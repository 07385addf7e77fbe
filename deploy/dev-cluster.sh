#!/usr/bin/env bash
# Starts, stops or shows a local Hermod cluster on loopback: the Redis + Sentinel topology of
# dev-redis.sh, two brokers and two gateways that find the brokers through the registry.
#
#   broker  dev-b1   link 127.0.0.1:7071   admin http://127.0.0.1:9171
#   broker  dev-b2   link 127.0.0.1:7072   admin http://127.0.0.1:9172
#   gateway gw1      ws://127.0.0.1:8081/ws   admin http://127.0.0.1:9081
#   gateway gw2      ws://127.0.0.1:8082/ws   admin http://127.0.0.1:9082
#
#   deploy/dev-cluster.sh start    start Redis (dev-redis.sh), the brokers, then the gateways; wait
#                                  until every process is ready; print the URLs and a token
#   deploy/dev-cluster.sh status   each process: pid and /readyz; then dev-redis.sh status
#   deploy/dev-cluster.sh stop     SIGTERM the gateways (clients get 1012), then the brokers
#                                  (they drain), then dev-redis.sh stop
#
# Binaries: $HERMOD_BIN_DIR, else target/release when it holds both, else target/debug (built
# with `cargo build -p hermod-proxy -p hermod-broker` if missing). Work dir (pids, logs):
# $HERMOD_CLUSTER_DIR, default ${TMPDIR:-/tmp}/hermod-dev-cluster. Clients authenticate with JWTs
# signed with $HERMOD_JWT_SECRET (default: a fixed development secret; never use it elsewhere).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
WORK="${HERMOD_CLUSTER_DIR:-${TMPDIR:-/tmp}/hermod-dev-cluster}"
SECRET="${HERMOD_JWT_SECRET:-dev-cluster-secret-not-for-production}"
# Brokers and gateways authenticate their links with it (inherited from the environment, so it
# is not on the command line).
export HERMOD_LINK_SECRET="${HERMOD_LINK_SECRET:-dev-cluster-link-secret-not-for-production}"
SENTINELS=127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382
MASTER=hermod
BROKERS=(dev-b1:7071:9171 dev-b2:7072:9172)   # node:link-port:admin-port
GATEWAYS=(gw1:8081:9081 gw2:8082:9082)         # name:client-port:admin-port
WAIT_SECS=30

die() { echo "dev-cluster: $*" >&2; exit 1; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
ready() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" == 200 ]]; }

bin_dir() {
    if [[ -n "${HERMOD_BIN_DIR:-}" ]]; then echo "$HERMOD_BIN_DIR"; return; fi
    local d
    for d in "$ROOT/target/release" "$ROOT/target/debug"; do
        if [[ -x "$d/hermod-proxy" && -x "$d/hermod-broker" ]]; then echo "$d"; return; fi
    done
    (cd "$ROOT" && cargo build -p hermod-proxy -p hermod-broker >&2) || die "cargo build failed"
    echo "$ROOT/target/debug"
}

wait_ready() { # name admin-port pidfile
    for _ in $(seq $((WAIT_SECS * 10))); do
        ready "$2" && return 0
        alive "$3" || die "$1 exited; log: $WORK/$1.log"
        sleep 0.1
    done
    die "$1 not ready after ${WAIT_SECS}s; log: $WORK/$1.log"
}

spawn() { # name admin-port command...
    local name=$1 admin=$2; shift 2
    local pid="$WORK/$name.pid"
    if alive "$pid"; then echo "$name already running (pid $(cat "$pid"))"; return; fi
    NO_COLOR=1 nohup "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    echo $! >"$pid"
    wait_ready "$name" "$admin" "$pid"
    echo "started $name (pid $(cat "$pid"), log $WORK/$name.log)"
}

start() {
    command -v curl >/dev/null || die "curl not found"
    "$HERE/dev-redis.sh" start
    mkdir -p "$WORK"
    local bin node link admin name port entry
    bin=$(bin_dir)
    local redis=(--sentinel "$SENTINELS" --sentinel-master "$MASTER" --durability replica)
    for entry in "${BROKERS[@]}"; do
        IFS=: read -r node link admin <<<"$entry"
        spawn "$node" "$admin" "$bin/hermod-broker" --listen "127.0.0.1:$link" \
            --admin-listen "127.0.0.1:$admin" --node-id "$node" "${redis[@]}"
    done
    for entry in "${GATEWAYS[@]}"; do
        IFS=: read -r name port admin <<<"$entry"
        spawn "$name" "$admin" "$bin/hermod-proxy" --listen "127.0.0.1:$port" \
            --admin-listen "127.0.0.1:$admin" --registry "${redis[@]}" --jwt-secret "$SECRET"
    done
    echo
    echo "cluster ready:"
    for entry in "${GATEWAYS[@]}"; do
        IFS=: read -r name port admin <<<"$entry"
        echo "  gateway $name  ws://127.0.0.1:$port/ws?token=TOKEN   admin http://127.0.0.1:$admin/metrics"
    done
    for entry in "${BROKERS[@]}"; do
        IFS=: read -r node link admin <<<"$entry"
        echo "  broker  $node  link 127.0.0.1:$link (redis-cli -p $link INFO)   admin http://127.0.0.1:$admin/metrics"
    done
    echo "  token:  $bin/hermod-proxy token --user alice --jwt-secret $SECRET"
    echo "          $("$bin/hermod-proxy" token --user alice --jwt-secret "$SECRET" 2>/dev/null | tail -1)"
}

stop_one() { # name
    local pid="$WORK/$1.pid"
    alive "$pid" || return 0
    kill -TERM "$(cat "$pid")"
    for _ in $(seq 150); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$(cat "$pid")"
    rm -f "$pid"
    echo "stopped $1"
}

stop() {
    local entry
    for entry in "${GATEWAYS[@]}" "${BROKERS[@]}"; do stop_one "${entry%%:*}"; done
    "$HERE/dev-redis.sh" stop
}

status() {
    local entry name admin state
    for entry in "${BROKERS[@]}" "${GATEWAYS[@]}"; do
        IFS=: read -r name _ admin <<<"$entry"
        if alive "$WORK/$name.pid"; then
            ready "$admin" && state=ready || state="not ready"
            printf '%-8s pid %-8s %s\n' "$name" "$(cat "$WORK/$name.pid")" "$state"
        else
            printf '%-8s down\n' "$name"
        fi
    done
    "$HERE/dev-redis.sh" status
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status   (work dir: $WORK)" >&2; exit 2 ;;
esac
