"""The gateway against HAProxy and nginx, and its login against the seed's, measured in one run.

    .venv/bin/python -m bench.run [--seconds 8] [--rounds 3] [--out docs/PERFORMANCE.md]

Everything runs on loopback, started here and stopped at the end: nginx as the
backend and as a plain proxy, HAProxy doing the gateway's job, the gateway
with one and two workers, Redis and MariaDB for the login case, and the
seed-style Flask peer under gunicorn. Each system is checked to do its job
before it is measured. Loads take turns, round after round, so that the
machine's noise falls on every system alike; ratios come from one run, never
across runs. Every load is bounded by --seconds. Writes a Markdown report with
a table of every figure and a chart (PNG) beside it.

Needs wrk, nginx and haproxy (Debian packages wrk, nginx-light,
haproxy), redis-server and mariadb-server, and the bench extra
(`pip install -e '.[bench]'`).
"""
from __future__ import annotations

import argparse
import contextlib
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import load, login, report
from .systems import USER_ID, Stack, cpu_seconds, free_port, machine, rss, tokens


@dataclass
class Settings:
    seconds: float
    rounds: int
    connections: int
    users: int  # pre-registered users for the login case
    idle: int  # idle keep-alive connections held
    many_tokens: int
    many_routes: int


HTTPS_CLIENTS = "gateway required, HTTPS from wrk"
HTTPS_UPSTREAM = "gateway required, HTTPS to nginx"
METRICS = "gateway required, metrics on"
ACCESS_LOG = "gateway required, access log on"
SCRAPE_EVERY = 1.0  # seconds: a Prometheus scrapes every 15 s or so; the bench asks 15 times as often
FULL = dict(users=40_000, idle=5_000, many_tokens=10_000, many_routes=10_000)
SMOKE = dict(users=300, idle=50, many_tokens=100, many_routes=100)


@dataclass
class Cpu:
    """CPU microseconds per answered request, by process, in one round."""
    gateway: float
    upstream: float
    wrk: float

    @property
    def total(self) -> float:
        return self.gateway + self.upstream + self.wrk


@dataclass
class Results:
    throughput: dict[str, list[float]] = field(default_factory=dict)
    p99: dict[str, tuple[float, float]] = field(default_factory=dict)  # (ms, achieved req/s) of the median run
    p99_rounds: dict[str, list[float]] = field(default_factory=dict)  # ms, round by round
    rate: int = 0
    logins: dict[str, list[float]] = field(default_factory=dict)
    growth: dict[str, list[float]] = field(default_factory=dict)
    idle_rss: tuple[int, int] = (0, 0)
    errors: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, list[Cpu]] = field(default_factory=dict)  # per round, for the gateway's rows

    def add(self, table: dict[str, list[float]], name: str, result: load.Throughput) -> None:
        table.setdefault(name, []).append(result.rps)
        self.errors[name] = self.errors.get(name, 0) + result.errors

    @staticmethod
    def median(table: dict[str, list[float]], name: str) -> float:
        return statistics.median(table[name]) if table.get(name) else 0.0

    @staticmethod
    def paired(table: dict[str, list[float]], name: str, base: str) -> float:
        """The median over the rounds of name ÷ base within each round: both ran back to back, so the
        machine's drift from one round to the next cancels out of each ratio."""
        pairs = [a / b for a, b in zip(table.get(name, []), table.get(base, []), strict=False) if b]
        return statistics.median(pairs) if pairs else float("nan")


def status(url: str, authorization: str | None, context: ssl.SSLContext | None = None) -> tuple[int, str | None]:
    headers = {"X-User-Id": "7"} | ({"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10,
                                    context=context) as resp:
            return resp.status, resp.headers.get("X-Seen-User-Id")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def check(name: str, url: str, kind: str, token: str, context: ssl.SSLContext | None = None) -> None:
    """A system must do its job before it is measured. `job`: the token's user reaches the upstream as
    X-User-Id and a bad token gets 401; `public`: answered, with no identity upstream; `plain`: answered."""
    if kind == "job":
        seen = status(url, f"Bearer {token}", context)
        if seen != (200, str(USER_ID)) or status(url, f"Bearer {token[:-2]}xx", context)[0] != 401:
            sys.exit(f"bench: {name} does not do the job: a valid token gave {seen}")
    elif status(url, None, context) != (200, None if kind == "public" else "7"):
        sys.exit(f"bench: {name} does not answer as a {kind} route should")


def data_path(stack: Stack, settings: Settings, results: Results, folder: Path) -> None:
    backend, nginx = stack.nginx()
    upstream = stack.nginx_proc.pid
    haproxy = stack.haproxy(backend)
    one_proc, one = stack.gateway("one-worker", backend)
    redis = login.redis(stack)
    two_proc, two = stack.gateway("two-workers", backend, workers=2, redis_url=redis)
    _, https_listener = stack.gateway("https-listener", backend, tls_listener=True)
    _, https_upstream = stack.gateway("https-upstream", backend, tls_upstream=True)
    admin = free_port()
    metrics_proc, metrics = stack.gateway("metrics", backend, admin_port=admin)
    logging_proc, logging = stack.gateway("access-log", backend, access_log=True)
    gateways = {"gateway required": one_proc.pid, "gateway required, 2 workers": two_proc.pid,
                METRICS: metrics_proc.pid, ACCESS_LOG: logging_proc.pid}
    token = tokens(1)[0]
    auth = [f"Authorization: Bearer {token}"]
    systems = {
        "haproxy": (f"http://127.0.0.1:{haproxy}/x", auth),
        "nginx": (f"http://127.0.0.1:{nginx}/x", []),
        "gateway public": (f"http://127.0.0.1:{one}/public/x", []),
        "gateway required": (f"http://127.0.0.1:{one}/x", auth),
        "gateway required, 2 workers": (f"http://127.0.0.1:{two}/x", auth),
        HTTPS_CLIENTS: (f"https://127.0.0.1:{https_listener}/x", auth),
        HTTPS_UPSTREAM: (f"http://127.0.0.1:{https_upstream}/x", auth),
        METRICS: (f"http://127.0.0.1:{metrics}/x", auth),
        ACCESS_LOG: (f"http://127.0.0.1:{logging}/x", auth),
    }
    kinds = {"nginx": "plain", "gateway public": "public"}
    trusting = ssl.create_default_context(cafile=stack.certificates().ca_file)
    for name, (url, _) in systems.items():
        check(name, url, kinds.get(name, "job"), token, trusting if url.startswith("https") else None)
    for _ in range(settings.rounds):
        for name, (url, headers) in systems.items():
            pids = (gateways[name], upstream) if name in gateways else ()
            before = [cpu_seconds(pid) for pid in pids]
            with _scraping(f"http://127.0.0.1:{admin}/metrics" if name == METRICS else None):
                result = load.wrk(url, settings.seconds, settings.connections, headers=headers)
            results.add(results.throughput, name, result)
            if pids and result.requests:
                used = [(cpu_seconds(pid) - b) * 1e6 / result.requests for pid, b in zip(pids, before, strict=True)]
                results.cpu.setdefault(name, []).append(Cpu(used[0], used[1], result.cpu * 1e6 / result.requests))
    results.rate = int(0.30 * results.median(results.throughput, "haproxy"))
    runs: dict[str, list[tuple[float, float]]] = {}
    for _ in range(settings.rounds):
        for name in ("haproxy", "gateway required"):
            url, headers = systems[name]
            runs.setdefault(name, []).append(load.fixed_rate_p99(url, results.rate, settings.seconds,
                                                                 folder / "fixed-rate.lua", headers=headers))
    for name, measured in runs.items():
        results.p99[name] = sorted(measured)[len(measured) // 2]  # the median run by p99
        results.p99_rounds[name] = [ms for ms, _ in measured]


@contextlib.contextmanager
def _scraping(url: str | None) -> Iterator[None]:
    """While the block runs, GET `url` every SCRAPE_EVERY seconds, as Prometheus would."""
    if url is None:
        yield
        return
    done = threading.Event()

    def scrape() -> None:
        while not done.wait(SCRAPE_EVERY):
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        yield
    finally:
        done.set()
        scraper.join(15)


def growth(stack: Stack, settings: Settings, results: Results, folder: Path) -> None:
    backend, _ = stack.nginx()
    few_proc, few = stack.gateway("ten-routes", backend, extra_routes=8)
    many_proc, many = stack.gateway("many-routes", backend, extra_routes=settings.many_routes - 2)
    many_tokens = folder / "tokens.txt"
    many_tokens.write_text("\n".join(tokens(settings.many_tokens)) + "\n")
    one_token = folder / "token.txt"
    one_token.write_text(tokens(1)[0] + "\n")
    script = folder / "rotate.lua"
    script.write_text(load.ROTATE_HEADER)
    cases = {
        "10 routes": (f"http://127.0.0.1:{few}/x", one_token),
        f"{settings.many_routes:,} routes": (f"http://127.0.0.1:{many}/x", one_token),
        "1 token": (f"http://127.0.0.1:{few}/x", one_token),
        f"{settings.many_tokens:,} tokens": (f"http://127.0.0.1:{few}/x", many_tokens),
    }
    for _ in range(settings.rounds):
        for name, (url, values) in cases.items():
            results.add(results.growth, name, load.wrk(url, settings.seconds, settings.connections,
                                                        script=script, script_args=[str(values)]))
    stack.stop(many_proc)
    before = rss(few_proc.pid)
    held = load.hold_idle(few, settings.idle)
    time.sleep(1)
    results.idle_rss = (before, rss(few_proc.pid))
    for sock in held:
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "PERFORMANCE.md")
    parser.add_argument("--smoke", action="store_true", help="small counts, for the test that keeps this working")
    parser.add_argument("--cases", default="data,growth,login", help="which cases to run (default: all three)")
    args = parser.parse_args(argv)
    settings = Settings(args.seconds, args.rounds, args.connections, **(SMOKE if args.smoke else FULL))
    results = Results()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stack = Stack(folder)
        cases = set(args.cases.split(","))
        try:
            if "data" in cases:
                data_path(stack, settings, results, folder)
                stack.close()
            if "growth" in cases:
                growth(stack, settings, results, folder)
                stack.close()
            if "login" in cases:
                login.compare(stack, settings, results, folder)
        finally:
            stack.close()
    command = " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])])
    report.write(args.out, results, machine(), command, time.time() - started)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
