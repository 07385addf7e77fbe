#!/usr/bin/env python3
"""Broker RSS growth while an unauthenticated peer sends 64 MiB frames (issue 11, item 2).

Starts redis-server and hermod-broker (with --link-secret) on loopback, opens one authenticated
link that keeps sending PINGs (a gateway's heartbeat) throughout, then, from raw sockets that
never authenticate, sends each attack frame: one RESP array of 64 MiB of nulls, arrays nested
16 Mi deep, and a 64 MiB bulk string. For each it records how many bytes the kernel accepted
before the broker closed the socket, the broker's RSS before and after, and whether the
authenticated link answered every PING. Prints a Markdown table.

Usage: benches/hardening/link-flood-rss.py [--broker PATH]   (default target/release/hermod-broker)
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

FRAME = 64 << 20
SECRET = "bench-link-secret-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def read_reply(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("link closed")
        data += chunk
    return data


def flood(port, header, unit):
    """Sends header + unit* up to 64 MiB until the broker closes; (bytes accepted, seconds)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    chunk = unit * ((64 << 10) // len(unit))
    sent = 0
    start = time.monotonic()
    try:
        s.sendall(header)
        sent = len(header)
        while sent < FRAME:
            sent += s.send(chunk)
    except OSError:
        pass
    # Wait for the close (EOF or reset) if the kernel took everything.
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    elapsed = time.monotonic() - start
    s.close()
    return sent, elapsed


class Heartbeat(threading.Thread):
    """An authenticated link sending PING every 10 ms, counting answers."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.sock.sendall(resp("AUTH", "hermod", SECRET))
        assert read_reply(self.sock) == b"+OK\r\n"
        self.sent = self.answered = 0
        self.stop = False
        self.error = None

    def run(self):
        try:
            while not self.stop:
                self.sock.sendall(resp("PING"))
                self.sent += 1
                if read_reply(self.sock) == b"+PONG\r\n":
                    self.answered += 1
                time.sleep(0.01)
        except Exception as e:  # noqa: BLE001 - reported in the table
            self.error = e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", default="target/release/hermod-broker")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hermod-link-flood-")
    rport = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    broker = None
    try:
        time.sleep(0.5)
        env = dict(os.environ, HERMOD_LINK_SECRET=SECRET)
        broker = subprocess.Popen(
            [args.broker, "--listen", "127.0.0.1:0", "--redis", f"redis://127.0.0.1:{rport}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = None
        for line in broker.stderr:
            m = re.search(r"listening link=127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        threading.Thread(target=lambda: [None for _ in broker.stderr], daemon=True).start()
        beat = Heartbeat(port)
        beat.start()
        time.sleep(1.0)
        n = FRAME // 3
        attacks = [
            ("array of 64 MiB of nulls (`*22369621` + `_\\r\\n`...)", b"*%d\r\n" % n, b"_\r\n"),
            ("arrays nested 16 Mi deep (`*1\\r\\n`...)", b"*1\r\n", b"*1\r\n"),
            ("one 64 MiB bulk (`$67108864`)", b"*2\r\n$4\r\nPING\r\n$%d\r\n" % FRAME, b"x"),
        ]
        start_rss = rss_kib(broker.pid)
        print(f"broker {args.broker}, pid {broker.pid}, RSS at start {start_rss} KiB\n")
        print("| unauthenticated peer sends | bytes taken before close | closed after | "
              "broker RSS before | after | growth |")
        print("|---|---|---|---|---|---|")
        for name, header, unit in attacks:
            before = rss_kib(broker.pid)
            sent, secs = flood(port, header, unit)
            time.sleep(0.3)
            after = rss_kib(broker.pid)
            print(f"| {name} | {sent:,} | {secs * 1000:.0f} ms | {before:,} KiB | "
                  f"{after:,} KiB | {after - before:+,} KiB |")
        end_rss = rss_kib(broker.pid)
        beat.stop = True
        beat.join(5)
        print(f"\nTotal growth over the three attacks: {end_rss - start_rss:+,} KiB. "
              f"Authenticated link: {beat.answered}/{beat.sent} PINGs answered"
              + (f", error: {beat.error}" if beat.error else "") + ".")
    finally:
        if broker:
            broker.kill()
            broker.wait()
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    sys.exit(main())
