#!/usr/bin/env python3
"""Room permissions and token refresh with the Python `websockets` client.

Usage: grants_check.py HOST:PORT SECRET

Mints its own HS256 tokens with the standard library (room grants in `rooms`/`publish`), then:
a join and a publish without a grant are `forbidden` naming the room, with a grant they work;
a short token is warned (`expiring`), refreshed (`refreshed`), and the session outlives the
first token; a token left to expire closes the session with code 4001, and a reconnect with a
new token gets what was sent meanwhile. Prints `ok` and exits 0, or what went wrong and exits 1.
Exit 3 when the `websockets` package is missing.
"""

import json
import sys
import time

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
except ImportError as exc:  # the Rust test turns this into a clear failure
    print(f"python package `websockets` (>= 11) is missing: {exc}; pip install websockets")
    sys.exit(3)

from hs256 import TIMEOUT, mint, recv  # noqa: E402 - after the dependency check


def open_with(addr, token, user, device="py"):
    ws = connect(f"ws://{addr}/ws?token={token}&device={device}",
                 open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    welcome = recv(ws, "welcome")
    if welcome.get("user") != user:
        raise AssertionError(f"welcome for the wrong identity: {welcome}")
    return ws


def forbidden(ws, room):
    err = recv(ws, "error")
    if err.get("code") != "forbidden" or f"`{room}`" not in err.get("message", ""):
        raise AssertionError(f"expected forbidden naming {room}, got {err}")
    return err


def main():
    addr, secret = sys.argv[1], sys.argv[2]
    granted, _ = mint(secret, "py-alice", 3600, rooms=["py.team.*"], publish=["py.team.*"])
    alice = open_with(addr, granted, "py-alice")
    bare, _ = mint(secret, "py-bob", 3600)
    bob = open_with(addr, bare, "py-bob")

    bob.send(json.dumps({"op": "join", "room": "py.team.1"}))
    forbidden(bob, "py.team.1")
    bob.send(json.dumps({"op": "publish", "room": "py.team.1", "cid": "b1", "data": 1}))
    if forbidden(bob, "py.team.1").get("cid") != "b1":
        raise AssertionError("a refused publish carries its cid")
    alice.send(json.dumps({"op": "join", "room": "py.team.1"}))
    recv(alice, "joined")
    alice.send(json.dumps({"op": "publish", "room": "py.team.1", "cid": "a1", "data": "hi"}))
    frames = sorted([json.loads(alice.recv(timeout=TIMEOUT)) for _ in range(2)],
                    key=lambda f: f["op"])
    if [f["op"] for f in frames] != ["msg", "sent"]:
        raise AssertionError(f"publish with a grant: {frames}")
    alice.close()

    # A 4 s token: warned, refreshed, still open after the first token's expiry.
    short, exp = mint(secret, "py-carol", 4)
    carol = open_with(addr, short, "py-carol")
    warned = recv(carol, "expiring")
    if warned.get("exp") != exp:
        raise AssertionError(f"expiring names the token's exp {exp}: {warned}")
    fresh, new_exp = mint(secret, "py-carol", 3600)
    carol.send(json.dumps({"op": "refresh", "token": fresh}))
    if recv(carol, "refreshed").get("exp") != new_exp:
        raise AssertionError("refreshed names the new exp")
    time.sleep(max(0, exp + 1 - time.time()))
    bob.send(json.dumps({"op": "send", "to": "py-carol", "cid": "b2", "data": "still there?"}))
    recv(bob, "sent")
    if recv(carol, "msg").get("data") != "still there?":
        raise AssertionError("the refreshed session receives")
    carol.close()

    # A 3 s token left to expire: closed 4001; a reconnect gets what was sent meanwhile.
    short, _ = mint(secret, "py-dave", 3)
    dave = open_with(addr, short, "py-dave", "phone")
    recv(dave, "expiring")
    try:
        while True:
            dave.recv(timeout=TIMEOUT)
    except ConnectionClosed as closed:
        if closed.rcvd is None or closed.rcvd.code != 4001:
            raise AssertionError(f"expected close 4001, got {closed.rcvd}")
    except TimeoutError:
        raise AssertionError("the expired session was not closed")
    bob.send(json.dumps({"op": "send", "to": "py-dave", "cid": "b3", "data": "while away"}))
    recv(bob, "sent")
    renewed, _ = mint(secret, "py-dave", 3600)
    dave = open_with(addr, renewed, "py-dave", "phone")
    if recv(dave, "msg").get("data") != "while away":
        raise AssertionError("the message sent while closed is delivered")
    dave.close()
    bob.close()
    print("ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - report anything as a failure line
        print(f"FAILED: {type(exc).__name__}: {exc}")
        sys.exit(1)
