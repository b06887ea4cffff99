"""The bench's report: a Markdown table of every figure and ratio, the targets, and a chart beside it."""
from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import Results

MiB = 1024 * 1024


def write(out: Path, results: Results, machine: dict[str, str], command: str, elapsed: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    chart = out.with_name(out.stem.lower() + ".png")
    _chart(chart, results)
    out.write_text("\n".join(_lines(results, machine, command, elapsed, chart.name)) + "\n")


def _targets(r: Results) -> list[tuple[str, str, bool]]:
    from .run import METRICS

    t, g, paired = r.throughput, r.growth, r.paired
    one = r.median(t, "gateway required")
    required, public = paired(t, "gateway required", "haproxy"), paired(t, "gateway public", "haproxy")
    workers = paired(t, "gateway required, 2 workers", "gateway required")
    login = paired(r.logins, "gateway login", "seed login (Flask, gunicorn)")
    names = list(g)
    routes = paired(g, names[1], names[0]) if len(names) >= 2 else float("nan")
    tokens = paired(g, names[3], names[2]) if len(names) >= 4 else float("nan")
    p99 = paired(r.p99_rounds, "gateway required", "haproxy")
    kept_up = r.p99.get("gateway required", (math.nan, 0.0))[1] >= 0.95 * r.rate
    idle = (r.idle_rss[1] - r.idle_rss[0]) / MiB
    metrics = paired(t, METRICS, "gateway required")
    rows = [
        ("required route ≥ 0.40 of HAProxy", f"{required:.3f}", required >= 0.40),
        ("public route ≥ 0.45 of HAProxy", f"{public:.3f}", public >= 0.45),
        (f"p99 at {r.rate:,} req/s ≤ 2× HAProxy's (the rate kept)", f"{p99:.2f}×" + ("" if kept_up else
                                                                                   ", rate not kept"),
         p99 <= 2 and kept_up),
        ("2 workers ≥ 1.4× one worker", f"{workers:.2f}×" + _ceiling(r, one), workers >= 1.4),
        ("login ≥ 5× the seed's", f"{login:.2f}×", login >= 5),
        ("many routes cost ≤ 5%", f"{1 - routes:+.1%}", 1 - routes <= 0.05),
        ("many tokens cost ≤ 10%", f"{1 - tokens:+.1%}", 1 - tokens <= 0.10),
        ("idle connections < 60 MB of RSS", f"{idle:.1f} MiB", idle < 60),
        ("metrics cost ≤ 5% of throughput", f"{1 - metrics:+.1%}", 1 - metrics <= 0.05),
    ]
    return [(name, value, met) for name, value, met in rows]


def _cpu(r: Results, name: str) -> tuple[float, float, float, float]:
    """Median CPU µs per request of the gateway, the upstream, wrk, and all three, over the rounds."""
    rounds = r.cpu.get(name, [])
    if not rounds:
        return (math.nan,) * 4
    return (statistics.median(c.gateway for c in rounds), statistics.median(c.upstream for c in rounds),
            statistics.median(c.wrk for c in rounds), statistics.median(c.total for c in rounds))


def _ceiling(r: Results, one: float) -> str:
    """What two workers could reach at most on this machine: every core busy, at one worker's CPU per request
    for the gateway, the upstream and wrk together."""
    total = _cpu(r, "gateway required")[3]
    if not one or math.isnan(total):
        return ""
    return f" (the machine's ceiling: {(os.cpu_count() or 1) * 1e6 / total / one:.2f}×)"


def _observing_lines(r: Results) -> list[str]:
    from .run import ACCESS_LOG, METRICS, SCRAPE_EVERY

    lines = ["### The cost of metrics and of the access log (gateway, required route, one worker)", "",
             f"`{METRICS}`: with an admin listener, so every request is counted, and /metrics scraped every "
             f"{SCRAPE_EVERY:g} s during the load (Prometheus's usual interval is 15 s). "
             f"`{ACCESS_LOG}`: one JSON line a request, written to a file. The baseline has neither.", "",
             "| system | median req/s | vs the baseline | cost | gateway CPU µs per request |",
             "|---|---:|---:|---:|---:|"]
    for name in (METRICS, ACCESS_LOG):
        if name in r.throughput:
            ratio = r.paired(r.throughput, name, "gateway required")
            lines.append(f"| {name} | {r.median(r.throughput, name):,.0f} | {ratio:.3f} | {1 - ratio:+.1%} | "
                         f"{_cpu(r, name)[0]:.1f} |")
    return [*lines, f"| gateway required (baseline) | {r.median(r.throughput, 'gateway required'):,.0f} | 1 | | "
                    f"{_cpu(r, 'gateway required')[0]:.1f} |", ""]


def _tls_lines(r: Results) -> list[str]:
    from .run import HTTPS_CLIENTS, HTTPS_UPSTREAM

    rows = [(HTTPS_CLIENTS, "clients to the gateway (wrk over HTTPS, keep-alive)"),
            (HTTPS_UPSTREAM, "the gateway to its upstream (pooled, sessions resumed)")]
    lines = ["### The cost of TLS (gateway, required route, one worker)", "",
             "| TLS between | median req/s | vs plain HTTP |", "|---|---:|---:|"]
    for name, between in rows:
        if name in r.throughput:
            median = r.median(r.throughput, name)
            lines.append(f"| {between} | {median:,.0f} | {r.paired(r.throughput, name, 'gateway required'):.3f} |")
    return [*lines, ""]


def _cpu_lines(r: Results) -> list[str]:
    lines = ["### CPU per request (µs, from /proc and getrusage; median of the rounds)", "",
             "| system | gateway | upstream (nginx) | wrk | all | cores busy |", "|---|---:|---:|---:|---:|---:|"]
    for name in r.cpu:
        gateway, upstream, wrk, total = _cpu(r, name)
        busy = total * r.median(r.throughput, name) / 1e6
        lines.append(f"| {name} | {gateway:.1f} | {upstream:.1f} | {wrk:.1f} | {total:.1f} | {busy:.2f} |")
    return [*lines, "",
            "Two workers share the cores with wrk and the upstream: at most cores ÷ (all µs per request) "
            "requests a second, whatever the gateway's split.", ""]


def _table(title: str, table: dict[str, list[float]], base: str | None, r: Results) -> list[str]:
    lines = [f"### {title}", "", "| system | median req/s | " + (f"vs {base} | " if base else "") + "errors | rounds |",
             "|---|---:|" + ("---:|" if base else "") + "---:|---|"]
    for name, values in table.items():
        median = r.median(table, name)
        ratio = f" {r.paired(table, name, base):.3f} |" if base else ""
        rounds = " ".join(f"{v:,.0f}" for v in values)
        lines.append(f"| {name} | {median:,.0f} |{ratio} {r.errors.get(name, 0)} | {rounds} |")
    return [*lines, ""]


def _lines(r: Results, machine: dict[str, str], command: str, elapsed: float, chart: str) -> list[str]:
    lines = [
        "# Performance",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}` "
        f"({elapsed:.0f} s). Absolute figures differ between machines and runs by a factor of three: "
        "compare the ratios, which come from this one run. Each ratio is the median over the rounds of the "
        "ratio within a round (the loads of a round run back to back), so that the machine's drift from one "
        "round to the next cancels out of it.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        *(f"| {name} | {value} | {'yes' if met else '**no**'} |" for name, value, met in _targets(r)),
        "",
        f"![throughput and p99 latency per system]({chart})",
        "",
        "## Figures",
        "",
        *_table("Data path (wrk -t1, keep-alive)", r.throughput, "haproxy", r),
        *_tls_lines(r),
        *_observing_lines(r),
        *_cpu_lines(r),
        f"### p99 latency at a fixed rate of {r.rate:,} req/s (30% of HAProxy's median; wrk on a schedule, median of the rounds)",
        "",
        "| system | p99 ms | rate achieved | rounds (ms) |",
        "|---|---:|---:|---|",
        *(f"| {name} | {ms:.2f} | {achieved:,.0f} | {' '.join(f'{v:.2f}' for v in r.p99_rounds.get(name, []))} |"
          for name, (ms, achieved) in r.p99.items()),
        "",
        *_table("Login with an SMS code (real Redis and MariaDB)", r.logins, "seed login (Flask, gunicorn)", r),
        *_table("Growth (gateway, required route, one worker)", r.growth, None, r),
        "### Idle keep-alive connections",
        "",
        f"RSS of the gateway before: {r.idle_rss[0] / MiB:.1f} MiB; with the idle connections held: "
        f"{r.idle_rss[1] / MiB:.1f} MiB.",
    ]
    return lines


def _chart(path: Path, r: Results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1.2]})
    names = list(r.throughput)
    values = [r.median(r.throughput, n) for n in names]
    colours = ["#888" if not n.startswith("gateway") else "#1f77b4" for n in names]
    left.barh(names[::-1], values[::-1], color=colours[::-1])
    left.set_xlabel("requests per second (median of rounds)")
    left.set_title("Throughput")
    p99_names = list(r.p99)
    right.bar(range(len(p99_names)), [r.p99[n][0] for n in p99_names], color="#ff7f0e")
    right.set_xticks(range(len(p99_names)), [n.replace(" ", "\n", 1) for n in p99_names])
    right.set_ylabel("ms")
    right.set_title(f"p99 at {r.rate:,} req/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
