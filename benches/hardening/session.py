#!/usr/bin/env python3
"""Issue 11, session fairness figures (loopback only):

  1. gateway RSS growth per ping-flooding connection that never reads: N connections (default
     50) with a 4 KiB receive window send masked 125-byte pings as fast as their sockets take
     them for --flood seconds; once the gateway is idle (no CPU for 300 ms) its VmRSS growth
     over the connections' baseline, divided by N, on /ws and on the echo path (goal: < 64 KiB);
  2. another user's latency while one session floods acks at the highest rate it can: a fresh
     gateway per run, `hermod-loadgen direct` at a fixed rate (default 100 connections, 2,000
     msg/s) alone (baseline), then with a flooder (its own process, at nice 10 so that its own
     CPU is not taken from the gateway on a small shared machine) sending acks as fast as its
     socket takes them and reconnecting whenever it is closed, alternating, --repeats times
     (goal: p50/p99 within 2x of baseline). "acks written" counts what the flooder's socket
     took, most of which the gateway discards unread after closing the session.

  benches/hardening/session.py [--no-build] [--proxy PATH] [--loadgen PATH] [--repeats 3]
                               [--conns 50] [--flood 5] [--rate 2000] [--duration 10]
                               [--warmup 2] [--only rss|latency]

Prints Markdown tables; every run's loadgen JSON and the gateway logs go to
target/bench/hardening/.
"""
import argparse, base64, json, os, re, socket, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "target", "bench", "hardening")
TCK = os.sysconf("SC_CLK_TCK")


def start_proxy(binary, extra, tag):
    log = open(os.path.join(OUT, f"proxy-{tag}.log"), "w")
    p = subprocess.Popen(
        [binary, "--auth", "none", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--echo-path", "/echo", "--workers", "2"] + extra,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stderr.readline()
        log.write(line)
        m = re.search(r"client=([\d.]+):(\d+).*admin=([\d.]+):(\d+)", line)
        if m:
            threading.Thread(target=lambda: [log.write(l) for l in p.stderr], daemon=True).start()
            return p, int(m.group(2)), int(m.group(4))
    p.kill()
    sys.exit(f"{binary} did not report its ports")


def stop(p):
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def wait_idle(pid, limit=30):
    end = time.time() + limit
    last = cpu_ticks(pid)
    while time.time() < end:
        time.sleep(0.3)
        now = cpu_ticks(pid)
        if now == last:
            return
        last = now


def metrics(admin):
    s = socket.create_connection(("127.0.0.1", admin), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    out = {}
    for line in data.decode().split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def ws_connect(port, path, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode())
    return s


def frame(opcode, payload):
    """A masked client frame (zero mask: the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def rss_figure(binary, conns, flood):
    rows = []
    for path in ["/ws?user=pinger", "/echo"]:
        p, port, admin = start_proxy(binary, [], "rss-" + path.strip("/").split("?")[0])
        try:
            socks = [ws_connect(port, path, rcvbuf=4096) for _ in range(conns)]
            for s in socks:
                s.setblocking(False)
            time.sleep(0.5)
            before = rss_kib(p.pid)
            batch = frame(0x9, b"p" * 125) * 64
            pings, end = 0, time.time() + flood
            stalled = set()
            while time.time() < end:
                for i, s in enumerate(socks):
                    if i in stalled:
                        continue
                    try:
                        n = s.send(batch)
                    except BlockingIOError:
                        continue
                    except OSError:
                        stalled.add(i)
                        continue
                    pings += n // 131
                    if n != len(batch):
                        # A partial frame: finish it blocking (briefly), then go on.
                        s.setblocking(True)
                        s.settimeout(0.05)
                        try:
                            s.sendall(batch[n:n + (131 - n % 131) % 131])
                        except OSError:
                            stalled.add(i)
                        s.setblocking(False)
                time.sleep(0.001)
            wait_idle(p.pid)
            after = rss_kib(p.pid)
            m = metrics(admin)
            closed = sum(v for k, v in m.items() if k.startswith("hermod_sessions_closed_total"))
            rows.append((path.split("?")[0], conns, pings, before, after, (after - before) / conns,
                         int(m.get("hermod_reads_paused_total", 0)), int(closed)))
            for s in socks:
                s.close()
        finally:
            stop(p)
    return rows


def flooder(port, stop_at, stats):
    """Acks as fast as the socket takes them; reconnects when closed. Prints its counts as JSON
    on SIGTERM or at `stop_at`."""
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (print(json.dumps(stats), flush=True), os._exit(0)))
    ack = frame(0x1, b'{"op":"ack","id":"1-0"}')
    batch = ack * 256
    while time.time() < stop_at:
        try:
            s = ws_connect(port, "/ws?user=mallory")
            stats["sessions"] += 1
            s.settimeout(1)
            while time.time() < stop_at:
                s.sendall(batch)
                stats["acks"] += 256
        except OSError:
            pass
        finally:
            try:
                s.close()
            except Exception:
                pass


def loadgen_run(loadgen, port, rate, duration, warmup, tag):
    path = os.path.join(OUT, f"direct-{tag}.json")
    subprocess.run([loadgen, "direct", "--url", f"ws://127.0.0.1:{port}/ws", "--auth", "none",
                    "--connections", "100", "--rate", str(rate), "--duration", str(duration),
                    "--warmup", str(warmup), "--json", path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(path) as f:
        return json.load(f)


def latency_figure(binary, loadgen, repeats, rate, duration, warmup):
    runs = []
    for r in range(repeats):
        for flood in (False, True):
            tag = f"{'flood' if flood else 'base'}-{r}"
            p, port, admin = start_proxy(binary, [], tag)
            try:
                stats = {"sessions": 0, "acks": 0}
                t = None
                if flood:
                    # Its own process at nice 10: on this shared 2-core machine the attacker's
                    # own CPU would otherwise be taken from the gateway and the witness, which a
                    # remote attacker's is not.
                    t = subprocess.Popen(
                        [sys.executable, os.path.abspath(__file__), "--flood-worker", str(port),
                         str(warmup + duration + 5)],
                        stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(10))
                    time.sleep(0.5)
                t0 = time.time()
                rep = loadgen_run(loadgen, port, rate, duration, warmup, tag)
                elapsed = time.time() - t0
                m = metrics(admin)
                runs.append({
                    "flood": flood, "valid": rep["valid"], "sent": rep["sent"],
                    "received": rep["received"], "lost": rep["lost"], "errors": rep["errors"],
                    "p50": rep["latency_us"]["p50"], "p99": rep["latency_us"]["p99"],
                    "acks_per_s": 0, "sessions": 0,
                    "refused": int(sum(v for k, v in m.items() if k.startswith("hermod_rate_limited_total"))),
                    "closes": int(m.get("hermod_rate_limit_closes_total", 0)),
                    "queue_full": int(m.get("hermod_broker_queue_full_total", 0)),
                })
            finally:
                if t:
                    t.terminate()
                    out, _ = t.communicate(timeout=10)
                    if out.strip():
                        stats.update(json.loads(out.strip().splitlines()[-1]))
                        runs[-1]["acks_per_s"] = stats["acks"] / max(elapsed, 1e-9)
                        runs[-1]["sessions"] = stats["sessions"]
                stop(p)
    return runs


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--flood-worker":
        stats = {"sessions": 0, "acks": 0}
        flooder(int(sys.argv[2]), time.time() + float(sys.argv[3]), stats)
        print(json.dumps(stats), flush=True)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--proxy", default=os.path.join(ROOT, "target/release/hermod-proxy"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "target/release/hermod-loadgen"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--flood", type=float, default=5)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", choices=["rss", "latency"])
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "hermod-proxy", "-p", "hermod-loadgen"],
                       cwd=ROOT, check=True)
    if a.only in (None, "rss"):
        rows = rss_figure(a.proxy, a.conns, a.flood)
        print(f"\n### Ping flood without reading ({a.conns} connections, {a.flood:g} s, 4 KiB receive window)\n")
        print("| path | connections | pings sent | RSS before KiB | RSS after KiB | growth KiB per connection | reads paused | sessions closed |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:,} | {r[4]:,} | {r[5]:.1f} | {r[6]} | {r[7]} |")
    if a.only in (None, "latency"):
        runs = latency_figure(a.proxy, a.loadgen, a.repeats, a.rate, a.duration, a.warmup)
        print(f"\n### Another user's latency during an ack flood (direct, 100 connections, {a.rate:,} msg/s, {a.duration} s)\n")
        print("| run | flood | valid | sent | received | lost | errors | p50 us | p99 us | flooder acks/s written | flooder sessions | refused | closed 1008 | broker queue full |")
        print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for i, r in enumerate(runs):
            print(f"| {i // 2 + 1} | {'yes' if r['flood'] else 'no'} | {r['valid']} | {r['sent']:,} | {r['received']:,} | {r['lost']} | {r['errors']} | "
                  f"{r['p50']:,} | {r['p99']:,} | {r['acks_per_s']:,.0f} | {r['sessions']:,} | {r['refused']:,} | {r['closes']:,} | {r['queue_full']} |")
        base = [r for r in runs if not r["flood"]]
        flood = [r for r in runs if r["flood"]]
        b50, b99 = median([r["p50"] for r in base]), median([r["p99"] for r in base])
        f50, f99 = median([r["p50"] for r in flood]), median([r["p99"] for r in flood])
        print(f"\nMedians: baseline p50 {b50:,} us / p99 {b99:,} us; during the flood p50 {f50:,} us / p99 {f99:,} us "
              f"(x{f50 / max(b50, 1):.2f} / x{f99 / max(b99, 1):.2f}; goal: within 2x).")


if __name__ == "__main__":
    main()
