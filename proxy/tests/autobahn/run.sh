#!/usr/bin/env bash
# Autobahn|Testsuite (fuzzingclient, cases 1-10; 12/13 = compression, not offered) against the
# release hermod-proxy's --echo-path. Reports under target/autobahn/reports (open index.html).
# Exits non-zero if any case's behavior is FAILED.
#
# Needs pyenv's Python 2.7.18 (design.md): wstest installs only there. PY2 overrides the path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
HERE="$ROOT/proxy/tests/autobahn"
OUT="$ROOT/target/autobahn"
PYDIR="$OUT/py2"
if [ -z "${PY2:-}" ]; then
    if command -v pyenv >/dev/null 2>&1; then
        PY2="$(pyenv prefix 2.7.18)/bin/python"
    else
        PY2="${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python"
    fi
fi
[ -x "$PY2" ] || { echo "autobahn: Python 2.7.18 not found at $PY2 (pyenv install 2.7.18, or set PY2)"; exit 1; }
mkdir -p "$OUT"
start=$(date +%s)

# 1. wstest, installed into target/ (pip --target: namespace packages need site.addsitedir).
wstest() {
    "$PY2" -c "import site, sys; site.addsitedir('$PYDIR'); sys.argv[0] = 'wstest'; \
from autobahntestsuite.wstest import run; sys.exit(run())" "$@"
}
if ! wstest --help >/dev/null 2>&1; then
    echo "autobahn: installing autobahntestsuite for $PY2 into $PYDIR"
    "$PY2" -m pip install --disable-pip-version-check --quiet --target "$PYDIR" \
        -r "$HERE/requirements-py2.txt"
fi

# 2. The proxy under test: release build, echo endpoint, Autobahn's 16 MiB messages allowed.
(cd "$ROOT" && cargo build --release -p hermod-proxy --quiet)
NO_COLOR=1 "$ROOT/target/release/hermod-proxy" --auth none --echo-path /echo \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --max-message-size 16777216 --max-outbound-bytes 67108864 \
    2>"$OUT/proxy.log" &
proxy_pid=$!
trap 'kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true' EXIT

addr=""
for _ in $(seq 100); do
    addr=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening.*client=\([0-9.]*:[0-9]*\).*/\1/p' \
        "$OUT/proxy.log" | head -n1)
    [ -n "$addr" ] && break
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$OUT/proxy.log"; echo "autobahn: proxy died"; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { cat "$OUT/proxy.log"; echo "autobahn: proxy did not report its address"; exit 1; }

# 3. The fuzzing client.
rm -rf "$OUT/reports"
sed -e "s|@URL@|ws://$addr/echo|" -e "s|@OUTDIR@|$OUT/reports|" \
    "$HERE/fuzzingclient.json" >"$OUT/fuzzingclient.json"
(cd "$OUT" && wstest -m fuzzingclient -s "$OUT/fuzzingclient.json") >"$OUT/wstest.log" 2>&1 || {
    tail -n 30 "$OUT/wstest.log"; echo "autobahn: wstest failed"; exit 1; }

kill -0 "$proxy_pid" 2>/dev/null || { tail -n 30 "$OUT/proxy.log"; echo "autobahn: proxy died during the run"; exit 1; }

# 4. Verdict.
status=0
python3 "$HERE/summarize.py" "$OUT/reports/index.json" || status=$?
echo "autobahn: $(( $(date +%s) - start )) s; report: $OUT/reports/index.html"
exit "$status"
