#!/usr/bin/env python3
"""Interop check with the Python `websockets` client (a client no one on this project wrote).

Usage: ws_check.py HOST:PORT SECRET

Mints its own HS256 tokens with the standard library (an implementation independent of
hermod-core's), then: welcome, send, receive, ack, and a reconnect that must not replay the
acked message. Prints `ok` and exits 0, or prints what went wrong and exits 1.
Exit 3 when the `websockets` package is missing.
"""

import json
import sys

try:
    from websockets.sync.client import connect
except ImportError as exc:  # the Rust test turns this into a clear failure
    print(f"python package `websockets` (>= 11) is missing: {exc}; pip install websockets")
    sys.exit(3)

from hs256 import TIMEOUT, mint, recv  # noqa: E402 - after the dependency check


def open_as(addr, secret, user, device="py"):
    ws = connect(f"ws://{addr}/ws?token={mint(secret, user)[0]}&device={device}",
                 open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    welcome = recv(ws, "welcome")
    if welcome.get("user") != user or welcome.get("device") != device:
        raise AssertionError(f"welcome for the wrong identity: {welcome}")
    return ws


def main():
    addr, secret = sys.argv[1], sys.argv[2]
    alice = open_as(addr, secret, "py-alice")
    bob = open_as(addr, secret, "py-bob")

    alice.send(json.dumps({"op": "send", "to": "py-bob", "cid": "py-1", "data": {"hi": "bob"}}))
    sent = recv(alice, "sent")
    assert sent["cid"] == "py-1", sent
    msg = recv(bob, "msg")
    assert msg["id"] == sent["id"] and msg["from"] == "py-alice", msg
    assert msg["data"] == {"hi": "bob"}, msg

    bob.send(json.dumps({"op": "ack", "id": msg["id"]}))
    # Acks have no answer: a round trip on the same session makes sure it was taken.
    bob.send(json.dumps({"op": "send", "to": "py-sink", "cid": "py-barrier", "data": 0}))
    recv(bob, "sent")
    bob.close()

    alice.send(json.dumps({"op": "send", "to": "py-bob", "cid": "py-2", "data": "second"}))
    second = recv(alice, "sent")
    bob = open_as(addr, secret, "py-bob")
    again = recv(bob, "msg")
    if again["id"] != second["id"]:
        raise AssertionError(f"after the ack only the second message is due, got {again}")
    bob.close()
    alice.close()
    print("ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - report anything as a failure line
        print(f"FAILED: {type(exc).__name__}: {exc}")
        sys.exit(1)
