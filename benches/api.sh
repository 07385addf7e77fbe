#!/usr/bin/env bash
# Server API throughput (issue 13), loopback only: `POST /api/publish` through the HTTP/1.1 API
# of one `hermod-proxy --workers 1 --auth none`, driven by wrk on keep-alive connections with
# benches/api-publish.lua (a fixed JSON body to room `bench`, the Authorization header; its
# `done` hook prints the latency percentiles). Every call is answered once the message is
# stored, so wrk's closed loop measures stored publishes per second.
#
#   1. publish: `wrk -t1 -c{1,16,64} -d10s` with nobody in the room: calls/s, wrk's latency
#      p50/p99, non-2xx answers (wrk's count of statuses >= 400, checked against the proxy's
#      hermod_api_refused_total + hermod_api_unauthorized_total; must be 0), socket errors, and
#      the proxy's CPU (utime + stime of all its threads from /proc/PID/stat, read before and
#      after the wrk run) per 1,000 calls, next to wrk's own CPU over the same window, and per
#      proxy thread (API, broker, workers) its CPU and the time it was runnable but waiting for
#      a CPU (/proc/PID/task/TID/schedstat), in cores: on a shared machine the second says how
#      much the neighbours held the proxy back;
#   2. fan-out: the same with MEMBERS (1,000) WebSocket clients joined to room `bench`
#      (`/ws?user=mN`, held by a small Python receiver written by this script: raw sockets, one
#      epoll loop woken every TICK ms, counting the `{"op":"msg"` frames it reads without
#      parsing them), so every call also costs the fan-out to every member. A closed loop
#      publishes far faster than 1,000 members can be served, so wrk is paced: -c1 by default,
#      waiting DELAY ms before each request (benches/api-publish.lua's `delay` hook), for each
#      delay of --fanout-delays (0: unpaced). Reports calls/s, deliveries/s counted by the
#      receiver while wrk runs, deliveries after the drain against calls x members, slow-consumer
#      closes (hermod_slow_consumer_closes_total: 1008 closes, for a full outbound queue or a
#      worker mailbox the broker could not deliver to), and the proxy's CPU from before wrk to
#      the end of the drain per 1,000 calls, next to the receiver's and wrk's.
#
#   benches/api.sh [--no-build] [--quick] [--repeats 3] [--duration 10] [--connections 1,16,64]
#                  [--members 1000] [--fanout-connections 1] [--fanout-delays 8,4,3,2,0]
#                  [--receiver-tick 10] [--workers 1] [--only publish|fanout] [--proxy PATH]
#                  [--out DIR]
#
# --quick: 3-second wrk runs instead of 10. Each point runs --repeats times (the order of the
# points rotates from repeat to repeat), each time with a fresh proxy; the summary gives the
# median and the spread (min-max) of the repeats. These are absolute figures on whatever machine
# runs them, load generator, receiver and proxy sharing its cores: on a shared, noisy 2-core VM
# read them as orders of magnitude, and compare runs only side by side.
#
# Installs wrk with apt-get when it is missing; needs python3 and curl. Every process is
# started on 127.0.0.1 port 0 (the proxy's ready line on stderr gives the ports) and stopped
# when the script ends, also on Ctrl-C. Results: target/bench/api/ (results.tsv: one line per
# run; summary.md: the tables; every run's wrk output, proxy log and receiver log in work/).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1 repeats=3 duration=10 connections=1,16,64 members=1000 fanout_c=1 delays=8,4,3,2,0 tick=10
workers=1 only=all
proxy=target/release/hermod-proxy out=target/bench/api
args_typed="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --quick) duration=3 ;;
        --repeats) repeats=$2; shift ;;
        --duration) duration=$2; shift ;;
        --connections) connections=$2; shift ;;
        --members) members=$2; shift ;;
        --fanout-connections) fanout_c=$2; shift ;;
        --fanout-delays) delays=$2; shift ;;
        --receiver-tick) tick=$2; shift ;;
        --workers) workers=$2; shift ;;
        --only) only=$2; shift ;;
        --proxy) proxy=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
        *) echo "api.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$only" in all|publish|fanout) ;; *) echo "api.sh: --only publish|fanout" >&2; exit 2 ;; esac

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
if ! command -v wrk >/dev/null; then
    echo "api.sh: installing wrk with apt-get" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk
fi
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "api.sh: $tool is missing" >&2; exit 1; }
done

if [ $build -eq 1 ]; then
    cargo build --release -p hermod-proxy
fi

key=bench-api-key-0123456789
lua=benches/api-publish.lua
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

now() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/'; }
# utime + stime of every thread of PID, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# counted after the `(comm)` field, which may contain spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# ratio A B: A / B, or 0 when B is 0 (a run too short to see a clock tick).
ratio() { awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN { printf "%.*f", p, (b > 0 ? a / b : 0) }'; }
sleep_until() {
    local d
    d=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
    sleep "$d"
}
# threads PID: one line per thread of PID: `TID COMM RUN_NS WAIT_NS SLICES` (schedstat: time on
# a CPU, time runnable but waiting for one).
threads() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s %s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null || echo gone)" \
            "$(cat "$t/schedstat" 2>/dev/null || echo 0 0 0)"
    done
}
# thread_deltas BEFORE AFTER SECONDS: CPU and run-queue wait of the proxy's threads between two
# `threads` snapshots, in cores (seconds per second), by kind: the API thread, the embedded
# broker, the workers, and all threads' wait together.
thread_deltas() {
    awk -v s="$3" 'FNR == NR { r[$1] = $3; w[$1] = $4; next }
        { k = $2 == "hermod-api" ? "api" : $2 == "hermod-broker" ? "broker" : \
              $2 ~ /^hermod-worker/ ? "worker" : "other"
          dr = ($1 in r) ? $3 - r[$1] : $3; dw = ($1 in w) ? $4 - w[$1] : $4
          cpu[k] += dr; wait[k] += dw; all += dw }
        END { printf "api_cpu=%.2f\tbroker_cpu=%.2f\tworker_cpu=%.2f\tapi_wait=%.2f\tbroker_wait=%.2f\tworker_wait=%.2f\tproxy_wait=%.2f",
              cpu["api"] / s / 1e9, cpu["broker"] / s / 1e9, cpu["worker"] / s / 1e9,
              wait["api"] / s / 1e9, wait["broker"] / s / 1e9, wait["worker"] / s / 1e9,
              all / s / 1e9 }' "$1" "$2"
}
# metric NAME...: the sum of these counters on the proxy's /metrics (every label set).
metric() {
    curl -fsS "http://$ADMIN_ADDR/metrics" | awk -v names=" $* " '
        { n = $1; sub(/\{.*/, "", n) }
        !/^#/ && index(names, " " n " ") { s += $NF }
        END { printf "%d", s }'
}
# field LINE NAME: the value of NAME=... in a `key=value` line.
field() { tr ' \t' '\n\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }

# The fan-out receiver: MEMBERS raw WebSocket connections (`/ws?user=PREFIXi`, `--auth none`),
# each joined to ROOM; then one epoll loop reads everything and counts the `{"op":"msg"`
# frames (a substring count over what each socket read, its tail kept for frames split between
# reads: cheap enough that the receiver is not the bottleneck it would be with a WebSocket
# library parsing every frame). SIGUSR1 prints `mark UNIX_TIME MESSAGES CLOSED`; it pings
# every connection every 15 s so the server never finds it idle.
receiver=$work/receiver.py
cat >"$receiver" <<'PY'
import base64, os, selectors, signal, socket, sys, time

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
members, room, prefix = int(sys.argv[2]), sys.argv[3], sys.argv[4]
tick = float(sys.argv[5]) / 1000
PAT = b'{"op":"msg"'
KEEP = len(PAT) - 1


def masked(opcode, payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


join = masked(1, ('{"op":"join","room":"%s"}' % room).encode())
ping = masked(9, b"")
t0 = time.time()
conns = []
for i in range(members):
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    k = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?user={prefix}{i} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {k}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            sys.exit(f"receiver: connection {i} closed during its handshake")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(f"receiver: connection {i} answered {head.splitlines()[0]!r}")
    s.sendall(join)
    conns.append([s, rest])
for i, c in enumerate(conns):
    while b'"op":"joined"' not in c[1]:
        d = c[0].recv(4096)
        if not d:
            sys.exit(f"receiver: connection {i} closed before its join was answered")
        c[1] += d

want_mark = stop = False


def on_usr1(*_):
    global want_mark
    want_mark = True


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGTERM, on_term)
sel = selectors.DefaultSelector()
for s, _ in conns:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, [b""])
print(f"ready {len(conns)} {time.time() - t0:.2f}", flush=True)
total = closed = 0
next_ping = time.monotonic() + 15
while not stop:
    # Read at ticks: sleeping between passes lets frames pile up in the kernel's buffers, so
    # one recv takes many of them (the proxy's writes are not held up: the sockets' buffers
    # take them).
    time.sleep(tick)
    for key, _ in sel.select(0.2):
        s = key.fileobj
        try:
            data = s.recv(1 << 18)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            closed += 1
            sel.unregister(s)
            s.close()
            continue
        buf = key.data[0] + data
        total += buf.count(PAT)
        key.data[0] = buf[-KEEP:]
    if want_mark:
        want_mark = False
        print(f"mark {time.time():.3f} {total} {closed}", flush=True)
    if time.monotonic() >= next_ping:
        next_ping += 15
        for key in list(sel.get_map().values()):
            try:
                key.fileobj.send(ping)
            except OSError:
                pass
print(f"mark {time.time():.3f} {total} {closed}", flush=True)
PY

# start_proxy LOG: sets PROXY_PID, API_ADDR and ADMIN_ADDR from the ready line.
start_proxy() {
    "$proxy" --workers "$workers" --auth none --log warn \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --api-listen 127.0.0.1:0 --api-key "$key" \
        --max-connections-per-ip 0 --max-connects-per-ip-per-sec 0 2>"$1" &
    PROXY_PID=$!
    started+=("$PROXY_PID")
    local i line
    for i in $(seq 200); do
        line=$(grep -m1 'listening client=' "$1" || true)
        if [ -n "$line" ]; then
            CLIENT_ADDR=$(field "$line" client)
            ADMIN_ADDR=$(field "$line" admin)
            API_ADDR=$(field "$line" api)
            return 0
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "api.sh: the proxy did not print its ready line (see $1)" >&2
    exit 1
}

stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

# mark: asks the receiver for its counts; prints `UNIX_TIME MESSAGES CLOSED`.
mark() {
    local n i
    n=$(grep -c '^mark ' "$RECV_LOG" || true)
    kill -USR1 "$RECV_PID"
    for i in $(seq 500); do
        if [ "$(grep -c '^mark ' "$RECV_LOG" || true)" -gt "$n" ]; then
            grep '^mark ' "$RECV_LOG" | tail -1 | cut -d' ' -f2-
            return 0
        fi
        sleep 0.02
    done
    echo "api.sh: the receiver did not answer (see $RECV_LOG)" >&2
    exit 1
}

# run_wrk TAG CONNS [DELAY_MS]: wrk against the API for $duration s, each connection waiting
# DELAY_MS before each request (0: none, a closed loop). Sets WRK_LINE (its API_RESULT line),
# PROXY_TICKS0 (the proxy's CPU just before launch), and the CPU of wrk, the proxy and the
# receiver (if any) over the same window, launch to 0.3 s before wrk's end (wrk exits as soon
# as it is done, so its /proc entry cannot be read at the very end): WRK_WIN, PROXY_WIN, RECV_WIN;
# and THREADS, the proxy's threads over that window (see thread_deltas).
run_wrk() {
    local tag=$1 c=$2 d=${3:-0} t0 w0=0 p0 r0=0 w1 p1 r1=0 pid
    threads "$PROXY_PID" >"$work/$tag.threads0"
    PROXY_TICKS0=$(cpu_ticks "$PROXY_PID")
    [ -n "${RECV_PID:-}" ] && r0=$(cpu_ticks "$RECV_PID")
    t0=$(now)
    HERMOD_API_KEY=$key HERMOD_API_ROOM=bench HERMOD_API_DELAY_MS=$d \
        wrk -t1 -c"$c" -d"${duration}s" -s "$lua" "http://$API_ADDR" >"$work/$tag.wrk" 2>&1 &
    pid=$!
    started+=("$pid")
    p0=$PROXY_TICKS0
    sleep_until "$(calc "$t0 + $duration - 0.3" 3)"
    w1=$(cpu_ticks "$pid") p1=$(cpu_ticks "$PROXY_PID")
    [ -n "${RECV_PID:-}" ] && r1=$(cpu_ticks "$RECV_PID")
    threads "$PROXY_PID" >"$work/$tag.threads1"
    THREADS=$(thread_deltas "$work/$tag.threads0" "$work/$tag.threads1" "$(calc "$(now) - $t0" 3)")
    if ! wait "$pid"; then
        echo "api.sh: wrk failed (see $work/$tag.wrk)" >&2
        exit 1
    fi
    WRK_LINE=$(grep -m1 '^API_RESULT ' "$work/$tag.wrk" || true)
    if [ -z "$WRK_LINE" ]; then
        echo "api.sh: wrk printed no result (see $work/$tag.wrk)" >&2
        exit 1
    fi
    WRK_WIN=$((w1 - w0)) PROXY_WIN=$((p1 - p0)) RECV_WIN=$((r1 - r0))
}

# publish_run CONNS REPEAT: wrk -cCONNS against a fresh proxy, nobody in the room.
publish_run() {
    local c=$1 r=$2 tag=publish-c$1-$2 la0 m0 e0 m1 e1 p1 calls socket_errors t0 t1
    la0=$(loadavg)
    RECV_PID=
    start_proxy "$work/$tag.proxy.log"
    sleep 0.5
    m0=$(metric hermod_api_calls_total)
    e0=$(metric hermod_api_refused_total hermod_api_unauthorized_total)
    t0=$(now)
    run_wrk "$tag" "$c"
    t1=$(now)
    p1=$(cpu_ticks "$PROXY_PID")
    m1=$(metric hermod_api_calls_total)
    e1=$(metric hermod_api_refused_total hermod_api_unauthorized_total)
    stop_proxy
    calls=$((m1 - m0))
    socket_errors=$(($(field "$WRK_LINE" connect_errors) + $(field "$WRK_LINE" read_errors) \
        + $(field "$WRK_LINE" write_errors) + $(field "$WRK_LINE" timeouts)))
    printf 'publish\tc%s\t%s\trps=%s\tp50_us=%s\tp99_us=%s\tnon2xx=%s\tproxy_refused=%s\tsocket_errors=%s\tcalls=%s\tproxy_cpu_s_per_1k=%s\tproxy_cores=%s\twrk_over_proxy=%s\t%s\tload=%s..%s\n' \
        "$c" "$r" "$(calc "$(field "$WRK_LINE" rps)" 0)" "$(field "$WRK_LINE" p50_us)" \
        "$(field "$WRK_LINE" p99_us)" "$(field "$WRK_LINE" status_errors)" "$((e1 - e0))" \
        "$socket_errors" "$calls" \
        "$(ratio "$(calc "($p1 - $PROXY_TICKS0) / $tck * 1000" 4)" "$calls" 4)" \
        "$(calc "($p1 - $PROXY_TICKS0) / $tck / ($t1 - $t0)")" \
        "$(ratio "$WRK_WIN" "$PROXY_WIN")" "$THREADS" "$la0" "$(loadavg)" | tee -a "$results"
}

# fanout_run DELAY_MS REPEAT: wrk -c$fanout_c, each connection waiting DELAY_MS before each
# request, against a fresh proxy with $members members in the room.
fanout_run() {
    local d=$1 r=$2 tag=fanout-d$1-$2 la0 m0 e0 s0 m1 e1 s1 p1 a b c prev i calls socket_errors
    local t0 t1 delivered closed expected
    la0=$(loadavg)
    start_proxy "$work/$tag.proxy.log"
    RECV_LOG=$work/$tag.receiver.log
    : >"$RECV_LOG"
    python3 -u "$receiver" "$CLIENT_ADDR" "$members" bench m "$tick" >>"$RECV_LOG" 2>&1 &
    RECV_PID=$!
    started+=("$RECV_PID")
    for i in $(seq 1200); do
        grep -q '^ready ' "$RECV_LOG" && break
        if ! kill -0 "$RECV_PID" 2>/dev/null; then
            echo "api.sh: the receiver failed (see $RECV_LOG)" >&2
            exit 1
        fi
        sleep 0.05
    done
    grep -q "^ready $members " "$RECV_LOG" || { echo "api.sh: the receiver is not ready (see $RECV_LOG)" >&2; exit 1; }
    sleep 0.5
    m0=$(metric hermod_api_calls_total)
    e0=$(metric hermod_api_refused_total hermod_api_unauthorized_total)
    s0=$(metric hermod_slow_consumer_closes_total)
    a=$(mark)
    t0=$(now)
    run_wrk "$tag" "$fanout_c" "$d"
    b=$(mark)
    m1=$(metric hermod_api_calls_total)
    calls=$((m1 - m0))
    # The drain: until every member has every call's message, or 2 s without a new delivery
    # (at most 60 s).
    prev=-1 i=0
    while :; do
        sleep 0.5
        c=$(mark)
        delivered=$(cut -d' ' -f2 <<<"$c")
        [ "$delivered" -ge $((calls * members)) ] && break
        if [ "$delivered" = "$prev" ]; then i=$((i + 1)); else i=0; fi
        [ $i -ge 4 ] && break
        prev=$delivered
        awk -v t="$(now)" -v s="$t0" -v d="$duration" 'BEGIN { exit !(t > s + d + 60) }' && break
    done
    t1=$(now)
    p1=$(cpu_ticks "$PROXY_PID")
    e1=$(metric hermod_api_refused_total hermod_api_unauthorized_total)
    s1=$(metric hermod_slow_consumer_closes_total)
    kill -TERM "$RECV_PID" 2>/dev/null || true
    wait "$RECV_PID" 2>/dev/null || true
    RECV_PID=
    stop_proxy
    closed=$(cut -d' ' -f3 <<<"$c")
    expected=$((calls * members))
    socket_errors=$(($(field "$WRK_LINE" connect_errors) + $(field "$WRK_LINE" read_errors) \
        + $(field "$WRK_LINE" write_errors) + $(field "$WRK_LINE" timeouts)))
    printf 'fanout\td%s\t%s\trps=%s\tdeliveries_per_s=%s\tdelivered_pct=%s\tslow_consumer_closes=%s\treceiver_closed=%s\tp50_us=%s\tp99_us=%s\tnon2xx=%s\tproxy_refused=%s\tsocket_errors=%s\tcalls=%s\tproxy_cpu_s_per_1k=%s\tproxy_cores=%s\twrk_over_proxy=%s\treceiver_over_proxy=%s\t%s\tload=%s..%s\n' \
        "$d" "$r" "$(calc "$(field "$WRK_LINE" rps)" 0)" \
        "$(calc "($(cut -d' ' -f2 <<<"$b") - $(cut -d' ' -f2 <<<"$a")) / ($(cut -d' ' -f1 <<<"$b") - $(cut -d' ' -f1 <<<"$a"))" 0)" \
        "$(calc "100 * $delivered / ($expected > 0 ? $expected : 1)" 3)" "$((s1 - s0))" "$closed" \
        "$(field "$WRK_LINE" p50_us)" "$(field "$WRK_LINE" p99_us)" \
        "$(field "$WRK_LINE" status_errors)" "$((e1 - e0))" "$socket_errors" "$calls" \
        "$(ratio "$(calc "($p1 - $PROXY_TICKS0) / $tck * 1000" 4)" "$calls" 4)" \
        "$(calc "($p1 - $PROXY_TICKS0) / $tck / ($t1 - $t0)")" \
        "$(ratio "$WRK_WIN" "$PROXY_WIN")" "$(ratio "$RECV_WIN" "$PROXY_WIN")" "$THREADS" \
        "$la0" "$(loadavg)" | tee -a "$results"
}

# values KIND NAME FIELD: FIELD of every results line of that kind and name, one a line.
values() {
    awk -F'\t' -v k="$1" -v n="$2" -v f="$3=" '$1 == k && $2 == n {
        for (i = 4; i <= NF; i++) if (index($i, f) == 1) print substr($i, length(f) + 1) }' \
        "$results"
}
# med KIND NAME FIELD: `median (min-max)` of FIELD over the repeats (just the value if one).
med() {
    values "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        if (NR == 1 || v[1] == v[NR]) print m; else printf "%s (%s-%s)\n", m, v[1], v[NR] }'
}
# total KIND NAME FIELD: the sum of FIELD over the repeats.
total() { values "$@" | awk '{ s += $1 } END { printf "%d", s }'; }

IFS=, read -r -a conns <<<"$connections"
IFS=, read -r -a fdelays <<<"$delays"
points=()
if [ "$only" != fanout ]; then for c in "${conns[@]}"; do points+=("c$c"); done; fi
if [ "$only" != publish ]; then for d in "${fdelays[@]}"; do points+=("d$d"); done; fi

: >"$results"
started_at=$(date -u +%FT%TZ)
echo "api.sh: $started_at nproc=$(nproc) kernel=$(uname -r) load=$(loadavg)" >&2
for r in $(seq 0 $((repeats - 1))); do
    # Rotate the order of the points from repeat to repeat.
    n=${#points[@]}
    for k in $(seq 0 $((n - 1))); do
        p=${points[$(((k + r) % n))]}
        case "$p" in
            d*) fanout_run "${p#d}" "$r" ;;
            c*) publish_run "${p#c}" "$r" ;;
        esac
    done
done

bad=$(awk -F'\t' '{ for (i = 4; i <= NF; i++) if ($i ~ /^(non2xx|proxy_refused|socket_errors|slow_consumer_closes|receiver_closed)=/ && $i !~ /=0$/) print }' "$results")
[ -n "$bad" ] && echo "api.sh: some runs had errors, closes or non-2xx answers (see $results)" >&2

{
    echo "Server API, $started_at, $(nproc) CPUs, Linux $(uname -r), hermod-proxy --workers $workers;"
    echo "wrk -t1 for ${duration} s per run; median (min-max) of $repeats repeat(s), a fresh proxy each."
    echo "Load average before/after each run: $(awk -F'\t' '{ print $NF }' "$results" | sed 's/^load=//' | tr '\n' ' ')"
    if [ "$only" != fanout ]; then
        echo
        echo "| wrk -c | calls/s | p50 µs | p99 µs | non-2xx (all runs) | socket errors (all runs) | proxy CPU s per 1,000 calls | proxy cores busy | wrk CPU / proxy CPU | API thread cores | broker thread cores | proxy threads waiting for a CPU |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for c in "${conns[@]}"; do
            echo "| $c | $(med publish "c$c" rps) | $(med publish "c$c" p50_us) | $(med publish "c$c" p99_us) | $(total publish "c$c" non2xx) | $(total publish "c$c" socket_errors) | $(med publish "c$c" proxy_cpu_s_per_1k) | $(med publish "c$c" proxy_cores) | $(med publish "c$c" wrk_over_proxy) | $(med publish "c$c" api_cpu) | $(med publish "c$c" broker_cpu) | $(med publish "c$c" proxy_wait) |"
        done
    fi
    if [ "$only" != publish ]; then
        echo
        echo "Fan-out: $members members in the room (one Python receiver, reading every ${tick} ms), wrk -t1 -c$fanout_c, each connection waiting the delay before each request."
        echo
        echo "| delay ms | calls/s | deliveries/s (while wrk runs) | delivered after drain, % of calls x members | slow-consumer closes (all runs) | p50 µs | p99 µs | non-2xx (all runs) | proxy CPU s per 1,000 calls (incl. drain) | proxy cores busy | receiver CPU / proxy CPU | wrk CPU / proxy CPU | worker thread cores | proxy threads waiting for a CPU |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for d in "${fdelays[@]}"; do
            n=d$d
            echo "| $d | $(med fanout "$n" rps) | $(med fanout "$n" deliveries_per_s) | $(med fanout "$n" delivered_pct) | $(total fanout "$n" slow_consumer_closes) | $(med fanout "$n" p50_us) | $(med fanout "$n" p99_us) | $(total fanout "$n" non2xx) | $(med fanout "$n" proxy_cpu_s_per_1k) | $(med fanout "$n" proxy_cores) | $(med fanout "$n" receiver_over_proxy) | $(med fanout "$n" wrk_over_proxy) | $(med fanout "$n" worker_cpu) | $(med fanout "$n" proxy_wait) |"
        done
    fi
    echo
    echo "Command: benches/api.sh $args_typed"
} | tee "$out/summary.md"
