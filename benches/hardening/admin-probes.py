#!/usr/bin/env python3
"""/healthz success rate while idle admin connections are held (issue 11).

Starts `hermod-proxy` on loopback (port 0, `--auth none`), opens N idle connections to its admin
port (half send nothing, half send half a request head and stop), then sends P `/healthz` probes
one after the other, each on a new connection with a 2 s budget (a kubelet-style probe), and
counts the 200s. Prints a Markdown table. Nothing but the Python standard library.

    benches/hardening/admin-probes.py [--proxy PATH ...] [--idle 0,100,300] [--probes 60]

Several --proxy builds (e.g. the previous commit's next to this one's) run one after the other
on the same scenarios.
"""

import argparse
import re
import socket
import statistics
import subprocess
import time

PROBE_BUDGET = 2.0


def start(proxy):
    p = subprocess.Popen(
        [proxy, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--auth", "none",
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stderr.readline()
        m = re.search(r"admin=([0-9.]+):(\d+)", line)
        if m:
            return p, (m.group(1), int(m.group(2)))
    p.kill()
    raise SystemExit(f"{proxy}: no ready line")


def probe(admin):
    """One /healthz probe on a new connection; (ok, seconds)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(admin, timeout=PROBE_BUDGET) as s:
            s.settimeout(max(0.01, PROBE_BUDGET - (time.monotonic() - t0)))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while not data.startswith(b"HTTP/1.1 200") and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200"), time.monotonic() - t0
    except OSError:
        return False, time.monotonic() - t0


def scenario(proxy, idle, probes):
    p, admin = start(proxy)
    held = []
    try:
        for i in range(idle):
            try:
                s = socket.create_connection(admin, timeout=2)
                if i % 2:
                    s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                held.append(s)
            except OSError:
                pass  # a refused idle connection is the server's right
        results = [probe(admin) for _ in range(probes)]
    finally:
        for s in held:
            s.close()
        p.kill()
        p.wait()
    ok = sum(1 for good, _ in results if good)
    times = sorted(t for _, t in results)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return ok, statistics.median(times), p99


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", action="append")
    ap.add_argument("--idle", default="0,100,300")
    ap.add_argument("--probes", type=int, default=60)
    a = ap.parse_args()
    proxies = a.proxy or ["target/release/hermod-proxy"]
    print(f"/healthz probes: {a.probes} per row, one at a time, {PROBE_BUDGET:.0f} s budget each\n")
    print("| build | idle admin connections held | /healthz 200 | success | median | p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    for proxy in proxies:
        for idle in [int(n) for n in a.idle.split(",")]:
            ok, med, p99 = scenario(proxy, idle, a.probes)
            print(f"| {proxy} | {idle} | {ok}/{a.probes} | {100 * ok / a.probes:.0f}% "
                  f"| {med * 1000:.1f} ms | {p99 * 1000:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
