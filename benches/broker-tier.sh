#!/usr/bin/env bash
# Broker-tier figures of issue 4, loopback only, one redis-server (no persistence):
#
#   1. added latency of an external broker over the embedded one, at a fixed moderate rate:
#      A = `hermod-proxy --redis` (embedded broker, Redis engine),
#      B = `hermod-broker --redis` + `hermod-proxy --brokers` (external broker, same engine);
#      `hermod-loadgen direct`, 100 users, --rate (default 2000), alternating A B A B ...;
#   2. messages per second through 1 gateway + 1 broker and through 2 gateways + 2 brokers:
#      rates stepped up (--steps) until a run is not valid (< 99% of the target achieved, or
#      anything lost / duplicated / reordered / an error) or its p99 exceeds --p99-max-ms;
#      each process's CPU (utime + stime from /proc/PID/stat over the measured window) per
#      message: gateway(s), broker(s), redis, load generator.
#
#   benches/broker-tier.sh [--no-build] [--repeats 5] [--rate 2000] [--duration 10] [--warmup 2]
#                          [--steps 2000,5000,10000,15000,20000,30000,40000] [--p99-max-ms 100]
#                          [--workers 1] [--tries 2] [--only latency|throughput]
#
# A throughput step that fails is run again, up to --tries runs in all (other jobs share this
# machine); the search stops at the first step where every try failed. Every try is recorded.
#
# Every process is started on 127.0.0.1 (port 0 where the program allows it; the ready lines
# on stderr give the ports; redis-server gets a free port picked just before) and stopped when
# the script ends, also on Ctrl-C. Gateways and brokers are fresh for every run; Redis is
# shared and FLUSHALLed before each run. Results: target/bench/broker-tier/ (results.tsv: one
# line per run; summary.md: the tables; every run's JSON report and logs under work/).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1 repeats=5 rate=2000 duration=10 warmup=2 p99max=100 workers=1 only=all tries=2
steps=2000,5000,10000,15000,20000,30000,40000
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --repeats) repeats=$2; shift ;;
        --rate) rate=$2; shift ;;
        --duration) duration=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --steps) steps=$2; shift ;;
        --p99-max-ms) p99max=$2; shift ;;
        --workers) workers=$2; shift ;;
        --tries) tries=$2; shift ;;
        --only) only=$2; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "broker-tier.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

proxy=target/release/hermod-proxy
broker=target/release/hermod-broker
loadgen=target/release/hermod-loadgen
out=target/bench/broker-tier
work=$out/work
mkdir -p "$work"
results=$out/results.tsv
tck=$(getconf CLK_TCK)

# Every process this script starts; stopped (TERM, then KILL after 5 s) on exit.
started=()
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${started[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $build -eq 1 ]; then
    cargo build --release -p hermod-proxy -p hermod-broker -p hermod-loadgen
fi

now() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/'; }
# utime + stime of every thread of PID, in clock ticks (fields 14 and 15 of /proc/PID/stat).
# Empty when PID is gone.
cpu_ticks() { { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null || true; } | awk '{print $12 + $13}'; }
# per_msg T0 T1 SENT: CPU us per message from two tick counts, "-" if either is missing.
per_msg() { if [ -n "$1" ] && [ -n "$2" ]; then calc "($2 - $1) * 1000000 / $tck / $3"; else echo -; fi; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
sleep_until() {
    local d
    d=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
    sleep "$d"
}
die() { echo "broker-tier.sh: $*" >&2; exit 1; }

# wait_line LOG PID REGEX: prints the first match of REGEX in LOG (waits up to 10 s).
wait_line() {
    local i m
    for i in $(seq 200); do
        m=$(grep -o "$3" "$1" | head -1 || true)
        [ -n "$m" ] && { echo "$m"; return 0; }
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    die "no line matching '$3' in $1"
}

# One redis-server for the whole script, on a free port picked here.
redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    >"$work/redis.log" 2>&1 &
REDIS_PID=$!
started+=("$REDIS_PID")
for i in $(seq 100); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
done
redis_url=redis://127.0.0.1:$redis_port

# start_broker LOG: sets BROKER_PID and BROKER_LINK.
start_broker() {
    "$broker" --redis "$redis_url" --listen 127.0.0.1:0 2>"$1" &
    BROKER_PID=$!
    started+=("$BROKER_PID")
    BROKER_LINK=$(wait_line "$1" "$BROKER_PID" 'listening link=[0-9.:]*' | cut -d= -f2)
}

# start_gateway LOG ARGS...: sets GW_PID and GW_ADDR; returns once /readyz answers 200.
start_gateway() {
    local log=$1 admin i
    shift
    "$proxy" --auth none --workers "$workers" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        "$@" 2>"$log" &
    GW_PID=$!
    started+=("$GW_PID")
    GW_ADDR=$(wait_line "$log" "$GW_PID" 'listening client=[0-9.:]*' | cut -d= -f2)
    admin=$(wait_line "$log" "$GW_PID" 'admin=[0-9.:]*' | cut -d= -f2)
    for i in $(seq 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$admin/readyz")" = 200 ] && return 0
        sleep 0.05
    done
    die "gateway not ready (see $log)"
}

# wait_open LOG PID: waits for the loadgen's "connections open" line; prints the time it saw it.
wait_open() {
    local i
    for i in $(seq 3000); do
        if grep -q 'connections open' "$1"; then now; return 0; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.02
    done
    die "the load generator did not open its connections (see $1)"
}

# setup TOPOLOGY TAG: starts the processes of one run; sets URLS (loadgen --url args), and
# ROLES / PIDS (the processes whose CPU is sampled, gateway and broker first).
#   embedded: 1 gateway with the embedded broker; 1x1: 1 gateway + 1 broker; 2x2: 2 + 2.
setup() {
    local topo=$1 tag=$2 links
    redis-cli -p "$redis_port" flushall >/dev/null
    URLS=() ROLES=() PIDS=()
    case "$topo" in
        embedded)
            start_gateway "$work/$tag.gw1.log" --redis "$redis_url"
            URLS+=(--url "ws://$GW_ADDR/ws") ROLES+=(gw1) PIDS+=("$GW_PID") ;;
        1x1|2x2)
            start_broker "$work/$tag.b1.log"
            links=$BROKER_LINK
            ROLES+=(b1) PIDS+=("$BROKER_PID")
            if [ "$topo" = 2x2 ]; then
                start_broker "$work/$tag.b2.log"
                links=$links,$BROKER_LINK
                ROLES+=(b2) PIDS+=("$BROKER_PID")
            fi
            start_gateway "$work/$tag.gw1.log" --brokers "$links"
            URLS+=(--url "ws://$GW_ADDR/ws") ROLES+=(gw1) PIDS+=("$GW_PID")
            if [ "$topo" = 2x2 ]; then
                start_gateway "$work/$tag.gw2.log" --brokers "$links"
                URLS+=(--url "ws://$GW_ADDR/ws") ROLES+=(gw2) PIDS+=("$GW_PID")
                # Both links of each gateway up before load starts.
                sleep 1
            fi ;;
    esac
    ROLES+=(redis) PIDS+=("$REDIS_PID")
}

teardown() {
    local k
    for k in "${!ROLES[@]}"; do
        [ "${ROLES[$k]}" = redis ] || stop_pid "${PIDS[$k]}"
    done
}

# run KIND TOPOLOGY RATE REPEAT: one loadgen run; appends one results line, also left in LAST.
run() {
    local kind=$1 topo=$2 r=$3 rep=$4 tag=$1-$2-$3-$4 lg t_open t_start t0 t1 la0 j sent k
    local -a c0 c1
    local cpu=""
    la0=$(loadavg)
    setup "$topo" "$tag"
    "$loadgen" direct "${URLS[@]}" --auth none --connections 100 --rate "$r" \
        --duration "$duration" --warmup "$warmup" --json "$work/$tag.json" \
        2>"$work/$tag.lg.log" >/dev/null &
    lg=$!
    started+=("$lg")
    t_open=$(wait_open "$work/$tag.lg.log" "$lg")
    # Measured window as in single-node.sh: t0 = "connections open" + 0.1 s + warm-up; CPU is
    # sampled over [t0 + 0.1 s, end - 0.5 s] and the window's messages scaled to that span
    # (the load generator exits when the window ends: on a loaded machine this script may
    # wake too late to read its /proc entry; its figure is then "-").
    t_start=$(calc "$t_open + 0.1 + $warmup" 3)
    sleep_until "$(calc "$t_start + 0.1" 3)"
    t0=$(now)
    for k in "${!PIDS[@]}"; do c0[k]=$(cpu_ticks "${PIDS[$k]}"); done
    c0[99]=$(cpu_ticks "$lg")
    sleep_until "$(calc "$t_start + $duration - 0.5" 3)"
    t1=$(now)
    for k in "${!PIDS[@]}"; do c1[k]=$(cpu_ticks "${PIDS[$k]}"); done
    c1[99]=$(cpu_ticks "$lg")
    wait "$lg" || true
    teardown
    j=$work/$tag.json
    sent=$(calc "$(jq .sent "$j") * ($t1 - $t0) / $duration" 0)
    [ "$sent" -gt 0 ] || sent=1
    for k in "${!PIDS[@]}"; do
        cpu+=$(printf '\tcpu_%s=%s' "${ROLES[$k]}" \
            "$(per_msg "${c0[k]}" "${c1[k]}" "$sent")")
    done
    cpu+=$(printf '\tcpu_loadgen=%s' "$(per_msg "${c0[99]}" "${c1[99]}" "$sent")")
    printf -v LAST '%s\t%s\t%s\t%s\tachieved=%s\tvalid=%s\tlost=%s\tp50_us=%s\tp90_us=%s\tp99_us=%s\tp999_us=%s%s\tload=%s..%s' \
        "$kind" "$topo" "$r" "$rep" "$(calc "$(jq .achieved_rate "$j")" 0)" "$(jq .valid "$j")" \
        "$(jq .lost "$j")" "$(jq .latency_us.p50 "$j")" "$(jq .latency_us.p90 "$j")" \
        "$(jq .latency_us.p99 "$j")" "$(jq .latency_us.p999 "$j")" "$cpu" \
        "$la0" "$(loadavg)"
    echo "$LAST" | tee -a "$results"
}

# field LINE NAME: the value of NAME= in a results line.
field() { tr '\t' '\n' <<<"$1" | awk -F= -v n="$2" '$1 == n { print $2 }'; }

# median TOPOLOGY FIELD: the median of FIELD over the latency runs of that topology.
median() {
    grep -P "^latency\t$1\t" "$results" | while IFS= read -r l; do field "$l" "$2"; done |
        sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
        else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

: >"$results"
echo "broker-tier.sh: $(date -u +%F) nproc=$(nproc) kernel=$(uname -r) load=$(loadavg) workers=$workers redis=$redis_port" >&2

if [ "$only" = all ] || [ "$only" = latency ]; then
    for rep in $(seq 1 "$repeats"); do
        run latency embedded "$rate" "$rep"
        run latency 1x1 "$rate" "$rep"
    done
fi

if [ "$only" = all ] || [ "$only" = throughput ]; then
    for topo in 1x1 2x2; do
        for r in ${steps//,/ }; do
            ok=0
            for try in $(seq 1 "$tries"); do
                run throughput "$topo" "$r" "$try"
                achieved=$(field "$LAST" achieved) valid=$(field "$LAST" valid)
                p99=$(field "$LAST" p99_us) lost=$(field "$LAST" lost)
                if [ "$valid" = true ] && [ "$lost" = 0 ] && [ "$p99" -le $((p99max * 1000)) ]; then
                    ok=1
                    break
                fi
                echo "broker-tier.sh: $topo at $r/s failed try $try (valid=$valid achieved=$achieved lost=$lost p99=${p99}us)" >&2
            done
            [ $ok -eq 1 ] || { echo "broker-tier.sh: $topo stops at $r/s" >&2; break; }
        done
    done
fi

{
    echo "Broker tier, $(date -u +%F), $(nproc) CPUs, Linux $(uname -r), gateways --workers $workers."
    if grep -q '^latency' "$results"; then
        echo
        echo "| direct, 100 users, $rate/s (median of $repeats) | p50 us | p90 us | p99 us | p99.9 us |"
        echo "|---|---:|---:|---:|---:|"
        for f in p50_us p90_us p99_us p999_us; do eval "a_$f=$(median embedded $f)"; done
        for f in p50_us p90_us p99_us p999_us; do eval "b_$f=$(median 1x1 $f)"; done
        echo "| A: embedded broker | $a_p50_us | $a_p90_us | $a_p99_us | $a_p999_us |"
        echo "| B: external broker | $b_p50_us | $b_p90_us | $b_p99_us | $b_p999_us |"
        echo "| B - A | $((b_p50_us - a_p50_us)) | $((b_p90_us - a_p90_us)) | $((b_p99_us - a_p99_us)) | $((b_p999_us - a_p999_us)) |"
    fi
    if grep -q '^throughput' "$results"; then
        echo
        echo "| topology | target/s | try | achieved/s | valid | lost | p50 us | p99 us | CPU us per message, per process | load averages |"
        echo "|---|---:|---:|---:|---|---:|---:|---:|---|---|"
        grep -P '^throughput\t' "$results" | while IFS= read -r l; do
            IFS=$'\t' read -r _ topo r try _ <<<"$l"
            echo "| $topo | $r | $try | $(field "$l" achieved) | $(field "$l" valid) | $(field "$l" lost) | $(field "$l" p50_us) | $(field "$l" p99_us) | $(tr '\t' '\n' <<<"$l" | grep '^cpu_' | sed 's/^cpu_//' | paste -sd' ') | $(field "$l" load) |"
        done
    fi
} | tee "$out/summary.md"
