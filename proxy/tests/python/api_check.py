#!/usr/bin/env python3
"""The server API judged by tools no one on this project wrote.

Usage: api_check.py API_HOST:PORT WS_HOST:PORT KEY SECRET OPENAPI_FILE

1. Python's `http.client` and `websockets`: a backend publishes to a room with an idempotency
   key, retries it, and a joined WebSocket client sees one message (by id) marked
   `"server": true`.
2. schemathesis (property-based, from the OpenAPI document in docs/): positive and negative
   examples of every operation; no server error, and every answer conforms to the schema
   (status, content type, headers, body), refuses invalid input and needs the key.

Prints `ok` and exits 0, or prints what went wrong and exits 1. Exit 3 when a dependency is
missing.
"""

import http.client
import json
import shutil
import subprocess
import sys

try:
    from websockets.sync.client import connect
except ImportError as exc:
    print(f"python package `websockets` is missing: {exc}; pip install websockets")
    sys.exit(3)

from hs256 import TIMEOUT, mint, recv  # noqa: E402 - after the dependency check

EXAMPLES = "40"


def call(api, key, method, path, body=None):
    host, port = api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    data = None if body is None else json.dumps(body)
    conn.request(method, path, body=data,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    conn.close()
    return resp.status, answer


def publish_once(api, ws_addr, key, secret):
    ws = connect(f"ws://{ws_addr}/ws?token={mint(secret, 'pyreader', rooms=['py-room'])[0]}",
                 open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    recv(ws, "welcome")
    ws.send(json.dumps({"op": "join", "room": "py-room"}))
    recv(ws, "joined")
    body = {"room": "py-room", "data": {"n": 1}, "idempotency_key": "py-1"}
    status, first = call(api, key, "POST", "/api/publish", body)
    if status != 200:
        raise AssertionError(f"publish answered {status}: {first}")
    status, again = call(api, key, "POST", "/api/publish", body)
    if status != 200 or again != first:
        raise AssertionError(f"the retry answered {status} {again}, not {first}")
    msg = recv(ws, "msg")
    if msg.get("id") != first["id"] or msg.get("server") is not True or "from" in msg:
        raise AssertionError(f"not the server's message {first['id']}: {msg}")
    ws.close()


def schemathesis(api, key, spec, *selection):
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        print("schemathesis is missing: pip install schemathesis")
        sys.exit(3)
    run = subprocess.run(
        [exe, "run", spec, "--base-url", f"http://{api}",
         "-H", f"Authorization: Bearer {key}", "--checks", "all",
         "--hypothesis-max-examples", EXAMPLES, "--hypothesis-derandomize",
         "--request-timeout", "10000", "--no-color", *selection],
        capture_output=True, text=True, timeout=40, check=False)
    print(run.stdout[-3000:])
    if run.returncode != 0:
        print(run.stderr[-2000:])
        raise AssertionError(f"schemathesis failed with exit code {run.returncode}")


def main():
    api, ws_addr, key, secret, spec = sys.argv[1:6]
    publish_once(api, ws_addr, key, secret)
    # Valid and invalid examples of the POST operations; valid ones only of the GETs, whose
    # parameters are query strings: a "negative" example that makes `room` the integer 0 is sent
    # as `room=0`, a valid room name, and schemathesis would flag its 200 as accepting invalid
    # data.
    schemathesis(api, key, spec, "--data-generation-method", "all", "--include-method", "POST")
    schemathesis(api, key, spec, "--data-generation-method", "positive",
                 "--include-method", "GET")
    print("ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        sys.exit(1)
