#!/usr/bin/env python3
"""Helper of benches/api-latency.sh: latency from a `POST /api/publish` to its delivery.

Three modes, all on CLOCK_MONOTONIC (time.monotonic_ns(), one clock for every process on the
machine, so the publisher and the receivers need not share a process):

  recv HOST:PORT MEMBERS ROOM PREFIX EXPECTED_MSGS END_NS OUT
      MEMBERS raw WebSocket connections (`/ws?user=PREFIXi`, `--auth none`), each joined to
      ROOM; prints `ready N SECONDS` once every join is answered, then reads everything in one
      epoll loop (no sleeping between passes: every read is stamped when it returns). Every
      `"due":D,"seq":S}` it finds in what a socket read is one delivery, its latency the read's
      time minus D (the publish's due time). Stops once EXPECTED_MSGS x MEMBERS deliveries
      arrived, every connection is closed, END_NS passed, or SIGTERM came. Writes OUT (JSON:
      counts, its own CPU, each publish's first and last receipt) and OUT.lat (the latencies,
      ns, int64 native).
  pub API_ADDR KEY ROOM RATE COUNT START_NS OUT
      Open loop: publish i is due at START_NS + i / RATE; sent at its due time (or at once when
      behind: one keep-alive connection, one call at a time), `data` = {"due":NS,"seq":i}.
      Records each answer's latency from the send and from the due time. Writes OUT (JSON).
  report OUT RECV_FILES...
      Merges the receivers' latencies: exact percentiles from the sorted list of every sample.
"""
import array, base64, http.client, json, os, re, selectors, signal, socket, sys, time

PCTS = (50, 90, 99, 99.9)


def pct(sorted_vals, p):
    """Nearest-rank percentile of a sorted list (the smallest value with p% at or below it)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-len(sorted_vals) * p // 100)) - 1))
    return sorted_vals[k]


def cpu_s():
    t = os.times()
    return t.user + t.system


def masked(opcode, payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def recv_main(addr, members, room, prefix, expected_msgs, end_ns, out):
    host, port = addr.rsplit(":", 1)
    port = int(port)
    members, expected_msgs, end_ns = int(members), int(expected_msgs), int(end_ns)
    join = masked(1, ('{"op":"join","room":"%s"}' % room).encode())
    t0 = time.time()
    conns = []
    for i in range(members):
        s = socket.create_connection((host, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        k = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws?user={prefix}{i} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {k}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                sys.exit(f"receiver: connection {i} closed during its handshake")
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            sys.exit(f"receiver: connection {i} answered {head.splitlines()[0]!r}")
        s.sendall(join)
        conns.append([s, rest])
    for i, c in enumerate(conns):
        while b'"op":"joined"' not in c[1]:
            d = c[0].recv(4096)
            if not d:
                sys.exit(f"receiver: connection {i} closed before its join was answered")
            c[1] += d
    sel = selectors.DefaultSelector()
    for s, rest in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [b""])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(f"ready {len(conns)} {time.time() - t0:.2f}", flush=True)
    cpu0 = cpu_s()
    pat = re.compile(rb'"due":(\d+),"seq":(\d+)\}')
    first, last = {}, {}
    lat = array.array("q")
    want = expected_msgs * members
    closed = 0
    reads = 0
    first_ns = last_ns = 0
    mono = time.monotonic_ns
    while len(lat) < want and closed < members and not stop:
        now = mono()
        if now >= end_ns:
            break
        events = sel.select(min(0.2, (end_ns - now) / 1e9))
        for key, _ in events:
            s = key.fileobj
            try:
                data = s.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            t = mono()
            if not data:
                closed += 1
                sel.unregister(s)
                s.close()
                continue
            reads += 1
            buf = key.data[0] + data
            end = 0
            for m in pat.finditer(buf):
                x = t - int(m.group(1))
                lat.append(x)
                q = int(m.group(2))
                if x < first.get(q, 1 << 62):
                    first[q] = x
                if x > last.get(q, -1):
                    last[q] = x
                end = m.end()
            tail = buf[end:]
            key.data[0] = tail[-4096:]
            if end:
                if not first_ns:
                    first_ns = t
                last_ns = t
    cpu = cpu_s() - cpu0
    with open(out + ".lat", "wb") as f:
        lat.tofile(f)
    with open(out, "w") as f:
        json.dump({"members": members, "deliveries": len(lat), "expected": want,
                   "closed": closed, "reads": reads, "cpu_s": cpu,
                   "first_ns": first_ns, "last_ns": last_ns,
                   "first": first, "last": last}, f)
    for s in list(sel.get_map().values()):
        s.fileobj.close()


def pub_main(api, key, room, rate, count, start_ns, out):
    rate, count, start_ns = float(rate), int(count), int(start_ns)
    host, port = api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    answer_ns, from_due_ns, behind = [], [], 0
    errors = []
    cpu0 = cpu_s()
    mono = time.monotonic_ns
    for i in range(count):
        due = start_ns + int(i * 1e9 / rate)
        now = mono()
        if now < due:
            time.sleep((due - now) / 1e9)
        else:
            behind += 1
        body = json.dumps({"room": room, "data": {"due": due, "seq": i}},
                          separators=(",", ":"))
        t = mono()
        conn.request("POST", "/api/publish", body, headers)
        r = conn.getresponse()
        payload = r.read()
        t2 = mono()
        if r.status != 200:
            errors.append(f"{r.status} {payload[:200]!r}")
        answer_ns.append(t2 - t)
        from_due_ns.append(t2 - due)
    cpu = cpu_s() - cpu0
    a, d = sorted(answer_ns), sorted(from_due_ns)
    with open(out, "w") as f:
        json.dump({"calls": count, "errors": len(errors), "first_errors": errors[:5],
                   "sent_late": behind, "cpu_s": round(cpu, 3),
                   "answer_p50_us": pct(a, 50) / 1e3, "answer_p99_us": pct(a, 99) / 1e3,
                   "answer_max_us": a[-1] / 1e3,
                   "answer_from_due_p99_us": pct(d, 99) / 1e3,
                   "end_ns": mono()}, f)


def report_main(out, *files):
    lat = array.array("q")
    deliveries = expected = closed = 0
    cpu = 0.0
    first, last = {}, {}
    for fn in files:
        with open(fn) as f:
            j = json.load(f)
        deliveries += j["deliveries"]
        expected += j["expected"]
        closed += j["closed"]
        cpu += j["cpu_s"]
        for q, x in j["first"].items():
            first[q] = min(x, first.get(q, x))
        for q, x in j["last"].items():
            last[q] = max(x, last.get(q, x))
        with open(fn + ".lat", "rb") as f:
            lat.frombytes(f.read())
    v = sorted(lat)
    res = {"deliveries": deliveries, "expected": expected, "receiver_closed": closed,
           "receiver_cpu_s": round(cpu, 3)}
    for p in PCTS:
        x = pct(v, p)
        res[f"p{p}_ms"] = None if x is None else round(x / 1e6, 3)
    res["max_ms"] = round(v[-1] / 1e6, 3) if v else None
    res["min_ms"] = round(v[0] / 1e6, 3) if v else None
    # Per publish: its first member's receipt and its last one's (every member's, if none was
    # lost), from the due time.
    for name, d in (("first", first), ("last", last)):
        w = sorted(d.values())
        for p in (50, 99):
            x = pct(w, p)
            res[f"{name}_p{p}_ms"] = None if x is None else round(x / 1e6, 3)
    with open(out, "w") as f:
        json.dump(res, f)
    print(json.dumps(res))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"recv": recv_main, "pub": pub_main, "report": report_main}[mode](*args)
