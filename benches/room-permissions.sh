#!/usr/bin/env bash
# The cost of the room permission check, end to end (issue 12), loopback only:
#
#   the same hermod-proxy build, one worker, in-memory engine, serving a `room` run of
#   hermod-loadgen (closed loop, 1 publish in flight per publisher), once with `--auth none`
#   (no check runs) and once with JWT tokens granting the run's rooms (`lgroom*`: every join and
#   publish is checked against the token and the namespaces), alternated, ROUNDS times. Reports
#   publishes per second and the proxy's CPU (utime + stime from /proc/PID/stat over the
#   measured window) per publish. Then the memory of an idle `/ws` session, the same way in
#   both modes: a fresh proxy (2 workers), its VmRSS before and while SESSIONS idle sessions
#   are held (the peak over 8 s, from 8 s after they opened); growth / SESSIONS in KiB.
#
#   benches/room-permissions.sh [--rounds 3] [--duration 10] [--warmup 2] [--connections 100]
#                               [--rooms 10] [--sessions 10000] [--out DIR]
#
# Needs release builds of hermod-proxy and hermod-loadgen (cargo build --release -p
# hermod-proxy -p hermod-loadgen) and jq. Results: target/bench/room-permissions/results.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 duration=10 warmup=2 connections=100 rooms=10 sessions=10000
out=target/bench/room-permissions
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift ;;
        --duration) duration=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --connections) connections=$2; shift ;;
        --rooms) rooms=$2; shift ;;
        --sessions) sessions=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "room-permissions.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

proxy=target/release/hermod-proxy loadgen=target/release/hermod-loadgen
secret=room-permissions-bench-secret-0123456789
members=$((connections / rooms))
mkdir -p "$out"
results=$out/results.tsv
tck=$(getconf CLK_TCK)
proxy_pid=
trap '[ -n "$proxy_pid" ] && kill -TERM "$proxy_pid" 2>/dev/null; true' EXIT

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# start_proxy MODE WORKERS LOG: sets proxy_pid, addr, and auth (the loadgen's auth flags).
start_proxy() {
    local i flags
    case "$1" in
        none) flags=(--auth none) auth=(--auth none) ;;
        jwt) flags=(--jwt-secret "$secret") auth=(--auth jwt --jwt-secret "$secret") ;;
    esac
    "$proxy" --workers "$2" "${flags[@]}" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        2>"$3" &
    proxy_pid=$!
    for i in $(seq 200); do
        addr=$(grep -o 'listening client=[0-9.:]*' "$3" | cut -d= -f2 || true)
        [ -n "$addr" ] && return 0
        sleep 0.05
    done
    echo "room-permissions.sh: the proxy did not start (see $3)" >&2
    exit 1
}

stop_proxy() {
    kill -TERM "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=
}

# wait_open LOG PID: waits for the loadgen's "connections open" line.
wait_open() {
    until grep -qs 'connections open' "$1"; do
        kill -0 "$2" 2>/dev/null || { echo "loadgen failed, see $1" >&2; exit 1; }
        sleep 0.02
    done
}

# run MODE ROUND (MODE: none = --auth none, jwt = tokens with room grants).
run() {
    local mode=$1 r=$2 tag=$1-$2 lg t0 p0 t1 p1 j
    start_proxy "$mode" 1 "$out/$tag.proxy.log"
    "$loadgen" room --url "ws://$addr/ws" "${auth[@]}" \
        --connections "$connections" --rooms "$rooms" --publishers "$members" \
        --closed-loop --in-flight 1 --duration "$duration" --warmup "$warmup" \
        --json "$out/$tag.json" 2>"$out/$tag.log" >/dev/null &
    lg=$!
    wait_open "$out/$tag.log" "$lg"
    sleep "$(calc "0.2 + $warmup" 3)"
    t0=$(date +%s.%N) p0=$(cpu_ticks "$proxy_pid")
    sleep "$(calc "$duration - 0.3" 3)"
    t1=$(date +%s.%N) p1=$(cpu_ticks "$proxy_pid")
    wait "$lg" || true
    stop_proxy
    j=$out/$tag.json
    printf 'room\t%s\t%s\tpublishes_per_s=%s\tdelivered_per_s=%s\tlost=%s\terrors=%s\tproxy_cpu_us_per_publish=%s\tload=%s\n' \
        "$mode" "$r" "$(calc "$(jq .sent "$j") / $duration" 0)" \
        "$(calc "$(jq .received "$j") / $duration" 0)" "$(jq .lost "$j")" "$(jq .errors "$j")" \
        "$(calc "($p1 - $p0) * 1000000 / $tck / ($(jq .sent "$j") * ($t1 - $t0) / $duration)")" \
        "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$results"
}

for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run none "$r"; run jwt "$r"; else run jwt "$r"; run none "$r"; fi
done

# mem_run MODE: idle sessions held by a fresh proxy; appends a `mem` line.
mem_run() {
    local mode=$1 tag=mem-$1 lg base peak s i
    start_proxy "$mode" 2 "$out/$tag.proxy.log"
    sleep 1
    base=$(rss_kib "$proxy_pid")
    "$loadgen" connect --url "ws://$addr/ws" "${auth[@]}" --connections "$sessions" \
        --hold 20 --json "$out/$tag.json" 2>"$out/$tag.log" >/dev/null &
    lg=$!
    wait_open "$out/$tag.log" "$lg"
    sleep 8
    peak=0
    for i in $(seq 8); do
        s=$(rss_kib "$proxy_pid")
        [ "$s" -gt "$peak" ] && peak=$s
        sleep 1
    done
    wait "$lg" || true
    stop_proxy
    printf 'mem\t%s\tsessions=%s\theld=%s\tbase_kib=%s\tpeak_kib=%s\tkib_per_session=%s\n' \
        "$mode" "$sessions" "$(jq .held "$out/$tag.json")" "$base" "$peak" \
        "$(calc "($peak - $base) / $sessions" 3)" | tee -a "$results"
}

mem_run none
mem_run jwt
