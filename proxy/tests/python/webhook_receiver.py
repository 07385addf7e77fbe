#!/usr/bin/env python3
"""A webhook receiver for proxy/tests/webhooks.rs, on Python's http.server (code no one on this
project wrote), as docs/api.md tells a backend to write one.

    webhook_receiver.py SECRET FAIL_FIRST MODE

Listens on 127.0.0.1 (an ephemeral port, printed as `port N` on stdout). Every POST /hook is
checked as docs/api.md says: X-Hermod-Signature must be `sha256=` and the hex HMAC-SHA256, under
SECRET, of X-Hermod-Timestamp, a dot and the body (compared with hmac.compare_digest), and the
timestamp within 5 minutes of now; a bad one is answered 401 and counted. MODE `ok`: the first
FAIL_FIRST signed batches are answered 500, the rest 200 and recorded. MODE `hang`: every POST
is held 30 s without an answer.

GET /state answers {"accepted":[batch, ...], "refused":N, "bad":N, "posts":N}: the accepted
batches' parsed bodies in the order they were accepted.
"""

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = sys.argv[1].encode()
FAIL_FIRST = int(sys.argv[2])
MODE = sys.argv[3]

lock = threading.Lock()
state = {"accepted": [], "refused": 0, "bad": 0, "posts": 0}


def verify(headers, body):
    """The check a backend makes: the signature over "{ts}.{body}", and a fresh timestamp."""
    ts = headers.get("X-Hermod-Timestamp", "")
    sig = headers.get("X-Hermod-Signature", "")
    expected = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig):
        return False
    return ts.isdigit() and abs(time.time() - int(ts)) <= 300


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if MODE == "hang":
            with lock:
                state["posts"] += 1
            time.sleep(30)
            return
        with lock:
            state["posts"] += 1
            if self.path != "/hook" or not verify(self.headers, body):
                state["bad"] += 1
                status = 401
            elif state["refused"] < FAIL_FIRST:
                state["refused"] += 1
                status = 500
            else:
                state["accepted"].append(json.loads(body))
                status = 200
        self.answer(status)

    def do_GET(self):
        with lock:
            body = json.dumps(state).encode()
        self.answer(200, body)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
