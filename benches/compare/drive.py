"""Drives one target with hermod-loadgen and measures the servers behind it over exactly the
load generator's measured window.

The load generator prints "N connections open" once connected; its t0 is 100 ms later
(loadgen/src/run.rs START_DELAY), then `--warmup` seconds that are not recorded, then
`--duration` measured seconds. CPU snapshots of the watched servers are taken at the start and
at the end of that measured window, so connection setup, warm-up and drain are not charged.
"""

import json
import os
import subprocess
import threading
import time

# loadgen/src/run.rs: START_DELAY between "connections open" and t0.
START_DELAY = 0.1
OPEN_MARK = "connections open"


class LoadgenRun:
    """One hermod-loadgen process, its stderr followed in a thread."""

    def __init__(self, procs, argv, name, logdir):
        self.opened = threading.Event()
        self.t_open = None
        self.log_path = os.path.join(logdir, f"{name}.loadgen.log")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        procs.running.append(self.proc)
        self.procs = procs
        self.reader = threading.Thread(target=self._follow, daemon=True)
        self.reader.start()

    def _follow(self):
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                if not self.opened.is_set() and OPEN_MARK in line:
                    self.t_open = time.monotonic()
                    self.opened.set()
                log.write(line)

    def wait_open(self, timeout):
        return self.opened.wait(timeout)

    def finish(self, timeout):
        """Waits for the process (stopping it after `timeout`); returns its exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(self.proc, grace=2.0)
        self.reader.join(timeout=5)
        if self.proc in self.procs.running:
            self.procs.running.remove(self.proc)
        return self.proc.returncode


def sleep_until(t):
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def common_argv(cfg, scenario, url, json_path):
    argv = [cfg["loadgen"], scenario, "--url", url, "--json", json_path]
    if scenario in ("direct", "connect") and url.endswith("/ws"):
        argv += ["--auth", "none"]
    return argv


def run_load(procs, cfg, run, watched):
    """Runs `scenario` at `rate` against `url`; `watched` maps a role ("proxy", "backend") to a
    Server whose CPU is measured. Returns the run record."""
    name = f"{run['target']}-{run['rate']}-r{run['rep']}"
    json_path = os.path.join(cfg["runs"], f"{name}.json")
    argv = common_argv(cfg, run["scenario"], run["url"], json_path) + [
        "--connections", str(cfg["connections"]), "--rate", str(run["rate"]),
        "--duration", str(cfg["duration"]), "--warmup", str(cfg["warmup"]),
        "--size", str(cfg["size"]), "--drain", "3",
        "--hdr-out", os.path.join(cfg["runs"], f"{name}.hdr"),
    ]
    record = dict(run, ok=False)
    lg = LoadgenRun(procs, argv, name, cfg["runs"])
    if not lg.wait_open(60):
        lg.finish(1)
        record["error"] = "load generator did not connect (see its log)"
        return record
    t_start = lg.t_open + START_DELAY + cfg["warmup"]
    sleep_until(t_start)
    before = {role: s.sample() for role, s in watched.items()}
    wall0 = time.monotonic()
    sleep_until(t_start + cfg["duration"])
    after = {role: s.sample() for role, s in watched.items()}
    wall = time.monotonic() - wall0
    code = lg.finish(cfg["duration"] + 60)
    report = read_json(json_path)
    if report is None:
        record["error"] = f"no JSON report (exit {code})"
        return record
    sent = report.get("sent") or 0
    delta = {role: {k: after[role][k] - before[role][k] for k in after[role]} for role in watched}
    cpu = {role: d["utime"] + d["stime"] for role, d in delta.items()}
    record.update(
        ok=True,
        valid=bool(report.get("valid")),
        achieved_rate=report.get("achieved_rate"),
        sent=sent,
        lost=report.get("lost"),
        errors=report.get("errors"),
        latency_us=report.get("latency_us"),
        window_s=round(wall, 3),
        cpu_s={role: round(cpu[role], 3) for role in watched},
        user_s={role: round(d["utime"], 3) for role, d in delta.items()},
        system_s={role: round(d["stime"], 3) for role, d in delta.items()},
        ctxsw={role: d["ctxsw"] for role, d in delta.items()},
        loadgen_cpu_us_per_msg=report.get("cpu_us_per_message"),
    )
    record["cpu_us_per_msg"] = {role: cpu[role] * 1e6 / sent if sent else None for role in watched}
    # Share of the CPU spent in the kernel (tick-sampled split), and context switches of both
    # kinds per round trip (the same message count as the CPU per message).
    record["sys_share"] = {
        role: d["stime"] / cpu[role] if cpu[role] > 0 else None for role, d in delta.items()
    }
    record["ctxsw_per_msg"] = {
        role: d["ctxsw"] / sent if sent else None for role, d in delta.items()
    }
    return record


def run_memory(procs, cfg, run, server):
    """Opens `sessions` idle sessions through `server` and holds them; the growth of the
    server's resident memory (all its processes) over its idle baseline, per open session."""
    name = f"mem-{run['target']}-r{run['rep']}"
    json_path = os.path.join(cfg["runs"], f"{name}.json")
    hold = cfg["hold"]
    time.sleep(0.5)
    base = server.rss()
    argv = common_argv(cfg, "connect", run["url"], json_path) + [
        "--connections", str(cfg["sessions"]), "--hold", str(hold),
    ]
    record = dict(run, ok=False, rss_base=base)
    lg = LoadgenRun(procs, argv, name, cfg["runs"])
    if not lg.wait_open(120):
        lg.finish(1)
        record["error"] = "load generator did not connect (see its log)"
        return record
    # Let the last handshakes settle, then sample until just before the hold ends.
    settle = min(2.0, hold / 2)
    samples = []
    t = lg.t_open + settle
    while t < lg.t_open + hold - 0.3:
        sleep_until(t)
        samples.append(server.rss())
        t += 1.0
    if not samples:
        samples.append(server.rss())
    lg.finish(hold + 60)
    report = read_json(json_path) or {}
    held = report.get("held") or report.get("connected") or 0
    peak = max(samples)
    record.update(
        ok=held > 0,
        sessions=held,
        failed=report.get("connect_failures"),
        rss_held=peak,
        bytes_per_session=(peak - base) / held if held else None,
    )
    return record
