#!/usr/bin/env python3
"""Issue 11, item 4: one authenticated user sends 4,000 messages of 60 KB to made-up user names.

Starts a release `hermod-proxy` (in-memory engine, --auth none) on loopback for each
configuration, runs the flood from one WebSocket client (64 requests in flight), and prints a
Markdown table: answers, the store's accounted bytes (hermod_store_bytes), and the proxy's RSS
growth. Usage, from the repository root after `cargo build --release -p hermod-proxy`:

    python3 benches/hardening/store_flood.py [path/to/hermod-proxy]
"""

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request

import websockets

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/hermod-proxy"
N, SIZE, WINDOW = 4000, 60_000, 64

# Every run turns the per-session rate limits off (`--session-rate 0`): on by default they slow
# one session to 8 MiB/s, and what is measured here is what the store holds.
NO_RATE = ["--session-rate", "0"]
CONFIGS = [
    ("no limit (budget and quota set past the flood)", NO_RATE + ["--memory-budget", str(8 << 30), "--memory-per-user", str(8 << 30)]),
    ("defaults (1 GiB budget, 64 MiB per user)", NO_RATE),
    ("--memory-budget 64 MiB --memory-per-user 8 MiB", NO_RATE + ["--memory-budget", str(64 << 20), "--memory-per-user", str(8 << 20)]),
]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metric(admin, name):
    body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    return float(m.group(1)) if m else float("nan")


def start(extra):
    p = subprocess.Popen(
        [BIN, "--auth", "none", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *extra],
        stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening client=(\S+) admin=(\S+)", line)
        if m:
            return p, m.group(1), m.group(2)
    raise SystemExit("proxy did not start")


async def flood(client):
    data = "x" * SIZE
    sent = refused = other = 0
    async with websockets.connect(f"ws://{client}/ws?user=mallory", max_size=None) as ws:
        await ws.recv()  # welcome
        for start_i in range(0, N, WINDOW):
            for i in range(start_i, min(N, start_i + WINDOW)):
                await ws.send(json.dumps({"op": "send", "to": f"ghost-{i}", "cid": f"c{i}", "data": data}))
            for _ in range(start_i, min(N, start_i + WINDOW)):
                v = json.loads(await ws.recv())
                if v["op"] == "sent":
                    sent += 1
                elif v.get("code") == "unavailable":
                    refused += 1
                else:
                    other += 1
    return sent, refused, other


def main():
    print(f"{N} messages of {SIZE} bytes to {N} made-up users, one sender, {WINDOW} in flight\n")
    print("| configuration | sent | refused `unavailable` | store bytes after | RSS growth | time |")
    print("|---|---|---|---|---|---|")
    for label, extra in CONFIGS:
        p, client, admin = start(extra)
        try:
            time.sleep(0.3)
            before = rss_kib(p.pid)
            t0 = time.monotonic()
            sent, refused, other = asyncio.run(flood(client))
            took = time.monotonic() - t0
            time.sleep(1.5)
            grown = rss_kib(p.pid) - before
            held = metric(admin, "hermod_store_bytes")
            print(f"| {label} | {sent} | {refused} | {held / 2**20:.1f} MiB | {grown / 1024:.1f} MiB | {took:.1f} s |")
        finally:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
