"""Load generators, each bounded in time or count: wrk for throughput and for a fixed rate, idle sockets."""
from __future__ import annotations

import re
import resource
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .systems import need

ROTATE_HEADER = """
local values = {}
init = function(args) for line in io.lines(args[1]) do values[#values + 1] = line end end
local i = 0
request = function()
  i = i % #values + 1
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. values[i]})
end
"""
# wrk asks `delay()` before each request how many milliseconds to wait: one schedule for all connections,
# a slot every 1/rate seconds, so the rate is the same whatever the system's latency (a late answer
# makes its connection miss slots, which the others take; at most a second of missed slots is made up).
# wrk's timers count whole milliseconds, so requests leave in small bursts at each tick, for every system.
FIXED_RATE = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_timespec; int clock_gettime(int, bench_timespec *); ]]
local now_ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end
local interval, slot
init = function(args) interval = 1000 / tonumber(args[1]) end
delay = function()
  local now = now_ms()
  if slot == nil or slot < now - 1000 then slot = now end
  slot = slot + interval
  if slot <= now then return 0 end
  return math.floor(slot - now)
end
"""
LOGIN = """
local first, count, code
init = function(args) first = tonumber(args[1]); count = tonumber(args[2]); code = args[3] end
local i = 0
request = function()
  i = i + 1
  local body = string.format('{"mobile": "139%08d", "code": "%s"}', first + (i % count), code)
  return wrk.format("POST", "/v1_0/authorizations", {["Content-Type"] = "application/json"}, body)
end
"""


@dataclass
class Throughput:
    rps: float  # answers per second with a 2xx status
    errors: int  # non-2xx answers and socket errors
    requests: int = 0  # answers in all
    cpu: float = 0.0  # CPU seconds wrk itself used


def wrk(url: str, seconds: float, connections: int, *, headers: list[str] = (), script: Path | None = None,
        script_args: list[str] = ()) -> Throughput:
    args = [need("wrk", "wrk"), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for header in headers:
        args += ["-H", header]
    if script is not None:
        args += ["-s", str(script)]
    args.append(url)
    if script_args:
        args += ["--", *script_args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    requests = _number(r"(\d+) requests in", out)
    duration = _duration(out)
    bad = _number(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    good = max(0, requests - bad)
    return Throughput(good / duration if duration else 0.0, bad + socket_errors, requests, cpu)


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def _duration(text: str) -> float:
    match = re.search(r"requests in ([\d.]+)(ms|s|m)", text)
    if not match:
        return 0.0
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def fixed_rate_p99(url: str, rate: int, seconds: float, script: Path, *, connections: int = 32,
                   headers: list[str] = ()) -> tuple[float, float]:
    """(p99 latency in milliseconds, the rate achieved) when `rate` requests a second are sent on a schedule
    (FIXED_RATE, written to `script`) over `connections` connections."""
    script.write_text(FIXED_RATE)
    args = [need("wrk", "wrk"), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "-s", str(script)]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url, "--", str(rate)], capture_output=True, text=True, timeout=seconds + 60).stdout
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    achieved = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p99 is None:
        return float("nan"), float(achieved.group(1)) if achieved else 0.0
    value, unit = float(p99.group(1)), p99.group(2)
    ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return ms, float(achieved.group(1)) if achieved else 0.0


def hold_idle(port: int, count: int) -> list[socket.socket]:
    """`count` keep-alive connections, each after one answered request, left open and idle."""
    held = []
    request = b"GET /public/idle HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(request)
        held.append(sock)
    deadline = time.monotonic() + 60
    for sock in held:  # read each answer, so that every connection has been served
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        sock.recv(4096)
    return held
