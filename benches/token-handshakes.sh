#!/usr/bin/env bash
# Handshake cost per token algorithm (issue 12), loopback only: one `hermod-proxy --workers 1`
# per algorithm (HS256 with --jwt-secret; RS256 and ES256 with --jwt-public-key, keys made by
# Python `cryptography`, tokens by PyJWT), churned by `hermod-loadgen connect --churn` at RATE
# new connections per second (connect, upgrade with ?token=, one text message, the welcome
# back, close) for DURATION seconds. Reports, per algorithm: cycles completed per second,
# connect failures, the time to connect and upgrade (p50, p99), and the proxy's CPU (utime + stime from
# /proc/PID/stat over the run) per handshake.
#
#   benches/token-handshakes.sh [--no-build] [--rate 1000] [--duration 10] [--out DIR]
#
# Needs python3 with pyjwt and cryptography. Results: target/bench/token-handshakes/.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1 rate=1000 duration=10 out=target/bench/token-handshakes
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --rate) rate=$2; shift ;;
        --duration) duration=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "token-handshakes.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$build" = 1 ] && cargo build --release --locked -p hermod-proxy -p hermod-loadgen
proxy=target/release/hermod-proxy loadgen=target/release/hermod-loadgen
tool=proxy/tests/python/jwt_tool.py
mkdir -p "$out" && keys=$out/keys && rm -rf "$keys" && python3 "$tool" keys "$keys"
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
tck=$(getconf CLK_TCK)

pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; true; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf 'alg\tcycles_per_s\tconnect_failures\tconnect_p50_us\tconnect_p99_us\tproxy_cpu_us_per_handshake\n' | tee "$out/results.tsv"
for alg in HS256 RS256 ES256; do
    claims=$(printf '{"sub":"bench","exp":%d,"iat":%d}' $(( $(date +%s) + 3600 )) "$(date +%s)")
    case $alg in
        HS256) flags=(); token=$(python3 "$tool" mint HS256 "$secret" "$claims") ;;
        RS256) flags=(--jwt-public-key "$keys/rsa1.pub"); token=$(python3 "$tool" mint RS256 "$keys/rsa1.pem" "$claims") ;;
        ES256) flags=(--jwt-public-key "$keys/ec1.pub"); token=$(python3 "$tool" mint ES256 "$keys/ec1.pem" "$claims") ;;
    esac
    log=$out/proxy-$alg.log
    "$proxy" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 1 --jwt-secret "$secret" \
        "${flags[@]}" --max-sessions-per-user 0 --max-connects-per-ip-per-sec 0 \
        --max-connections-per-ip 0 2>"$log" &
    pid=$!
    for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
    addr=$(grep -o 'client=[0-9.:]*' "$log" | cut -d= -f2)
    before=$(cpu_ticks "$pid")
    "$loadgen" connect --churn --url "ws://$addr/ws?token=$token" --rate "$rate" \
        --duration "$duration" --warmup 1 --connections 500 --json "$out/$alg.json" \
        >"$out/loadgen-$alg.txt" 2>&1
    after=$(cpu_ticks "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    python3 - "$out/$alg.json" "$alg" "$before" "$after" "$tck" <<'PY' | tee -a "$out/results.tsv"
import json, sys
path, alg, before, after, tck = sys.argv[1:]
r = json.load(open(path))
# The proxy's CPU covers warm-up and measured window: divide by every connection made.
cpu_us = (int(after) - int(before)) / int(tck) * 1e6
per = cpu_us / r["connected"] if r["connected"] else float("nan")
c = r["connect_us"]
print(f"{alg}\t{r['achieved_rate']:.0f}\t{r['connect_failures']}\t{c['p50']}\t{c['p99']}\t{per:.0f}")
PY
done
