"""Turns the run records into medians, ratios against nginx, the goals' status, a Markdown
report, the JSON behind it and an SVG plot of p99 latency against offered rate."""

import math
import statistics

from targets import FLOOR, LABELS, PROXIES, TERMINATING

PCTS = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
BASE = "nginx"
CANDIDATE = "hermod-tunnel"
# Issue 6 goals: Hermod tunnel / nginx.
GOAL_CPU = 0.7
GOAL_P99 = 0.8
GOAL_MEM = 0.5
LEGEND = {FLOOR: "direct (floor)", "nginx": "nginx", "haproxy": "HAProxy",
          "hermod-tunnel": "Hermod tunnel", "hermod-echo": "Hermod echo (terminating)",
          "hermod-ws": "Hermod /ws direct (terminating)"}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def ratio_added(a, b):
    """Ratio of added latencies; an added latency below the floor is noise and counts as 0."""
    if a is None or b is None or b <= 0:
        return None
    return max(a, 0) / b


def summarize(load_runs, mem_runs, keys, rates):
    """Medians over the valid repeats, per target and rate; memory medians per target."""
    load = {}
    for key in keys:
        load[key] = {}
        for rate in rates:
            runs = [r for r in load_runs if r["target"] == key and r["rate"] == rate]
            valid = [r for r in runs if r.get("ok") and r.get("valid")]
            cell = {"runs": len(runs), "valid": len(valid)}
            for field, _ in PCTS:
                cell[field] = median([r["latency_us"].get(field) for r in valid])
            cell["cpu_us_per_msg"] = median([r["cpu_us_per_msg"].get("proxy") for r in valid])
            cell["backend_cpu_us_per_msg"] = median(
                [r["cpu_us_per_msg"].get("backend") for r in valid])
            # Where the CPU goes; absent from records written before these were measured.
            for field in ("sys_share", "ctxsw_per_msg"):
                cell[field] = median([(r.get(field) or {}).get("proxy") for r in valid])
                cell["backend_" + field] = median(
                    [(r.get(field) or {}).get("backend") for r in valid])
            cell["achieved_rate"] = median([r.get("achieved_rate") for r in runs if r.get("ok")])
            load[key][str(rate)] = cell
    for key in PROXIES:
        for rate in rates:
            cell, floor = load.get(key, {}).get(str(rate)), load[FLOOR][str(rate)]
            if cell is None:
                continue
            for field, _ in PCTS:
                a, f = cell[field], floor[field]
                cell["added_" + field] = a - f if a is not None and f is not None else None
    memory = {}
    for key in {r["target"] for r in mem_runs}:
        runs = [r for r in mem_runs if r["target"] == key and r.get("ok")]
        memory[key] = {
            "repeats": len(runs),
            "sessions": median([r["sessions"] for r in runs]),
            "bytes_per_session": median([r["bytes_per_session"] for r in runs]),
        }
    return {"load": load, "memory": memory, "ratios": ratios(load, memory, rates)}


def ratios(load, memory, rates):
    """Each proxy against nginx: CPU per message, added latency, memory per idle session."""
    out = {}
    if BASE not in load:
        return out
    for key in PROXIES:
        if key not in load:
            continue
        per_rate = {}
        for rate in rates:
            a, b = load[key][str(rate)], load[BASE][str(rate)]
            per_rate[str(rate)] = {
                "cpu": ratio(a["cpu_us_per_msg"], b["cpu_us_per_msg"]),
                **{f"added_{f}": ratio_added(a.get("added_" + f), b.get("added_" + f))
                   for f, _ in PCTS},
            }
        mem = ratio((memory.get(key) or {}).get("bytes_per_session"),
                    (memory.get(BASE) or {}).get("bytes_per_session"))
        out[key] = {"rates": per_rate, "memory": mem}
    return out


def goals(summary, rates):
    """Issue 6 goals for the tunnel against nginx: (name, target, observed, met)."""
    r = summary["ratios"].get(CANDIDATE)
    if r is None:
        return [("all", "hermod tunnel measured", "not measured", False)]
    cpu = [r["rates"][str(x)]["cpu"] for x in rates]
    p99 = [r["rates"][str(x)]["added_p99"] for x in rates]
    rows = []
    for name, limit, values in [("CPU seconds per message", GOAL_CPU, cpu),
                                ("added p99 latency", GOAL_P99, p99)]:
        seen = ", ".join(fmt_ratio(v) for v in values)
        met = all(v is not None and v <= limit for v in values)
        rows.append((name, f"<= {limit} x nginx at every rate", seen, met))
    mem = r["memory"]
    rows.append(("memory per idle session", f"<= {GOAL_MEM} x nginx", fmt_ratio(mem),
                 mem is not None and mem <= GOAL_MEM))
    return rows


def fmt_num(v, digits=0, sign=False):
    if v is None:
        return "n/a"
    text = f"{v:,.{digits}f}"
    return ("+" + text) if sign and v >= 0 else text


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}"


def proxy_table(summary, rates, keys):
    load, rat = summary["load"], summary["ratios"]
    lines = [
        "| rate msg/s | proxy | valid | CPU us/msg | x nginx | p50 us | x nginx | p99 us "
        "| x nginx | p99.9 us | x nginx |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        for key in [FLOOR] + [k for k in PROXIES if k in keys]:
            c = load[key][str(rate)]
            row = [fmt_num(rate), LABELS[key], f"{c['valid']}/{c['runs']}"]
            if key == FLOOR:
                row += ["-", ""] + sum([[fmt_num(c[f]) + " (abs)", ""] for f, _ in PCTS], [])
            else:
                r = rat.get(key, {}).get("rates", {}).get(str(rate), {})
                row += [fmt_num(c["cpu_us_per_msg"], 1), fmt_ratio(r.get("cpu"))]
                for f, _ in PCTS:
                    row += [fmt_num(c.get("added_" + f), sign=True),
                            fmt_ratio(r.get("added_" + f))]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def memory_table(summary, keys):
    mem, rat = summary["memory"], summary["ratios"]
    lines = ["| proxy | idle sessions | KiB per idle session | x nginx |", "|---|---:|---:|---:|"]
    for key in [k for k in PROXIES if k in keys]:
        m = mem.get(key) or {}
        b = m.get("bytes_per_session")
        lines.append(f"| {LABELS[key]} | {fmt_num(m.get('sessions'))} | "
                     f"{fmt_num(b / 1024 if b is not None else None, 2)} | "
                     f"{fmt_ratio((rat.get(key) or {}).get('memory'))} |")
    return lines


def cpu_split_table(summary, rates, keys):
    """Where the CPU goes: per rate, the floor's backend (when measured) and each proxy: CPU per
    round trip, its system share and the context switches per round trip. No lines when the
    runs predate these measurements."""
    load = summary["load"]
    rows = []
    for rate in rates:
        entries = [("echo backend (direct floor)", load[FLOOR][str(rate)], "backend_")]
        entries += [(LABELS[k], load[k][str(rate)], "") for k in PROXIES if k in keys]
        for label, c, prefix in entries:
            cpu, share, cs = (c.get(prefix + f) for f in ("cpu_us_per_msg", "sys_share",
                                                         "ctxsw_per_msg"))
            if prefix and cpu is None:
                continue
            rows.append((rate, label, cpu, share, cs))
    if not any(share is not None or cs is not None for _, _, _, share, cs in rows):
        return []
    lines = ["| rate msg/s | proxy | CPU us/msg | system share % | context switches "
             "per round trip |", "|---:|---|---:|---:|---:|"]
    for rate, label, cpu, share, cs in rows:
        lines.append(f"| {fmt_num(rate)} | {label} | {fmt_dash(cpu, 1)} | "
                     f"{fmt_dash(share * 100 if share is not None else None, 0)} | "
                     f"{fmt_dash(cs, 2)} |")
    return lines


def fmt_dash(v, digits):
    return "-" if v is None else fmt_num(v, digits)


def terminating_table(summary, rates, keys):
    load, mem = summary["load"], summary["memory"]
    lines = ["| path | rate msg/s | valid | CPU us/msg | p50 us | p99 us | p99.9 us "
             "| KiB per idle session |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in [k for k in TERMINATING if k in keys]:
        b = (mem.get(key) or {}).get("bytes_per_session")
        for rate in rates:
            c = load[key][str(rate)]
            lines.append(
                f"| {LABELS[key]} | {fmt_num(rate)} | {c['valid']}/{c['runs']} | "
                f"{fmt_num(c['cpu_us_per_msg'], 1)} | {fmt_num(c['p50'])} | {fmt_num(c['p99'])} | "
                f"{fmt_num(c['p999'])} | {fmt_num(b / 1024 if b is not None else None, 2)} |")
    return lines


def markdown(result):
    """The whole report as Markdown lines."""
    cfg, summary, rates, keys = result["config"], result["summary"], result["rates"], result["keys"]
    lines = [
        f"Run {result['date']} on {result['machine']['summary']}; command `{result['command']}`; "
        f"took {result['duration_s'] / 60:.1f} min; load average {loadavg(result)} at start / "
        "end (other jobs shared the machine).",
        "",
        f"Echo round trips over {cfg['connections']} connections, {cfg['size']}-byte binary "
        f"messages, open loop at the offered rate ({cfg['duration']} s measured after "
        f"{cfg['warmup']} s warm-up), {cfg['repeats']} repeat(s) alternating the targets; every "
        f"proxy runs {cfg['workers']} worker(s) in front of the same backend. Figures are medians "
        "of the valid repeats. CPU us/msg: the proxy's CPU time (all its processes) over the "
        "measured window per round trip. Latency: the direct floor's absolute figures, and for "
        "each proxy what it adds over the floor at the same rate (a negative figure is noise and "
        "counts as 0 in the ratio). x nginx: ratio to nginx's figure (lower is better).",
        "",
    ]
    lines += proxy_table(summary, rates, keys)
    split = cpu_split_table(summary, rates, keys)
    if split:
        lines += ["", "Where the CPU goes: the same runs' CPU per round trip split into user and "
                  "system time (utime/stime of /proc/PID/stat; the kernel splits them by tick "
                  "sampling, so the share is statistical), and the voluntary plus nonvoluntary "
                  "context switches of all the process's threads (/proc/PID/task/*/status) per "
                  "round trip, over the same measured window. The floor's row is the echo "
                  "backend alone, driven directly. Medians of the valid repeats.", ""]
        lines += split
    lines += ["", f"Memory: {cfg['sessions']} idle WebSocket sessions held through a freshly "
              "started proxy; growth of its resident memory (all its processes) per session.", ""]
    lines += memory_table(summary, keys)
    if CANDIDATE in keys:
        lines += ["", "Goals (issue 6), hermod tunnel against nginx:", "",
                  "| goal | target | measured | status |", "|---|---|---|---|"]
        for name, target, seen, met in goals(summary, rates):
            lines.append(f"| {name} | {target} | {seen} | {'met' if met else 'not met'} |")
    else:
        lines += ["", "hermod-proxy tunnel mode (`--route`) is not in this build: not measured."]
    lines += ["", "Hermod's terminating paths: a different architecture (Hermod itself answers "
              "the client: WebSocket framing, and for `/ws` the client protocol and the embedded "
              "broker). Absolute figures; not comparable as a ratio to a proxy.", ""]
    lines += terminating_table(summary, rates, keys)
    invalid = [r for r in result["load_runs"] if not (r.get("ok") and r.get("valid"))]
    if invalid:
        lines += ["", "Runs excluded (under 99% of the offered rate, or failed): " + ", ".join(
            f"{r['target']}@{r['rate']} r{r['rep']}" for r in invalid) + "."]
    return lines


def loadavg(result):
    m = result["machine"]
    return " / ".join(f"{m[k][0]:.1f}" if m.get(k) else "?" for k in ("loadavg_start",
                                                                    "loadavg_end"))


def svg_plot(result):
    """p99 latency (log scale) against offered rate, one line per target."""
    summary, rates, keys = result["summary"], result["rates"], result["keys"]
    width, height, left, right, top, bottom = 760, 440, 70, 250, 30, 50
    colors = {FLOOR: "#555555", "nginx": "#009639", "haproxy": "#1f77b4",
              "hermod-tunnel": "#d62728", "hermod-echo": "#ff7f0e", "hermod-ws": "#9467bd"}
    series = {}
    for key in keys:
        pts = [(r, summary["load"][key][str(r)]["p99"]) for r in rates]
        series[key] = [(r, v) for r, v in pts if v]
    values = [v for pts in series.values() for _, v in pts] or [1, 10]
    lo = 10 ** math.floor(math.log10(max(min(values), 1)))
    hi = 10 ** math.ceil(math.log10(max(values) * 1.01))
    hi = hi if hi > lo else lo * 10
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(i):
        return left + (plot_w * (i + 0.5) / len(rates))

    def y_of(v):
        return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) /
                               (math.log10(hi) - math.log10(lo)))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">p99 latency vs offered rate '
           f'({result["date"]}, medians, log scale)</text>']
    decade = lo
    while decade <= hi:
        y = y_of(decade)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                   f'stroke="#dddddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{fmt_num(decade)} us</text>')
        decade *= 10
    for i, rate in enumerate(rates):
        out.append(f'<text x="{x_of(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
                   f'{fmt_num(rate)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">'
               'offered rate (msg/s)</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#333333"/>')
    for n, (key, pts) in enumerate(series.items()):
        color = colors.get(key, "#000000")
        dash = ' stroke-dasharray="5,3"' if key in TERMINATING else ""
        coords = " ".join(f"{x_of(rates.index(r)):.1f},{y_of(v):.1f}" for r, v in pts)
        if len(pts) > 1:
            out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                       f'stroke-width="2"{dash}/>')
        for r, v in pts:
            out.append(f'<circle cx="{x_of(rates.index(r)):.1f}" cy="{y_of(v):.1f}" r="3" '
                       f'fill="{color}"/>')
        ly = top + 16 + 20 * n
        out.append(f'<line x1="{left + plot_w + 15}" y1="{ly - 4}" x2="{left + plot_w + 40}" '
                   f'y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{left + plot_w + 46}" y="{ly}">{escape(LEGEND[key])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
