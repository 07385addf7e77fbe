#!/usr/bin/env bash
# Single-node figures of issue 2, loopback only:
#
#   1. memory per idle session: a fresh `hermod-proxy --workers 2` per run, its VmRSS before and
#      after N idle WebSocket sessions are open and settled, on `/ws` (client protocol,
#      `--auth none`) and on `--echo-path /echo`; growth / N in KiB;
#   2. echo round trips through `--echo-path` on ONE worker at 100 connections: closed loop with
#      1 and 8 messages in flight per connection, and open loop at a fixed rate (latency), once
#      with the load generator woken by every reply (its default) and once with
#      `--read-at-ticks`; the proxy's CPU (utime + stime from /proc/PID/stat over the measured
#      window) per round trip, next to the load generator's own.
#
#   benches/single-node.sh [--no-build] [--repeats 3] [--sessions 15000] [--hold 20] [--settle 5]
#                          [--duration 10] [--warmup 2] [--rate 20000] [--size 64]
#                          [--only mem|echo] [--proxy PATH] [--out DIR]
#
# --proxy runs another build of hermod-proxy (e.g. the previous commit's, to compare a change
# side by side: alternate the two, one repeat each); --out keeps its results apart.
#
# Every process is started on 127.0.0.1 port 0 (the proxy's ready line on stderr gives the
# ports) and stopped when the script ends, also on Ctrl-C. Results: target/bench/single-node/
# (results.tsv: one line per run; summary.md: the medians; every run's JSON report and log).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1 repeats=3 sessions=15000 hold=20 settle=5 duration=10 warmup=2 rate=20000 size=64
only=all proxy=target/release/hermod-proxy out=target/bench/single-node
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --repeats) repeats=$2; shift ;;
        --sessions) sessions=$2; shift ;;
        --hold) hold=$2; shift ;;
        --settle) settle=$2; shift ;;
        --duration) duration=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --rate) rate=$2; shift ;;
        --size) size=$2; shift ;;
        --only) only=$2; shift ;;
        --proxy) proxy=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "single-node.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

loadgen=target/release/hermod-loadgen
work=$out/work
mkdir -p "$work"
results=$out/results.tsv
tck=$(getconf CLK_TCK)

# Every process this script starts; stopped (TERM, then KILL after 5 s) on exit.
started=()
cleanup() {
    local pid i
    for pid in "${started[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $build -eq 1 ]; then
    cargo build --release -p hermod-proxy -p hermod-loadgen
fi

now() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# utime + stime of every thread of PID, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# counted after the `(comm)` field, which may contain spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
sleep_until() {
    local d
    d=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
    sleep "$d"
}

# start_proxy WORKERS LOG: sets PROXY_PID and PROXY_ADDR (client listener) from the ready line.
start_proxy() {
    "$proxy" --workers "$1" --auth none --echo-path /echo \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 2>"$2" &
    PROXY_PID=$!
    started+=("$PROXY_PID")
    local i
    for i in $(seq 200); do
        PROXY_ADDR=$(grep -o 'listening client=[0-9.:]*' "$2" | head -1 | cut -d= -f2 || true)
        [ -n "$PROXY_ADDR" ] && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "single-node.sh: the proxy did not print its ready line (see $2)" >&2
    exit 1
}

stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

# wait_open LOG PID: waits for the loadgen's "connections open" line; prints the time it saw it.
wait_open() {
    local i
    for i in $(seq 6000); do
        if grep -q 'connections open' "$1"; then now; return 0; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.02
    done
    echo "single-node.sh: the load generator did not open its connections (see $1)" >&2
    exit 1
}

# mem_run ENDPOINT REPEAT: one fresh proxy, N idle sessions held; appends a `mem` line.
mem_run() {
    local ep=$1 r=$2 url tag=mem-$1-$2 lg t_open base peak s held la0
    case "$ep" in
        ws) url="ws://ADDR/ws?user=u{i}" ;;
        echo) url="ws://ADDR/echo" ;;
    esac
    la0=$(loadavg)
    start_proxy 2 "$work/$tag.proxy.log"
    url=${url/ADDR/$PROXY_ADDR}
    sleep 1
    base=$(rss_kib "$PROXY_PID")
    "$loadgen" connect --url "$url" --connections "$sessions" --hold "$hold" \
        --json "$work/$tag.json" 2>"$work/$tag.log" >/dev/null &
    lg=$!
    started+=("$lg")
    t_open=$(wait_open "$work/$tag.log" "$lg")
    # Peak RSS over the hold, from `settle` seconds after the last connection opened.
    sleep_until "$(calc "$t_open + $settle" 3)"
    peak=0
    while awk -v t="$(now)" -v e="$(calc "$t_open + $hold - 2" 3)" 'BEGIN { exit !(t < e) }'; do
        s=$(rss_kib "$PROXY_PID")
        [ "$s" -gt "$peak" ] && peak=$s
        sleep 1
    done
    wait "$lg" || true
    stop_proxy
    held=$(jq .held "$work/$tag.json")
    printf 'mem\t%s\t%s\tbase_kib=%s\tpeak_kib=%s\theld=%s\tkib_per_session=%s\tload=%s..%s\n' \
        "$ep" "$r" "$base" "$peak" "$held" "$(calc "($peak - $base) / $sessions")" \
        "$la0" "$(loadavg)" | tee -a "$results"
}

# echo_run MODE REPEAT (MODE: c1, c8 = closed loop in-flight 1/8, open = open loop at --rate,
# ticks = the same with --read-at-ticks).
echo_run() {
    local mode=$1 r=$2 tag=echo-$1-$2 lg t_open t_start t0 t1 p0 p1 l0 l1 la0 j sent args
    case "$mode" in
        c1) args=(--closed-loop --in-flight 1) ;;
        c8) args=(--closed-loop --in-flight 8) ;;
        open) args=(--rate "$rate") ;;
        ticks) args=(--rate "$rate" --read-at-ticks) ;;
    esac
    la0=$(loadavg)
    start_proxy 1 "$work/$tag.proxy.log"
    "$loadgen" echo --url "ws://$PROXY_ADDR/echo" --connections 100 "${args[@]}" \
        --duration "$duration" --warmup "$warmup" --size "$size" \
        --json "$work/$tag.json" --hdr-out "$work/$tag.hdr" 2>"$work/$tag.log" >/dev/null &
    lg=$!
    started+=("$lg")
    t_open=$(wait_open "$work/$tag.log" "$lg")
    # The measured window: t0 is 100 ms after "connections open" (loadgen START_DELAY), then
    # the warm-up. CPU is sampled over [start + 0.1 s, end - 0.2 s] (the load generator exits
    # as soon as the window ends, so its /proc entry cannot be read at the very end), and the
    # messages of the window are scaled to that span.
    t_start=$(calc "$t_open + 0.1 + $warmup" 3)
    sleep_until "$(calc "$t_start + 0.1" 3)"
    t0=$(now) p0=$(cpu_ticks "$PROXY_PID") l0=$(cpu_ticks "$lg")
    sleep_until "$(calc "$t_start + $duration - 0.2" 3)"
    t1=$(now) p1=$(cpu_ticks "$PROXY_PID") l1=$(cpu_ticks "$lg")
    wait "$lg" || true
    stop_proxy
    j=$work/$tag.json
    sent=$(calc "$(jq .sent "$j") * ($t1 - $t0) / $duration" 0)
    printf 'echo\t%s\t%s\trate=%s\tvalid=%s\tp50_us=%s\tp99_us=%s\tp999_us=%s\tsend_lag_p50_us=%s\tproxy_cpu_us_per_msg=%s\tloadgen_cpu_us_per_msg_json=%s\tloadgen_cpu_us_per_msg_window=%s\tloadgen_over_proxy=%s\tload=%s..%s\n' \
        "$mode" "$r" "$(calc "$(jq .achieved_rate "$j")" 0)" "$(jq .valid "$j")" \
        "$(jq .latency_us.p50 "$j")" "$(jq .latency_us.p99 "$j")" "$(jq .latency_us.p999 "$j")" \
        "$(jq .send_lag_us.p50 "$j")" \
        "$(calc "($p1 - $p0) * 1000000 / $tck / $sent")" \
        "$(calc "$(jq .cpu_us_per_message "$j")")" \
        "$(calc "($l1 - $l0) * 1000000 / $tck / $sent")" \
        "$(calc "($l1 - $l0) / ($p1 - $p0)")" \
        "$la0" "$(loadavg)" | tee -a "$results"
}

# median KIND NAME FIELD: the median of FIELD over the results lines of that kind and name.
median() {
    awk -F'\t' -v k="$1" -v n="$2" -v f="$3=" '$1 == k && $2 == n {
        for (i = 4; i <= NF; i++) if (index($i, f) == 1) print substr($i, length(f) + 1) }' \
        "$results" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
        else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

: >"$results"
echo "single-node.sh: $(date -u +%F) nproc=$(nproc) kernel=$(uname -r) load=$(loadavg)" >&2
for r in $(seq 0 $((repeats - 1))); do
    if [ "$only" = all ] || [ "$only" = mem ]; then
        # Alternate which endpoint runs first.
        if [ $((r % 2)) -eq 0 ]; then eps=(ws echo); else eps=(echo ws); fi
        for ep in "${eps[@]}"; do mem_run "$ep" "$r"; done
    fi
    if [ "$only" = all ] || [ "$only" = echo ]; then
        # Rotate the order of the four echo runs from repeat to repeat.
        modes=(c1 c8 open ticks)
        for k in 0 1 2 3; do echo_run "${modes[$(((k + r) % 4))]}" "$r"; done
    fi
done

{
    echo "Single node, $(date -u +%F), $(nproc) CPUs, Linux $(uname -r); medians of $repeats repeat(s)."
    echo
    echo "| endpoint | sessions | KiB per idle session (median) |"
    echo "|---|---:|---:|"
    for ep in ws echo; do
        echo "| $ep | $sessions | $(median mem "$ep" kib_per_session) |"
    done
    echo
    echo "| echo run | round trips/s | p50 us | p99 us | p99.9 us | send lag p50 us | proxy CPU us/msg | loadgen CPU us/msg (JSON) | loadgen CPU us/msg (window) | loadgen / proxy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for m in c1 c8 open ticks; do
        echo "| $m | $(median echo $m rate) | $(median echo $m p50_us) | $(median echo $m p99_us) | $(median echo $m p999_us) | $(median echo $m send_lag_p50_us) | $(median echo $m proxy_cpu_us_per_msg) | $(median echo $m loadgen_cpu_us_per_msg_json) | $(median echo $m loadgen_cpu_us_per_msg_window) | $(median echo $m loadgen_over_proxy) |"
    done
} | tee "$out/summary.md"
