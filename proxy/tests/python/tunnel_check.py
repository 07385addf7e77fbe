#!/usr/bin/env python3
"""The Python `websockets` client through a hermod-proxy tunnel route (`--route`).

Usage: tunnel_check.py URL

URL is a routed path whose upstream echoes (e.g. ws://127.0.0.1:PORT/t). Sends text and binary
messages of several sizes, expects each echoed unchanged, pings, and closes cleanly (the close
handshake itself crosses the tunnel). Prints `ok` and exits 0, or prints what went wrong and
exits 1. Exit 3 when the `websockets` package is missing.
"""

import sys

try:
    from websockets.sync.client import connect
except ImportError as exc:  # the Rust test turns this into a clear failure
    print(f"python package `websockets` (>= 11) is missing: {exc}; pip install websockets")
    sys.exit(3)

TIMEOUT = 10


def main():
    url = sys.argv[1]
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=2**21) as ws:
        for size in (0, 1, 125, 126, 65535, 65536, 300_000):
            text = ("é" * (size // 2 + 1))[: size // 2] if size else ""
            ws.send(text)
            got = ws.recv(timeout=TIMEOUT)
            if got != text:
                raise AssertionError(f"text of {len(text)} chars came back as {len(got)} chars")
            blob = bytes((i * 7) % 256 for i in range(size))
            ws.send(blob)
            got = ws.recv(timeout=TIMEOUT)
            if got != blob:
                raise AssertionError(f"binary of {size} bytes came back different ({len(got)})")
        ws.ping(b"tunnel").wait(TIMEOUT)
    if ws.close_code != 1000:
        raise AssertionError(f"close code {ws.close_code}")
    print("ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - report anything as a failure line
        print(f"FAILED: {type(exc).__name__}: {exc}")
        sys.exit(1)
