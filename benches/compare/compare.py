"""Hermod against nginx and HAProxy as WebSocket proxies, on one machine, loopback only.

Run through benches/compare.sh (it builds the binaries and installs nginx/HAProxy when
missing). Phases:

1. load: every target (the direct floor, each proxy, Hermod's terminating paths) is driven by
   hermod-loadgen at each offered rate, targets alternating within each repeat (the order
   rotates from repeat to repeat), CPU of the target measured over the measured window;
2. memory: for each proxy and terminating path, a fresh instance holds N idle sessions; growth
   of its resident memory per session;
3. report: medians, ratios to nginx, target/bench/compare.{md,json} and latency.svg.

Only the Python standard library is used.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import drive  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
from harness import HarnessError, Procs  # noqa: E402

FULL = dict(rates=[5000, 20000, 50000], repeats=3, duration=10, warmup=2, sessions=5000, hold=10)
QUICK = dict(rates=[5000, 20000], repeats=1, duration=4, warmup=1, sessions=2000, hold=4)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="benches/compare.sh also takes --no-build (use the binaries in target/release).")
    p.add_argument("--quick", action="store_true", help="fewer rates, one repeat, shorter runs")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes/threads of every proxy and of Hermod (default 1)")
    p.add_argument("--pin", help="taskset CPU list for the proxies under test, e.g. 1")
    p.add_argument("--rates", help="comma-separated offered rates in msg/s")
    p.add_argument("--repeats", type=int)
    p.add_argument("--duration", type=float, help="measured seconds per run")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run")
    p.add_argument("--sessions", type=int, help="idle sessions for the memory figure")
    p.add_argument("--hold", type=float, help="seconds the idle sessions are held")
    p.add_argument("--connections", type=int, default=100, help="connections under load")
    p.add_argument("--size", type=int, default=64, help="payload bytes per message")
    p.add_argument("--only", help="comma-separated targets (default: all)")
    p.add_argument("--bin-dir", default="target/release")
    p.add_argument("--out", default="target/bench")
    p.add_argument("--from-json", metavar="FILE",
                   help="run nothing: rebuild the report from a compare.json written earlier")
    p.add_argument("--update-docs", metavar="FILE",
                   help="also replace the results between the compare:begin/end markers of FILE "
                        "(docs/benchmarks.md)")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if isinstance(args.rates, str):
        args.rates = [int(r) for r in args.rates.split(",") if r]
    return args


def machine():
    """What the figures were measured on."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
        "nginx": targets.version_of([targets.NGINX, "-v"]),
        "haproxy": targets.version_of([targets.HAPROXY, "-v"]),
    }
    info["summary"] = f"{info['nproc']} CPUs ({model}), Linux {info['kernel']}"
    return info


def select_keys(args, tunnel):
    keys = [targets.FLOOR] + targets.PROXIES + targets.TERMINATING
    if not tunnel:
        keys.remove("hermod-tunnel")
    if args.only:
        wanted = set(args.only.split(",")) | {targets.FLOOR}
        keys = [k for k in keys if k in wanted]
    return keys


def load_phase(procs, cfg, args, keys, backend):
    """Starts every target once, then runs rates x repeats x targets (rotating order)."""
    env = dict(cfg, pin=args.pin)
    servers = {}
    for key in keys:
        if key != targets.FLOOR:
            servers[key] = targets.start_target(key, procs, env, backend.port)
    runs = []
    total = len(args.rates) * args.repeats * len(keys)
    for rate in args.rates:
        for rep in range(args.repeats):
            order = keys[rep % len(keys):] + keys[:rep % len(keys)]
            for key in order:
                server = servers.get(key, backend)
                watched = {"backend": backend} if key == targets.FLOOR else {"proxy": server}
                if key in targets.PROXIES:
                    watched["backend"] = backend
                run = dict(target=key, rate=rate, rep=rep, scenario=targets.scenario_of(key),
                           url=targets.url_of(key, server.port))
                rec = drive.run_load(procs, cfg, run, watched)
                runs.append(rec)
                progress(len(runs), total, rec)
    for server in servers.values():
        procs.stop_server(server)
    return runs


def progress(n, total, rec):
    lat = rec.get("latency_us") or {}
    cpu = (rec.get("cpu_us_per_msg") or {}).get("proxy")
    cpu_text = f"{cpu:.1f} us/msg" if cpu is not None else "-"
    state = "valid" if rec.get("valid") else ("INVALID" if rec.get("ok") else "FAILED")
    print(f"[{n}/{total}] {rec['target']:>14} @ {rec['rate']:>6}/s r{rec['rep']}: {state} "
          f"p50 {lat.get('p50')} p99 {lat.get('p99')} p99.9 {lat.get('p999')} us, "
          f"cpu {cpu_text} {rec.get('error', '')}", flush=True)


def memory_phase(procs, cfg, args, keys, backend):
    """A fresh instance of each proxy / terminating path per measurement, alternating."""
    env = dict(cfg, pin=args.pin)
    mem_keys = [k for k in keys if k != targets.FLOOR]
    runs = []
    for rep in range(args.repeats):
        order = mem_keys[rep % len(mem_keys):] + mem_keys[:rep % len(mem_keys)]
        for key in order:
            server = targets.start_target(key, procs, env, backend.port, tag=f"-mem{rep}")
            try:
                run = dict(target=key, rep=rep, url=targets.url_of(key, server.port))
                rec = drive.run_memory(procs, cfg, run, server)
            finally:
                procs.stop_server(server)
            runs.append(rec)
            per = rec.get("bytes_per_session")
            print(f"[memory] {key:>14} r{rep}: {rec.get('sessions')} sessions, "
                  f"{per / 1024:.2f} KiB/session" if per is not None else
                  f"[memory] {key:>14} r{rep}: failed {rec.get('error', '')}", flush=True)
    return runs


def write_outputs(out, result):
    lines = report.markdown(result)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    with open(os.path.join(out, "latency.svg"), "w") as f:
        f.write(report.svg_plot(result))
    print("\n".join(lines))
    print(f"\nwrote {out}/compare.md, {out}/compare.json, {out}/latency.svg")


def update_docs(path, lines):
    """Replaces what lies between the markers in `path` with the report."""
    begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        print(f"compare: {path} has no {begin} ... {end} markers; not updated", file=sys.stderr)
        return
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(path, "w") as f:
        f.write(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)
    print(f"updated {path}")


def raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def rerender(args):
    """Rebuilds compare.md, latency.svg (and the docs section) from a saved compare.json."""
    with open(args.from_json) as f:
        result = json.load(f)
    result["summary"] = report.summarize(result["load_runs"], result["memory_runs"],
                                         result["keys"], result["rates"])
    if "hermod-tunnel" in result["keys"]:
        result["goals"] = report.goals(result["summary"], result["rates"])
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    write_outputs(out, result)
    if args.update_docs:
        update_docs(args.update_docs, report.markdown(result))
    return 0


def main(argv):
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    started = time.monotonic()
    out = os.path.abspath(args.out)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    runs_dir = os.path.join(work, "runs")
    os.makedirs(runs_dir)
    bins = os.path.abspath(args.bin_dir)
    cfg = dict(hermod=os.path.join(bins, "hermod-proxy"),
               loadgen=os.path.join(bins, "hermod-loadgen"), workdir=work, runs=runs_dir,
               workers=args.workers, connections=args.connections, size=args.size,
               duration=args.duration, warmup=args.warmup, sessions=args.sessions,
               hold=args.hold, repeats=args.repeats, rates=args.rates, quick=args.quick)
    tunnel = targets.has_tunnel(cfg["hermod"])
    keys = select_keys(args, tunnel)
    info = machine()
    info["hermod"] = targets.version_of([cfg["hermod"], "--version"])
    print(f"targets: {', '.join(keys)}; rates {args.rates}; repeats {args.repeats}; "
          f"workers {args.workers}" + ("" if tunnel else "; hermod tunnel (--route) NOT in this "
                                       "build, skipped"), flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)
    procs = Procs(work)
    try:
        backend = targets.start_backend(procs, cfg["hermod"])
        load_runs = load_phase(procs, cfg, args, keys, backend)
        mem_runs = memory_phase(procs, cfg, args, keys, backend)
    except (HarnessError, KeyboardInterrupt) as e:
        print(f"compare: stopped: {e}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        procs.stop_all()
    info["loadavg_end"] = os.getloadavg()
    command = os.environ.get("HERMOD_COMPARE_COMMAND") or (
        "benches/compare.py " + " ".join(shlex.quote(a) for a in argv))
    result = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        command=command.strip(), duration_s=round(time.monotonic() - started, 1),
        machine=info, config=cfg, rates=args.rates, keys=keys,
        load_runs=load_runs, memory_runs=mem_runs,
    )
    result["summary"] = report.summarize(load_runs, mem_runs, keys, args.rates)
    result["goals"] = report.goals(result["summary"], args.rates) if tunnel else None
    write_outputs(out, result)
    if args.update_docs:
        update_docs(args.update_docs, report.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
