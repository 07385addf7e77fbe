#!/usr/bin/env bash
# Server API latency (issue 13): "the end-to-end latency from the API call to delivery at 1,000
# subscribed clients", loopback only, with an open-loop publisher.
#
#   For each proxy --workers count and each publish rate, a fresh
#   `hermod-proxy --workers W --auth none --api-listen ...`; MEMBERS (1,000) WebSocket clients
#   (`/ws?user=mKxN`) joined to room `bench`, held by RECEIVERS (2) Python processes
#   (benches/api_latency.py recv: raw sockets, one epoll loop each, every read stamped with
#   CLOCK_MONOTONIC when it returns); one Python publisher (benches/api_latency.py pub) on one
#   kept-alive HTTP/1.1 connection, open loop: publish i is due at START + i / RATE, sent at its
#   due time or at once if the previous call is still unanswered, its `data` carrying its due
#   time ({"due":NS,"seq":i}, CLOCK_MONOTONIC, shared by every process on the machine).
#   Latency of a delivery = its receipt by a member - the publish's DUE time (not its send
#   time: the coordinated-omission correction). Reports p50/p90/p99/p99.9/max over every
#   delivery (exact, from the sorted list of all samples), deliveries received against
#   calls x members, members closed (by the receivers' count and the proxy's
#   hermod_slow_consumer_closes_total), the proxy's CPU per delivery (utime + stime of all its
#   threads, /proc/PID/stat, from just before the first publish to the end of the drain), the
#   receivers' and the publisher's CPU over the same window, and the API call's own answer
#   latency (send to answer) p50/p99. Per publish also: its first member's receipt and its last
#   one's (from the due time), p50/p99 over the publishes: the spread of one fan-out.
#
#   benches/api-latency.sh [--no-build] [--quick] [--repeats 3] [--duration 10]
#                          [--rates 10,50,100] [--workers-list 1,2] [--members 1000]
#                          [--receivers 2] [--drain 5] [--proxy PATH] [--out DIR]
#
# --quick: 3-second runs instead of 10. Each point (workers, rate) runs --repeats times (the
# order of the points rotates from repeat to repeat), each with a fresh proxy; the summary gives
# the median and the spread (min-max) of the repeats' percentiles. The receivers, the publisher
# and the proxy share the machine's cores: on a shared 2-core VM the figures include the
# receivers' own queueing (their CPU is reported next to the proxy's).
#
# Needs python3 and curl. Every process is started on 127.0.0.1 port 0 (the proxy's ready line
# gives the ports) and stopped when the script ends, also on Ctrl-C. Results:
# target/bench/api-latency/ (results.tsv: one line per run; summary.md: the table; every run's
# proxy log and the helpers' JSON in work/).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1 repeats=3 duration=10 rates=10,50,100 workers_list=1,2 members=1000 receivers=2 drain=5
proxy=target/release/hermod-proxy out=target/bench/api-latency
args_typed="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --quick) duration=3 ;;
        --repeats) repeats=$2; shift ;;
        --duration) duration=$2; shift ;;
        --rates) rates=$2; shift ;;
        --workers-list) workers_list=$2; shift ;;
        --members) members=$2; shift ;;
        --receivers) receivers=$2; shift ;;
        --drain) drain=$2; shift ;;
        --proxy) proxy=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "api-latency.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "api-latency.sh: $tool is missing" >&2; exit 1; }
done
if [ $((members % receivers)) -ne 0 ]; then
    echo "api-latency.sh: --members must be a multiple of --receivers" >&2
    exit 2
fi

if [ $build -eq 1 ]; then
    cargo build --release -p hermod-proxy
fi

key=bench-api-key-0123456789
helper=benches/api_latency.py
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

loadavg() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/'; }
mono_ns() { python3 -c 'import time; print(time.monotonic_ns())'; }
# utime + stime of every thread of PID, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
ratio() { awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN { printf "%.*f", p, (b > 0 ? a / b : 0) }'; }
# metric NAME...: the sum of these counters on the proxy's /metrics (every label set).
metric() {
    curl -fsS "http://$ADMIN_ADDR/metrics" | awk -v names=" $* " '
        { n = $1; sub(/\{.*/, "", n) }
        !/^#/ && index(names, " " n " ") { s += $NF }
        END { printf "%d", s }'
}
field() { tr ' \t' '\n\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }
# json FILE KEY: one value of a flat JSON object.
json() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(v)' "$1" "$2"; }

# start_proxy WORKERS LOG: sets PROXY_PID, CLIENT_ADDR, API_ADDR and ADMIN_ADDR.
start_proxy() {
    "$proxy" --workers "$1" --auth none --log warn \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --api-listen 127.0.0.1:0 --api-key "$key" \
        --max-connections-per-ip 0 --max-connects-per-ip-per-sec 0 2>"$2" &
    PROXY_PID=$!
    started+=("$PROXY_PID")
    local i line
    for i in $(seq 200); do
        line=$(grep -m1 'listening client=' "$2" || true)
        if [ -n "$line" ]; then
            CLIENT_ADDR=$(field "$line" client)
            ADMIN_ADDR=$(field "$line" admin)
            API_ADDR=$(field "$line" api)
            return 0
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "api-latency.sh: the proxy did not print its ready line (see $2)" >&2
    exit 1
}

# run_point WORKERS RATE REPEAT
run_point() {
    local w=$1 rate=$2 r=$3 tag=w$1-r$2-$3 la0 count start end i k s0 s1 p0 p1 pub_pid
    local rpids=() rfiles=() per=$((members / receivers)) ready
    la0=$(loadavg)
    count=$(calc "$rate * $duration" 0)
    start_proxy "$w" "$work/$tag.proxy.log"
    for k in $(seq 0 $((receivers - 1))); do
        rfiles+=("$work/$tag.recv$k.json")
        : >"$work/$tag.recv$k.log"
    done
    # The receivers stop by themselves once every delivery is in or every member is closed;
    # otherwise on SIGTERM after the drain below (END is only a safety bound).
    end=$(( $(mono_ns) + (120 + duration + drain) * 1000000000 ))
    for k in $(seq 0 $((receivers - 1))); do
        python3 -u "$helper" recv "$CLIENT_ADDR" "$per" bench "m${k}x" "$count" "$end" \
            "${rfiles[$k]}" >"$work/$tag.recv$k.log" 2>&1 &
        rpids+=($!)
        started+=($!)
    done
    for i in $(seq 1200); do
        ready=$(cat "$work/$tag".recv*.log | grep -c '^ready ' || true)
        [ "$ready" -eq "$receivers" ] && break
        for k in "${rpids[@]}"; do
            kill -0 "$k" 2>/dev/null || { echo "api-latency.sh: a receiver died (see $work/$tag.recv*.log)" >&2; exit 1; }
        done
        sleep 0.1
    done
    [ "$ready" -eq "$receivers" ] || { echo "api-latency.sh: receivers not ready" >&2; exit 1; }
    sleep 0.5
    s0=$(metric hermod_slow_consumer_closes_total)
    p0=$(cpu_ticks "$PROXY_PID")
    start=$(( $(mono_ns) + 500000000 ))
    python3 "$helper" pub "$API_ADDR" "$key" bench "$rate" "$count" "$start" \
        "$work/$tag.pub.json" 2>"$work/$tag.pub.log" &
    pub_pid=$!
    started+=("$pub_pid")
    wait "$pub_pid" || { echo "api-latency.sh: the publisher failed (see $work/$tag.pub.log)" >&2; exit 1; }
    # Drain: the receivers stop once everything arrived; past --drain seconds after the last
    # answer, they are stopped (a loss then shows as deliveries < expected).
    for i in $(seq $((drain * 10))); do
        k=0
        for pid in "${rpids[@]}"; do kill -0 "$pid" 2>/dev/null && k=1; done
        [ $k -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${rpids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null; done
    for pid in "${rpids[@]}"; do wait "$pid" 2>/dev/null || true; done
    p1=$(cpu_ticks "$PROXY_PID")
    s1=$(metric hermod_slow_consumer_closes_total)
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    for f in "${rfiles[@]}"; do
        [ -s "$f" ] || { echo "api-latency.sh: a receiver was stopped before writing $f (drain too short?)" >&2; exit 1; }
    done
    python3 "$helper" report "$work/$tag.report.json" "${rfiles[@]}" >/dev/null
    local rep=$work/$tag.report.json pub=$work/$tag.pub.json d proxy_s recv_s pub_s
    d=$(json "$rep" deliveries)
    proxy_s=$(calc "($p1 - $p0) / $tck" 3)
    recv_s=$(json "$rep" receiver_cpu_s)
    pub_s=$(json "$pub" cpu_s)
    printf 'w%s\tr%s\t%s\tp50_ms=%s\tp90_ms=%s\tp99_ms=%s\tp999_ms=%s\tmax_ms=%s\tfirst_p50_ms=%s\tfirst_p99_ms=%s\tlast_p50_ms=%s\tlast_p99_ms=%s\tdelivered=%s\texpected=%s\treceiver_closed=%s\tslow_consumer_closes=%s\tcalls=%s\tnon200=%s\tsent_late=%s\tanswer_p50_us=%s\tanswer_p99_us=%s\tproxy_cpu_s=%s\tproxy_us_per_delivery=%s\treceiver_cpu_s=%s\treceiver_over_proxy=%s\tpublisher_cpu_s=%s\tload=%s..%s\n' \
        "$w" "$rate" "$r" "$(json "$rep" p50_ms)" "$(json "$rep" p90_ms)" "$(json "$rep" p99_ms)" \
        "$(json "$rep" p99.9_ms)" "$(json "$rep" max_ms)" \
        "$(json "$rep" first_p50_ms)" "$(json "$rep" first_p99_ms)" "$(json "$rep" last_p50_ms)" \
        "$(json "$rep" last_p99_ms)" "$d" "$(json "$rep" expected)" \
        "$(json "$rep" receiver_closed)" "$((s1 - s0))" "$(json "$pub" calls)" \
        "$(json "$pub" errors)" "$(json "$pub" sent_late)" \
        "$(calc "$(json "$pub" answer_p50_us)" 0)" "$(calc "$(json "$pub" answer_p99_us)" 0)" \
        "$proxy_s" "$(ratio "$(calc "$proxy_s * 1000000" 1)" "$d" 2)" "$recv_s" \
        "$(ratio "$recv_s" "$proxy_s")" "$pub_s" "$la0" "$(loadavg)" | tee -a "$results"
}

values() {
    awk -F'\t' -v k="$1" -v n="$2" -v f="$3=" '$1 == k && $2 == n {
        for (i = 4; i <= NF; i++) if (index($i, f) == 1) print substr($i, length(f) + 1) }' \
        "$results"
}
# med W RATE FIELD: `median (min-max)` of FIELD over the repeats.
med() {
    values "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        if (NR == 1 || v[1] == v[NR]) print m; else printf "%s (%s-%s)\n", m, v[1], v[NR] }'
}
total() { values "$@" | awk '{ s += $1 } END { printf "%d", s }'; }

IFS=, read -r -a rate_list <<<"$rates"
IFS=, read -r -a wlist <<<"$workers_list"
points=()
for w in "${wlist[@]}"; do for rt in "${rate_list[@]}"; do points+=("$w:$rt"); done; done

: >"$results"
started_at=$(date -u +%FT%TZ)
echo "api-latency.sh: $started_at nproc=$(nproc) kernel=$(uname -r) load=$(loadavg)" >&2
for r in $(seq 0 $((repeats - 1))); do
    n=${#points[@]}
    for k in $(seq 0 $((n - 1))); do
        p=${points[$(((k + r) % n))]}
        run_point "${p%%:*}" "${p#*:}" "$r"
    done
done

{
    echo "Server API latency, call to delivery, $started_at, $(nproc) CPUs, Linux $(uname -r);"
    echo "$members members in room \`bench\` over $receivers Python receiver process(es), open-loop publisher for ${duration} s per run;"
    echo "latency from each publish's due time to each member's read; median (min-max) of $repeats repeat(s), a fresh proxy each."
    echo "Load average before..after each run: $(awk -F'\t' '{ print $NF }' "$results" | sed 's/^load=//' | tr '\n' ' ')"
    echo
    echo "| workers | publishes/s | deliveries/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | first member p50 / p99 ms | last member p50 / p99 ms | delivered / expected (all runs) | members closed (all runs; proxy's slow-consumer count) | non-200 | API answer p50 µs | API answer p99 µs | proxy CPU µs per delivery | receivers' CPU / proxy's |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in "${wlist[@]}"; do
        for rt in "${rate_list[@]}"; do
            echo "| $w | $rt | $((rt * members)) | $(med "w$w" "r$rt" p50_ms) | $(med "w$w" "r$rt" p90_ms) | $(med "w$w" "r$rt" p99_ms) | $(med "w$w" "r$rt" p999_ms) | $(med "w$w" "r$rt" max_ms) | $(med "w$w" "r$rt" first_p50_ms) / $(med "w$w" "r$rt" first_p99_ms) | $(med "w$w" "r$rt" last_p50_ms) / $(med "w$w" "r$rt" last_p99_ms) | $(total "w$w" "r$rt" delivered) / $(total "w$w" "r$rt" expected) | $(total "w$w" "r$rt" receiver_closed) ($(total "w$w" "r$rt" slow_consumer_closes)) | $(total "w$w" "r$rt" non200) | $(med "w$w" "r$rt" answer_p50_us) | $(med "w$w" "r$rt" answer_p99_us) | $(med "w$w" "r$rt" proxy_us_per_delivery) | $(med "w$w" "r$rt" receiver_over_proxy) |"
        done
    done
    echo
    echo "Command: benches/api-latency.sh $args_typed"
} | tee "$out/summary.md"
