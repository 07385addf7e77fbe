#!/usr/bin/env python3
"""Interop check with a real browser: headless Chromium's own `WebSocket` (code no one on this
project wrote) speaks the client protocol to the proxy.

Usage: browser_check.py HOST:PORT SECRET MAX_MESSAGE_BYTES

Starts `chromium --headless=new` with a fresh profile and `--remote-debugging-port=0`, reads the
DevTools port from the profile's `DevToolsActivePort`, and drives the browser over the Chrome
DevTools Protocol (the `websockets` package is the CDP client) to run one JavaScript program in
an `about:blank` page. The program checks: welcome for two users; a direct message sent, stored
(`sent`), received and acked (a reconnect does not replay it); a room joined by both, published
to and received; and a message larger than MAX_MESSAGE_BYTES closing with code 1009.

Mints its own HS256 tokens with the standard library. Prints `ok` and exits 0, or prints what
went wrong and exits 1. Exit 3 when `chromium` or the `websockets` package is missing. Chromium
is always killed and its profile removed; the whole run is bounded by DEADLINE seconds.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

try:
    from websockets.sync.client import connect
except ImportError as exc:  # the Rust test turns this into a clear failure
    print(f"python package `websockets` (>= 12) is missing: {exc}; pip install websockets")
    sys.exit(3)

# Whole-run bound (the Rust test's own watchdog is longer).
DEADLINE = 25
# Bound for each step inside the page (open, one frame, one close), in milliseconds.
STEP_MS = 8000

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", "--remote-debugging-port=0",
]

# The program run in the page. `%CONFIG%` is replaced by a JSON object with `base` (the ws://
# URL of /ws), `tokens` (user -> JWT), `limit` (the proxy's max message size), `stepMs`, and
# `run` (a nonce in every cid, so a rerun against the same proxy is not answered from dedupe).
PAGE_JS = r"""
(async () => {
  const cfg = %CONFIG%;
  const fail = (what) => { throw new Error(what); };
  const show = (v) => JSON.stringify(v);

  // One client: every text frame parsed into `frames`; `waiters` woken on each frame and close.
  function open(user, device) {
    const url = `${cfg.base}?token=${cfg.tokens[user]}&device=${device}`;
    const c = { user, ws: new WebSocket(url), frames: [], closed: null, problem: null };
    c.waiters = [];
    const wake = () => { for (const w of c.waiters.splice(0)) w(); };
    c.ws.onmessage = (e) => {
      // A throw here would be lost in the event loop: keep it for the next `take` instead.
      try {
        if (typeof e.data !== "string") throw new Error("a binary frame arrived");
        c.frames.push(JSON.parse(e.data));
      } catch (err) {
        c.problem = c.problem || `${user}: ${err.message}: ${show(String(e.data).slice(0, 200))}`;
      }
      wake();
    };
    c.ws.onclose = (e) => { c.closed = { code: e.code, reason: e.reason }; wake(); };
    return new Promise((resolve, reject) => {
      const late = () => reject(new Error(`${user}: not open within ${cfg.stepMs} ms`));
      const timer = setTimeout(late, cfg.stepMs);
      c.ws.onopen = () => { clearTimeout(timer); resolve(c); };
      c.ws.onerror = () => setTimeout(() => {
        clearTimeout(timer);
        const why = `close ${show(c.closed)}; handshake refused?`;
        reject(new Error(`${user}: connection failed (${why})`));
      }, 100);
    });
  }

  // Waits until `check(c)` returns a value other than undefined.
  function until(c, what, check) {
    return new Promise((resolve, reject) => {
      const late = () => reject(new Error(
        `${c.user}: no ${what} within ${cfg.stepMs} ms; frames so far ${show(c.frames)}`));
      const timer = setTimeout(late, cfg.stepMs);
      const poll = () => {
        let v;
        try { v = check(c); } catch (e) { clearTimeout(timer); reject(e); return; }
        if (v !== undefined) { clearTimeout(timer); resolve(v); } else c.waiters.push(poll);
      };
      poll();
    });
  }

  // Takes the first frame with this op (others stay queued; order across ops is not promised).
  function take(c, op, extra = () => true) {
    return until(c, `'${op}' frame`, () => {
      if (c.problem) fail(c.problem);
      const bad = c.frames.find((f) => f.op === "error");
      if (bad) fail(`${c.user}: server answered an error: ${show(bad)}`);
      const i = c.frames.findIndex((f) => f.op === op && extra(f));
      if (i >= 0) return c.frames.splice(i, 1)[0];
      if (c.closed) fail(`${c.user}: closed ${show(c.closed)} while waiting for '${op}'`);
      return undefined;
    });
  }

  const cid = (name) => `${name}-${cfg.run}`;
  const closed = (c) => until(c, "close", () => c.closed || undefined);
  const send = (c, frame) => c.ws.send(JSON.stringify(frame));
  const expect = (cond, what, v) => { if (!cond) fail(`${what}: ${show(v)}`); };

  async function connectAs(user) {
    const c = await open(user, "browser");
    const w = await take(c, "welcome");
    expect(w.user === user && w.device === "browser", `${user}: welcome for the wrong identity`, w);
    return c;
  }

  // Direct message: send -> sent (stored) -> msg -> ack.
  const alice = await connectAs("br-alice");
  let bob = await connectAs("br-bob");
  send(alice, { op: "send", to: "br-bob", cid: cid("br-1"), data: { hi: "bob", n: [1, 2] } });
  const sent = await take(alice, "sent");
  expect(sent.cid === cid("br-1") && typeof sent.id === "string", "alice: bad sent", sent);
  const msg = await take(bob, "msg");
  expect(msg.id === sent.id && msg.from === "br-alice" && msg.to === "br-bob",
    "bob: wrong msg", msg);
  expect(show(msg.data) === show({ hi: "bob", n: [1, 2] }) && typeof msg.ts === "number",
    "bob: msg data or ts not passed through", msg);
  send(bob, { op: "ack", id: msg.id });
  // Acks have no answer: a round trip on the same session makes sure it was taken.
  send(bob, { op: "send", to: "br-sink", cid: cid("br-barrier"), data: 0 });
  await take(bob, "sent", (f) => f.cid === cid("br-barrier"));
  bob.ws.close(1000);
  await closed(bob);

  // The ack held: after a reconnect only the message sent meanwhile is due.
  send(alice, { op: "send", to: "br-bob", cid: cid("br-2"), data: "second" });
  const second = await take(alice, "sent", (f) => f.cid === cid("br-2"));
  bob = await connectAs("br-bob");
  const again = await take(bob, "msg");
  expect(again.id === second.id && again.data === "second", "bob: acked message replayed", again);
  send(bob, { op: "ack", id: again.id });

  // A room: both join, alice publishes, both members (the sender too) receive it.
  for (const c of [alice, bob]) {
    send(c, { op: "join", room: "br-room" });
    const j = await take(c, "joined");
    expect(j.room === "br-room", `${c.user}: joined the wrong room`, j);
  }
  send(alice, { op: "publish", room: "br-room", cid: cid("br-p1"), data: "hello room" });
  const pub = await take(alice, "sent", (f) => f.cid === cid("br-p1"));
  for (const c of [bob, alice]) {
    const m = await take(c, "msg", (f) => f.room === "br-room");
    expect(m.id === pub.id && m.from === "br-alice" && m.data === "hello room",
      `${c.user}: wrong room msg`, m);
  }

  // A message over the limit: the server closes with 1009, and the browser reports it.
  send(alice, { op: "send", to: "br-bob", cid: cid("br-big"), data: "x".repeat(cfg.limit * 2) });
  const big = await closed(alice);
  expect(big.code === 1009, "alice: an oversized message must close with 1009, got", big);

  bob.ws.close(1000);
  await closed(bob);
  return "ok";
})()
"""


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(secret: str, sub: str) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    # The room the page uses is granted (rooms no namespace names need a grant).
    claims = {"sub": sub, "exp": int(time.time()) + 3600, "rooms": ["br-room"],
              "publish": ["br-room"]}
    claims = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{claims}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(sig)}"


def find_chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        path = name and shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class Browser:
    """A headless Chromium in its own process group with a throwaway profile."""

    def __init__(self, exe, deadline):
        self.root = tempfile.mkdtemp(prefix="hermod-browser-")
        self.profile = os.path.join(self.root, "profile")
        self.log_path = os.path.join(self.root, "chromium.log")
        self.deadline = deadline
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        except OSError:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def devtools_url(self):
        """The browser-level CDP WebSocket URL, from `DevToolsActivePort` (port, then path)."""
        marker = os.path.join(self.profile, "DevToolsActivePort")
        while time.monotonic() < self.deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"chromium exited with {code}:\n{self.log_tail()}")
            try:
                with open(marker) as f:
                    port, path = f.read().split("\n")[:2]
                if port.strip() and path.strip():
                    return f"ws://127.0.0.1:{port.strip()}{path.strip()}"
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"chromium wrote no DevToolsActivePort in time:\n{self.log_tail()}")

    def close(self):
        # SIGTERM lets the browser exit; SIGKILL then reaps any helper left in the group.
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        for _ in range(20):
            shutil.rmtree(self.root, ignore_errors=True)
            if not os.path.exists(self.root):
                break
            time.sleep(0.1)  # a child still writing its last file


class Cdp:
    """A minimal Chrome DevTools Protocol client over one WebSocket (flat sessions)."""

    def __init__(self, url, deadline):
        self.deadline = deadline
        self.ws = connect(url, open_timeout=self.left(), max_size=2**24)
        self.next_id = 0

    def left(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the whole check took longer than {DEADLINE} s")
        return left

    def call(self, method, params, session=None):
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = session
        self.ws.send(json.dumps(request))
        while True:
            reply = json.loads(self.ws.recv(timeout=self.left()))
            if reply.get("id") != self.next_id:
                continue  # an event, or another session's traffic
            if "error" in reply:
                raise RuntimeError(f"CDP {method} failed: {reply['error']}")
            return reply["result"]

    def close(self):
        self.ws.close()


def run_in_page(cdp, program):
    target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    result = cdp.call("Runtime.evaluate", {
        "expression": program, "awaitPromise": True, "returnByValue": True,
    }, session)
    if "exceptionDetails" in result:
        details = result["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text")
        raise AssertionError(f"in the browser: {text}")
    return result["result"].get("value")


def main():
    addr, secret, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    exe = find_chromium()
    if exe is None:
        print("chromium is missing (apt-get install chromium, or set CHROMIUM=/path)")
        sys.exit(3)
    config = {
        "base": f"ws://{addr}/ws",
        "tokens": {u: mint(secret, u) for u in ("br-alice", "br-bob")},
        "limit": limit,
        "stepMs": STEP_MS,
        "run": os.urandom(4).hex(),
    }
    program = PAGE_JS.replace("%CONFIG%", json.dumps(config))
    deadline = time.monotonic() + DEADLINE
    browser = Browser(exe, deadline)
    try:
        cdp = Cdp(browser.devtools_url(), deadline)
        try:
            value = run_in_page(cdp, program)
        finally:
            cdp.close()
    finally:
        browser.close()
    if value != "ok":
        raise AssertionError(f"the page answered {value!r}")
    print("ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - report anything as a failure line
        print(f"FAILED: {type(exc).__name__}: {exc}")
        sys.exit(1)
