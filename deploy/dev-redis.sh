#!/usr/bin/env bash
# Starts, stops or shows Hermod's development Redis topology on loopback:
#   master 127.0.0.1:6380, replicas :6381 and :6382, sentinels :26380, :26381, :26382
#   (master name `hermod`, quorum 2).
#
#   deploy/dev-redis.sh start    copy the configs to the work dir, start everything, wait until
#                                both replicas are in sync and all sentinels agree on the master
#   deploy/dev-redis.sh status   role of each node and the master each sentinel names
#   deploy/dev-redis.sh stop     stop every process started from the work dir
#
# Work dir: $HERMOD_REDIS_DIR, default ${TMPDIR:-/tmp}/hermod-dev-redis. Sentinels rewrite their
# config files, so they run from copies there; data (AOF) and logs live there too. `start` on a
# work dir that already has data reuses it (the topology resumes where it stopped).
#
# Then: hermod-proxy --sentinel 127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382 \
#                    --sentinel-master hermod --durability replica
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="${HERMOD_REDIS_DIR:-${TMPDIR:-/tmp}/hermod-dev-redis}"
MASTER_NAME=hermod
NODES=(redis-master:6380 redis-replica-1:6381 redis-replica-2:6382)
SENTINELS=(sentinel-1:26380 sentinel-2:26381 sentinel-3:26382)
WAIT_SECS=30

die() { echo "dev-redis: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install redis-server redis-tools)"; }
cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}" 2>/dev/null; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_one() { # name port extra-args...
    local name=$1 port=$2; shift 2
    local pid="$WORK/$name/$name.pid"
    mkdir -p "$WORK/$name"
    if alive "$pid"; then echo "$name already running (pid $(cat "$pid"))"; return; fi
    # A sentinel's config is its state: copy it once, never overwrite what it rewrote.
    [[ -f "$WORK/$name/$name.conf" ]] || cp "$HERE/$name.conf" "$WORK/$name/$name.conf"
    redis-server "$WORK/$name/$name.conf" "$@" --dir "$WORK/$name" \
        --daemonize yes --pidfile "$pid" --logfile "$WORK/$name/$name.log"
    echo "started $name on 127.0.0.1:$port (log $WORK/$name/$name.log)"
}

wait_until() { # description command...
    local what=$1; shift
    for _ in $(seq $((WAIT_SECS * 10))); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    die "timed out after ${WAIT_SECS}s waiting for $what (logs in $WORK)"
}

replicas_in_sync() {
    local master; master=$(sentinel_master 26380) || return 1
    local port=${master##*:}
    [[ "$(cli "$port" info replication | tr -d '\r' | grep -c '^slave[0-9]*:.*state=online')" -ge 2 ]]
}

sentinel_master() { # port -> host:port
    local out; out=$(cli "$1" sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ':') || return 1
    [[ -n "$out" && "$out" != ":" ]] || return 1
    echo "${out%:}"
}

sentinels_agree() {
    local first="" m s
    for entry in "${SENTINELS[@]}"; do
        m=$(sentinel_master "${entry##*:}") || return 1
        [[ -z "$first" ]] && first=$m
        [[ "$m" == "$first" ]] || return 1
        # Each sentinel must also know the two others (needed for a quorum).
        s=$(cli "${entry##*:}" sentinel master "$MASTER_NAME" | tr -d '\r' \
            | awk 'prev=="num-other-sentinels"{print; exit} {prev=$0}')
        [[ "$s" == "2" ]] || return 1
    done
}

start() {
    need redis-server; need redis-cli
    mkdir -p "$WORK"
    for entry in "${NODES[@]}"; do start_one "${entry%%:*}" "${entry##*:}"; done
    for entry in "${SENTINELS[@]}"; do start_one "${entry%%:*}" "${entry##*:}" --sentinel; done
    wait_until "two replicas in sync" replicas_in_sync
    wait_until "the sentinels to agree on the master" sentinels_agree
    echo "ready: master $(sentinel_master 26380) (name $MASTER_NAME)"
    echo "hermod-proxy --sentinel 127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382 --sentinel-master $MASTER_NAME --durability replica"
}

stop() {
    local any=0 entry name pid
    for entry in "${SENTINELS[@]}" "${NODES[@]}"; do
        name=${entry%%:*}; pid="$WORK/$name/$name.pid"
        if alive "$pid"; then
            kill -TERM "$(cat "$pid")"; any=1
            for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && kill -KILL "$(cat "$pid")"
            echo "stopped $name"
        fi
    done
    [[ $any == 1 ]] || echo "nothing running in $WORK"
}

status() {
    local entry name port role
    for entry in "${NODES[@]}"; do
        name=${entry%%:*}; port=${entry##*:}
        role=$(cli "$port" role | head -1) || role=""
        printf '%-16s 127.0.0.1:%-5s %s\n' "$name" "$port" "${role:-down}"
    done
    for entry in "${SENTINELS[@]}"; do
        name=${entry%%:*}; port=${entry##*:}
        printf '%-16s 127.0.0.1:%-5s master %s\n' "$name" "$port" "$(sentinel_master "$port" || echo '?  (down)')"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status   (work dir: $WORK)" >&2; exit 2 ;;
esac
