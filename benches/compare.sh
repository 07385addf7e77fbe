#!/usr/bin/env bash
# Hermod against nginx and HAProxy as WebSocket proxies: one command, loopback only.
#
#   benches/compare.sh [--quick] [--no-build] [options of benches/compare/compare.py]
#
# Builds the release binaries, installs nginx and HAProxy from the distribution when missing,
# then runs benches/compare/compare.py (Python 3 standard library only), which starts every
# process it needs on 127.0.0.1 ephemeral ports, stops them all when it ends (also on Ctrl-C),
# and writes target/bench/compare.md, compare.json and latency.svg.
set -euo pipefail

cd "$(dirname "$0")/.."

build=1
args=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) exec python3 -B benches/compare/compare.py --help ;;
        *) args+=("$a") ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# nginx and HAProxy from the distribution's packages (Debian: nginx 1.22, haproxy 2.6). The
# packages' own services must not start (they would listen on port 80 of every interface):
# a policy-rc.d that forbids it is put in place for the install when none exists.
install_servers() {
    local missing=()
    [ -x /usr/sbin/nginx ] || missing+=(nginx)
    [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "compare.sh: installing ${missing[*]} with apt-get" >&2
    local policy=/usr/sbin/policy-rc.d placed=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        placed=1
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" || { [ $placed -eq 1 ] && as_root rm -f "$policy"; exit 1; }
    [ $placed -eq 1 ] && as_root rm -f "$policy"
    return 0
}

install_servers
command -v taskset >/dev/null || echo "compare.sh: taskset missing (only needed for --pin)" >&2

if [ $build -eq 1 ]; then
    cargo build --release -p hermod-proxy -p hermod-loadgen
fi

# The command as typed, for the report.
export HERMOD_COMPARE_COMMAND="benches/compare.sh $*"
exec python3 -B benches/compare/compare.py "${args[@]}"
