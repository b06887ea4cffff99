"""The soak: the gateway under a steady mix of logins and calls for minutes, on each store kind.

    .venv/bin/python -m bench.soak [--minutes 10] [--seconds S] [--stores embedded|real|both] [--json FILE]

For each store kind it starts, on free loopback ports in a temporary folder,
upstream_stub and the gateway as processes (`python -m gateway --config
FILE`, with its admin listener): `embedded` is memory:// and SQLite, `real`
its own redis-server and mariadbd (the tables made by `gateway migrate`).
--minutes (or --seconds) is the time under load per store kind: first a
closed-loop burst of a few seconds at full speed, whose answers per second
are the capacity, then open loop at half that rate: requests start on a
schedule, not after the previous answer. Everything stops by itself.

The mix, over many mobiles: SMS codes (read from the development `log`
sender's lines in the gateway's log, the only place it reveals them), logins,
refreshes (rotating refresh tokens), logouts, the old access token after a
logout (401), proxied calls on a public, an optional and a required route
(whose answer must name the token's user), and anonymous calls (401). The
load comes from devices taking turns, each with at most one session: 128 in
the burst; in the open loop a second's worth of requests at first, then new
devices join at an even pace over half the horizon until there are rate x gap
(each then acts once a gap): every new device's first acts are a code and a
first login, and a crowd of thousands of first logins at once is no load a
population of users sends (its queue on the SQLite writer outlasted the
tokens of the devices behind it). A device
refreshes its access token every K acts (K from the open loop's timing, so
the burst has the same share of refreshes), or sooner when its age asks for
it. A device asks for a code for the mobile whose last code is oldest, if
the per-mobile SMS limit (one per window) allows it, else for a new mobile:
the soak never trips a limit, and a 429 is an unexpected answer. There is no limit by address
(every request comes from 127.0.0.1). A first login registers its mobile's
user; the burst's first half warms up and is not counted in the capacity.

The TTLs (access and refresh tokens, codes, the SMS window, the rotation
grace, the user status cache) are scaled to the run: a horizon of a quarter
of the open-loop time, from 8 s to 2 minutes (2 minutes for a 10-minute
soak), is the refresh TTL and twice the others, so that every
key and cache entry the mix makes has turned over well before the end and
"keys do not keep growing" means something. Production TTLs (2 h, 14 d)
would only show growth within ten minutes.

Checks, each named in the report and the JSON summary (--json FILE):

- no_5xx: no answer >= 500, by the client's count and by the gateway's /metrics;
- no_lost_requests: every request started got an answer (sent = answered, no
  connection error, no timeout), and every scheduled request was started;
- answers_as_expected: every answer had the status the mix expects (a
  required call also names the right user; every refusal has a JSON body);
- gateway_counted_every_answer: /metrics' gateway_requests_total grew by
  exactly the number of answers the client got;
- rss_growth: the gateway's RSS at the end is under 10% above its first
  sample after warm-up (the ramp and a horizon);
- fds_flat: with the client's connections closed, the gateway's descriptors
  that belong to no pool (files, pipes, epoll, listeners) are within 2 of the
  count at the start (a SQLite journal or a resolver's socket may be open at
  the moment of reading), no client connection is left, and the pooled
  connections (upstream, Redis, MySQL) are within their bounds;
- keys_bounded (real): DBSIZE, sampled through the run, stays under a bound
  made of the users and the TTLs, and the second half of the steady state
  does not hold more keys than its first (10% and 20 keys of slack). On
  memory:// no honest handle tells the embedded store's size (/metrics has
  only the token cache, reported); the RSS check stands in for it;
- clean_log: no ERROR or CRITICAL line and no traceback in the gateway's log,
  and no token in it.

Exit status 0 when every check passes, 1 otherwise (the failing checks are
named). Needs redis-server and mariadb-server for `real`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from . import login
from .systems import ROOT, SECRET, Stack, free_port, need, rss
from tests.servers import MariaDBProcess  # as bench/login.py: the one way to run a private mariadbd

RSS_GROWTH = 0.10
FD_TOLERANCE = 2
KEYS_SLACK = (1.10, 20)  # the second half may hold 10% and 20 keys more than the first: sampling noise
CONNECTIONS = 1024  # the client's connections at most: enough that a quick request need not wait behind slow ones
IN_FLIGHT_CAP = 20_000  # a safety valve for the driver's memory: past it a scheduled request is not started
BURST_CONCURRENCY = 32
BURST_DEVICES = 4  # devices per connection in the burst
UPSTREAM_CONNECTIONS = 64
DATABASE_POOL = 10
REQUEST_TIMEOUT = 30.0
DATABASE = "toutiao_soak"
CODE_LINE = re.compile(rb"code for (1\d{10}) is (\d{6})")
ERROR_LINE = re.compile(rb'"level": "(?:ERROR|CRITICAL)"|Traceback \(most recent call last\)')


@dataclass(frozen=True)
class Timing:
    """Every TTL of the run, from its horizon: the time after which all state the mix makes has turned over."""
    horizon: float
    gap: float  # in the open loop each device acts once a gap (there are rate x gap devices)
    access_ttl: int
    refresh_ttl: int
    code_ttl: int
    sms_window: int
    grace: float
    status_ttl: float
    ramp: float  # the open loop's devices join over this time
    warm_up: float  # the ramp and a horizon: the last device to join has made all the state it holds at once

    @classmethod
    def for_run(cls, open_seconds: float) -> Timing:
        horizon = float(min(120, max(8, int(open_seconds / 4))))
        return cls(horizon, horizon / 20, int(horizon / 2), int(horizon), max(4, int(horizon / 2)),
                   int(horizon / 2), min(10.0, horizon / 4), horizon / 2, horizon / 2, 1.5 * horizon)

    @property
    def refresh_due(self) -> float:
        """An access token older than this is refreshed first: still valid two acts later, after exp's rounding
        down to a second and an answer's time."""
        return self.access_ttl - 2 * self.gap - 1.5

    @property
    def refresh_acts(self) -> int:
        """Acts on one access token before its refresh: as many as the open loop's devices have time for."""
        return max(2, int(self.refresh_due / self.gap))


def gateway_config(port: int, admin: int, stub: str, redis_url: str, database_url: str, t: Timing) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "WARNING", "shutdown_timeout": "5s"},
        "admin": {"host": "127.0.0.1", "port": admin},
        "jwt": {"secret": SECRET, "access_ttl": t.access_ttl, "refresh_ttl": t.refresh_ttl,
                "rotate_refresh_tokens": True, "rotation_grace": t.grace},
        "redis": {"url": redis_url},
        "database": {"url": database_url, "pool_size": DATABASE_POOL},
        "sms": {"sender": "log", "code_ttl": t.code_ttl, "max_attempts": 5},
        # one code per mobile per window, as in production (1/minute on a 10-minute soak); no limit by address:
        # every soak request comes from 127.0.0.1, so such a limit would model one abuser, not many users
        "limits": {"sms": [{"rate": f"1/{t.sms_window}second", "key": "mobile"}]},
        "revocation": {"user_status_cache_ttl": t.status_ttl},
        "upstreams": {"news": {"targets": [stub], "max_connections": UPSTREAM_CONNECTIONS}},
        "routes": [{"path": "/v1_0/channels", "upstream": "news", "auth": "public"},
                   {"path": "/v1_0/articles", "upstream": "news", "auth": "optional"},
                   {"path": "/", "upstream": "news", "auth": "required"}],
    }


class GatewayLog:
    """The gateway's log file, read as it grows: the codes the development sender writes, error lines, and any
    line that holds a token (a JWT starts with the base64 of '{"')."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes: dict[str, str] = {}
        self.errors: list[str] = []
        self.token_lines = 0
        self.codes_seen = 0
        self._offset = 0
        self._rest = b""

    def poll(self) -> None:
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self._read(line)

    def _read(self, line: bytes) -> None:
        if ERROR_LINE.search(line):
            self.errors.append(line[:300].decode(errors="replace"))
        if b"eyJ" in line:
            self.token_lines += 1
        match = CODE_LINE.search(line)
        if match:
            self.codes[match.group(1).decode()] = match.group(2).decode()
            self.codes_seen += 1


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    connection_errors: int = 0
    timeouts: int = 0
    not_started: int = 0  # open loop: scheduled while IN_FLIGHT_CAP requests were in flight
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)  # a few unexpected answers, for the report
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))

    def wrong(self, what: str, detail: str) -> None:
        self.unexpected[what] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{what}: {detail[:200]}")


@dataclass
class Device:
    """One client in turn: at most one session at a time, on a mobile it holds from its SMS to its logout."""
    mobile: str | None = None
    sms_sent: float = -math.inf  # the code's TTL runs from no earlier than this
    sms_answered: float = -math.inf  # the SMS limit's window runs from no later than this
    sms_body: bytes = b""
    code_pending: bool = False
    user_id: int | None = None
    token: str | None = None
    refresh: str | None = None
    token_at: float = 0.0
    acts: int = 0  # with this access token
    stale: str | None = None  # the access token of a session just ended


class Mobiles:
    """The mobiles, longest since their last code first: one whose SMS window is still open is not asked for
    a code again; a new mobile joins instead (so the pool grows to the SMS rate times the window)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.count = 0
        self._free: collections.deque[tuple[str, float]] = collections.deque()  # (mobile, its last code)

    def take(self) -> str:
        if self._free and time.monotonic() >= self._free[0][1] + self.window + 1:
            return self._free.popleft()[0]
        self.count += 1
        return f"139{self.count:08d}"

    def give_back(self, mobile: str, answered: float) -> None:
        """`answered`: when its last code request was answered (or failed): the gateway counted it before."""
        self._free.append((mobile, answered))


def user_id_of(token: str) -> int:
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["user_id"])


class Mix:
    """Which request a device sends next, and what its answer must be. One act is one request."""

    def __init__(self, session: aiohttp.ClientSession, timing: Timing, log: GatewayLog, tally: Tally) -> None:
        self.session = session
        self.t = timing
        self.log = log
        self.tally = tally
        self.mobiles = Mobiles(timing.sms_window)
        self.most_devices = 0
        self._count = 0  # devices, idle or waiting for an answer
        self._idle: collections.deque[Device] = collections.deque()  # in the order their last answers came
        self._random = random.Random(7)

    @property
    def device_count(self) -> int:
        return self._count

    def devices(self, count: int) -> None:
        """`count` devices from now on. New ones join at once; when there are too many, idle ones leave
        (their mobiles freed, their sessions left to expire, as an app that is uninstalled) until there are
        `count`, or none is idle: those waiting for an answer stay."""
        while self._count < count:
            self._idle.append(Device())
            self._count += 1
        while self._count > count and self._idle:
            gone = self._idle.pop()
            self._count -= 1
            if gone.mobile is not None:
                self.mobiles.give_back(gone.mobile, gone.sms_answered)
        self.most_devices = max(self.most_devices, self._count)

    def pick(self) -> Device | None:
        """The device whose last answer came first; None when every device waits for an answer."""
        return self._idle.popleft() if self._idle else None

    async def act(self, device: Device | None) -> None:
        if device is None:  # a stall held every device: the schedule still sends a request, one with no session
            self.expect("public", await self.send("no device free", "GET", "/v1_0/channels"), 200)
            return
        try:
            if device.stale is not None:
                await self._after_logout(device)
            elif device.token is None:
                await self._anonymous(device)
            else:
                await self._signed_in(device)
        finally:
            self._idle.append(device)

    async def send(self, kind: str, method: str, path: str, token: str | None = None,
                   body: dict[str, str] | None = None) -> tuple[int, bytes] | None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.tally.sent += 1
        self.tally.kinds[kind] += 1
        started = time.monotonic()
        try:
            async with self.session.request(method, path, headers=headers, json=body) as resp:
                data = await resp.read()
        except asyncio.TimeoutError:
            self.tally.timeouts += 1
            return None
        except aiohttp.ClientError as exc:
            self.tally.connection_errors += 1
            self.tally.wrong("connection error", f"{kind}: {exc!r}")
            return None
        self.tally.answered += 1
        self.tally.statuses[resp.status] += 1
        self.tally.latencies[kind].append(time.monotonic() - started)
        if resp.status >= 400 and not _is_json(data):
            self.tally.wrong("refusal without a JSON body", f"{kind} {resp.status} {data!r}")
        return resp.status, data

    def expect(self, kind: str, answer: tuple[int, bytes] | None, status: int, *, body: bool = False
               ) -> dict[str, Any] | None:
        """When the answer has the expected status, its JSON body if `body` is asked for, else {}; None (and
        counted) otherwise."""
        if answer is None:
            return None
        got, data = answer
        if got != status:
            self.tally.wrong(f"{kind} answered {got}", data.decode(errors="replace"))
            return None
        return json.loads(data) if body else {}

    def _end(self, device: Device) -> None:
        """The device's session is over (or never began): its mobile goes back to the pool."""
        if device.mobile is not None:
            self.mobiles.give_back(device.mobile, device.sms_answered)
        device.mobile, device.token, device.refresh, device.code_pending = None, None, None, False

    async def _anonymous(self, device: Device) -> None:
        if device.code_pending:
            assert device.mobile is not None
            self.log.poll()
            code = self.log.codes.pop(device.mobile, None)
            if code is not None:
                device.code_pending = False
                return await self._login(device, code)
            if time.monotonic() - device.sms_sent > self.t.code_ttl - 1:
                self.tally.wrong("code never reached the log", device.mobile)
                self._end(device)
        elif self._random.random() < 0.8:
            return await self._sms(device)
        if self._random.random() < 0.8:
            self.expect("public", await self.send("public", "GET", "/v1_0/channels"), 200)
        else:
            self.expect("anonymous", await self.send("anonymous", "GET", "/v1_0/user/profile"), 401)

    async def _sms(self, device: Device) -> None:
        device.mobile, device.sms_sent = self.mobiles.take(), time.monotonic()
        answer = await self.send("sms", "GET", f"/v1_0/sms/codes/{device.mobile}")
        device.sms_answered = time.monotonic()
        if self.expect("sms", answer, 200) is not None and answer is not None:
            device.code_pending, device.sms_body = True, answer[1]
        else:
            self._end(device)

    async def _login(self, device: Device, code: str) -> None:
        # The answer names the mobile, whose digits may hold the code by chance (about one login in 170,000):
        # the code is looked for in the rest of it.
        if code.encode() in device.sms_body.replace(str(device.mobile).encode(), b""):
            self.tally.wrong("the SMS answer revealed the code", str(device.mobile))
        answer = await self.send("login", "POST", "/v1_0/authorizations", body={"mobile": str(device.mobile),
                                                                                "code": code})
        tokens = self.expect("login", answer, 201, body=True)
        if tokens is None:
            return self._end(device)
        device.token, device.refresh, device.token_at = tokens["token"], tokens["refresh_token"], time.monotonic()
        device.user_id, device.acts = user_id_of(device.token), 0

    async def _signed_in(self, device: Device) -> None:
        device.acts += 1
        if device.acts > self.t.refresh_acts or time.monotonic() - device.token_at >= self.t.refresh_due:
            return await self._refresh(device)
        roll = self._random.random()
        if roll < 0.55:
            await self._identified(device, "required", "/v1_0/user/profile")
        elif roll < 0.70:
            self.expect("public", await self.send("public", "GET", "/v1_0/channels", device.token), 200)
        elif roll < 0.85:
            await self._identified(device, "optional", "/v1_0/articles?channel_id=2")
        elif roll < 0.92 and device.acts > 1:  # in the open loop, at most one refresh a gap: see key_bound
            await self._refresh(device)
        elif roll < 0.92:
            await self._identified(device, "required", "/v1_0/user/profile")
        else:
            await self._logout(device)

    async def _identified(self, device: Device, kind: str, path: str) -> None:
        body = self.expect(kind, await self.send(kind, "GET", path, device.token), 200, body=True)
        if body is not None and body.get("user_id") != str(device.user_id):
            self.tally.wrong("the upstream saw another identity",
                             f"{kind}: {body.get('user_id')} for {device.user_id}")

    async def _refresh(self, device: Device) -> None:
        answer = await self.send("refresh", "PUT", "/v1_0/authorizations", device.refresh)
        tokens = self.expect("refresh", answer, 201, body=True)
        if tokens is None:  # the session is lost to this device: it logs in again
            return self._end(device)
        device.token, device.refresh, device.token_at = tokens["token"], tokens["refresh_token"], time.monotonic()
        device.acts = 0

    async def _logout(self, device: Device) -> None:
        self.expect("logout", await self.send("logout", "DELETE", "/v1_0/authorizations", device.refresh), 204)
        device.stale = device.token
        self._end(device)

    async def _after_logout(self, device: Device) -> None:
        token, device.stale = device.stale, None
        self.expect("after logout", await self.send("after logout", "GET", "/v1_0/user/profile", token), 401)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


async def closed_loop(mix: Mix, seconds: float, concurrency: int) -> float:
    """Answers per second over the second half of `seconds` of `concurrency` devices' requests sent back to
    back (the first half warms up: the first codes and logins, which register their users, and the pools)."""
    start = time.monotonic()
    deadline = start + seconds
    halfway: list[tuple[float, int]] = []

    async def worker() -> None:
        while time.monotonic() < deadline:
            if not halfway and time.monotonic() >= start + seconds / 2:
                halfway.append((time.monotonic(), mix.tally.answered))
            await mix.act(mix.pick())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    at, answered = halfway[0]
    return (mix.tally.answered - answered) / (time.monotonic() - at)


def joined(devices: int, first: int, ramp: float, at: float) -> int:
    """The devices in the open loop `at` seconds into it: `first` at the start, then new ones joining at an
    even pace until there are `devices` at `ramp` seconds. Each new device asks for a code and logs in
    first, and a first login registers its user: devices joining all at once would be a crowd of first
    logins no population of users sends, and the queue behind it would outlast their tokens."""
    if at >= ramp or first >= devices:
        return devices
    return first + int((devices - first) * at / ramp)


async def open_loop(mix: Mix, rate: float, seconds: float, devices: int, ramp: float) -> tuple[float, float]:
    """Starts a request every 1/rate seconds, whatever the answers, for `seconds`, while the devices grow to
    `devices` over `ramp` seconds (from a second's worth of requests, so that one device's answer need not
    come before its next turn); waits for the last answers. The rate achieved (requests started per second),
    and how late the latest start was (s)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time()
    scheduled = 0
    late = 0.0
    first = min(devices, max(mix.device_count, math.ceil(rate)))
    while (now := loop.time()) < start + seconds:
        mix.devices(joined(devices, first, ramp, now - start))
        due = int((now - start) * rate) + 1 - scheduled
        late = max(late, now - start - scheduled / rate)
        for _ in range(due):
            if len(tasks) >= IN_FLIGHT_CAP:
                mix.tally.not_started += 1
                continue
            task = asyncio.create_task(mix.act(mix.pick()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        scheduled += due
        await asyncio.sleep(min(0.005, 1 / rate))
    elapsed = loop.time() - start
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
    return (scheduled - mix.tally.not_started) / elapsed, late


@dataclass
class Processes:
    """What the soak watches: the gateway's pid and ports, and its stores' ports."""
    pid: int
    port: int
    admin: int
    stub: int
    redis_url: str | None = None
    stores: dict[str, int] = field(default_factory=dict)  # "redis" / "mysql" -> port


def descriptors(procs: Processes) -> dict[str, int]:
    """The gateway's open descriptors by kind: client and admin connections, pooled connections (upstream,
    redis, mysql), and the rest (files, pipes, epoll, eventfd, listeners, unix sockets)."""
    sockets = _tcp_sockets()
    counts: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{procs.pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{procs.pid}/fd/{fd}")
            counts[_kind(target, sockets, procs)] += 1
    return {"total": sum(counts.values()), **dict(sorted(counts.items()))}


def _kind(target: str, sockets: dict[str, tuple[int, int, str]], procs: Processes) -> str:
    match = re.fullmatch(r"socket:\[(\d+)\]", target)
    if match is None or match.group(1) not in sockets:
        return "other"
    local, remote, state = sockets[match.group(1)]
    if state == "0A":  # listening
        return "other"
    if local == procs.port:
        return "client"
    if local == procs.admin:
        return "admin"
    if remote == procs.stub:
        return "upstream"
    return next((name for name, port in procs.stores.items() if remote == port), "other")


def _tcp_sockets() -> dict[str, tuple[int, int, str]]:
    """inode -> (local port, remote port, state), from the network namespace's TCP tables."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as file:
            next(file)
            for line in file:
                parts = line.split()
                found[parts[9]] = (int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16), parts[3])
    return found


@dataclass
class Sample:
    at: float  # seconds into the open loop
    rss: int
    fds: int
    keys: int | None
    revocations: int | None
    token_cache: float | None


class Metrics:
    def __init__(self, session: aiohttp.ClientSession, admin: int) -> None:
        self.session = session
        self.url = f"http://127.0.0.1:{admin}/metrics"

    async def read(self) -> dict[str, float]:
        """gateway_requests_total in all and with a 5xx status, and the token cache's size."""
        async with self.session.get(self.url) as resp:
            text = await resp.text()
        found = {"requests": 0.0, "5xx": 0.0, "token_cache": 0.0}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "gateway_requests_total":
                    found["requests"] += sample.value
                    if sample.labels.get("status", "").startswith("5"):
                        found["5xx"] += sample.value
                elif sample.name == "gateway_token_cache_size":
                    found["token_cache"] = sample.value
        return found


class Sampler:
    """Samples the gateway's RSS, descriptors, Redis keys and token cache every `every` seconds."""

    def __init__(self, procs: Processes, metrics: Metrics, every: float) -> None:
        self.procs = procs
        self.metrics = metrics
        self.every = every
        self.samples: list[Sample] = []
        self._redis: Any = None
        if procs.redis_url is not None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(procs.redis_url)

    async def run(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        while True:
            await self.take(time.monotonic() - start)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
                await self.take(time.monotonic() - start)
                return

    async def take(self, at: float) -> None:
        keys = revocations = None
        if self._redis is not None:
            keys, revocations = await self._redis.dbsize(), await self._redis.zcard("gw:revocations")
        cache = (await self.metrics.read())["token_cache"]
        self.samples.append(Sample(round(at, 2), rss(self.procs.pid), len(os.listdir(f"/proc/{self.procs.pid}/fd")),
                                   keys, revocations, cache))

    async def keys_by_prefix(self) -> dict[str, int]:
        if self._redis is None:
            return {}
        counts: collections.Counter[str] = collections.Counter()
        async for key in self._redis.scan_iter(count=1000):
            counts[re.sub(r"[:{].*", "", key.decode()) if not key.startswith(b"gw:") else
                   ":".join(key.decode().split(":")[:2])] += 1
        return dict(counts.most_common())

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class KindResult:
    kind: str
    timing: Timing
    capacity_rps: float = 0.0
    target_rps: float = 0.0
    achieved_rps: float = 0.0
    late: float = 0.0  # the latest start behind the schedule, in seconds (the driver's own stalls)
    open_seconds: float = 0.0
    users: int = 0  # mobiles
    devices: int = 0  # sessions at once, at most
    burst_refreshes: int = 0
    tally: Tally = field(default_factory=Tally)
    counted_by_gateway: float = 0.0
    gateway_5xx: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    fds_start: dict[str, int] = field(default_factory=dict)
    fds_end: dict[str, int] = field(default_factory=dict)
    keys_by_prefix: dict[str, int] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)
    token_lines: int = 0
    codes_seen: int = 0
    checks: list[Check] = field(default_factory=list)


async def quiet_descriptors(procs: Processes) -> dict[str, int]:
    """The gateway's descriptors once the client's connections are closed: waits up to 3 s for the gateway
    to see them go."""
    deadline = time.monotonic() + 3
    while True:
        found = descriptors(procs)
        if found.get("client", 0) == 0 or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def load_session(port: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    return aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))


async def drive(procs: Processes, log: GatewayLog, result: KindResult, seconds: float) -> None:
    t = result.timing
    burst = min(10.0, max(3.0, seconds / 10))
    result.open_seconds = seconds - burst
    async with aiohttp.ClientSession() as admin_session:
        metrics = Metrics(admin_session, procs.admin)
        before = await metrics.read()
        async with load_session(procs.port) as session:
            mix = Mix(session, t, log, result.tally)
            mix.devices(BURST_CONCURRENCY * BURST_DEVICES)
            result.capacity_rps = await closed_loop(mix, burst, BURST_CONCURRENCY)
            result.burst_refreshes = result.tally.kinds["refresh"]
        result.fds_start = await quiet_descriptors(procs)
        result.target_rps = result.capacity_rps / 2
        sampler = Sampler(procs, metrics, every=min(10.0, max(0.5, result.open_seconds / 50)))
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop))
        async with load_session(procs.port) as session:
            mix.session = session
            result.tally.latencies.clear()  # the open loop's, not the burst's
            result.achieved_rps, result.late = await open_loop(
                mix, result.target_rps, result.open_seconds, max(BURST_CONCURRENCY, round(result.target_rps * t.gap)),
                ramp=t.ramp)
            stop.set()
            await sampling
        result.fds_end = await quiet_descriptors(procs)
        result.keys_by_prefix = await sampler.keys_by_prefix()
        await sampler.close()
        after = await metrics.read()
    result.users, result.devices = mix.mobiles.count, mix.most_devices
    result.samples = sampler.samples
    result.counted_by_gateway = after["requests"] - before["requests"]
    result.gateway_5xx = after["5xx"] - before["5xx"]


def judge(r: KindResult) -> list[Check]:
    t, tally = r.timing, r.tally
    fives = sum(n for status, n in tally.statuses.items() if status >= 500)
    overload = tally.kinds["no device free"] + tally.not_started
    checks = [
        Check("no_5xx", fives == 0 and r.gateway_5xx == 0, f"client saw {fives}, /metrics counted {r.gateway_5xx:.0f}"),
        Check("no_lost_requests", tally.sent == tally.answered and not tally.not_started,
              f"sent {tally.sent}, answered {tally.answered}, connection errors {tally.connection_errors}, "
              f"timeouts {tally.timeouts}, not started {tally.not_started}"
              + (f"; OVERLOADED: {overload} scheduled requests found every device waiting (the gateway, or this "
                 "machine, did not keep up with half the measured capacity)" if overload > tally.sent // 20 else "")),
        Check("answers_as_expected", not tally.unexpected,
              "all as expected" if not tally.unexpected else "; ".join(tally.examples)),
        Check("gateway_counted_every_answer", r.counted_by_gateway == tally.answered,
              f"/metrics counted {r.counted_by_gateway:.0f}, the client got {tally.answered}"),
    ]
    steady = [s for s in r.samples if s.at >= t.warm_up] or r.samples[-1:]
    base, end = steady[0].rss, r.samples[-1].rss
    growth = (end - base) / base
    checks.append(Check("rss_growth", growth < RSS_GROWTH,
                        f"{base / 2**20:.1f} MiB at {steady[0].at:.0f} s -> {end / 2**20:.1f} MiB at "
                        f"{r.samples[-1].at:.0f} s ({growth:+.1%}, under {RSS_GROWTH:.0%})"))
    checks.append(_fds_check(r))
    checks.append(_keys_check(r, steady))
    log_ok = not r.log_errors and r.token_lines == 0
    checks.append(Check("clean_log", log_ok, f"{len(r.log_errors)} error lines, {r.token_lines} lines with a token"
                        + (f": {r.log_errors[0]}" if r.log_errors else "")))
    return checks


def _fds_check(r: KindResult) -> Check:
    start, end = r.fds_start, r.fds_end
    bounds = {"upstream": UPSTREAM_CONNECTIONS, "mysql": DATABASE_POOL, "redis": CONNECTIONS + 2}
    over = [f"{name} {end.get(name, 0)} > {bound}" for name, bound in bounds.items() if end.get(name, 0) > bound]
    drift = end.get("other", 0) - start.get("other", 0)
    ok = abs(drift) <= FD_TOLERANCE and end.get("client", 0) == 0 and not over
    return Check("fds_flat", ok, f"start {start}, end {end}; outside the pools {drift:+d} (within "
                 f"{FD_TOLERANCE}), client connections left {end.get('client', 0)}"
                 + (f", over bound: {', '.join(over)}" if over else ""))


def key_bound(r: KindResult) -> int:
    """The keys the mix can hold in Redis at once. Per mobile: a code, its attempt count and its SMS window.
    The refresh tokens spent (gw:spent, kept until the token's exp, at most refresh_ttl) and their successors
    (gw:successor, kept for the grace): the open loop starts rate = devices / gap requests a second, so at
    most that many refreshes, as if each device at the most refreshed once a gap (while devices are still
    joining, fewer act more often; the sum is the same). Each refresh of the burst, whose spent token may
    still be kept, and its successor. And gw:revocations."""
    t = r.timing
    per_device = math.ceil(t.refresh_ttl / t.gap) + 1 + math.ceil(t.grace / t.gap) + 1
    return 3 * r.users + per_device * r.devices + 2 * r.burst_refreshes + 1


def _keys_check(r: KindResult, steady: list[Sample]) -> Check:
    if steady[0].keys is None:
        return Check("keys_bounded", True, "memory://: no honest handle on the embedded store's size "
                     "(/metrics exposes only the token cache); the RSS check stands in for it")
    bound = key_bound(r)
    most = max(s.keys or 0 for s in r.samples)
    half = len(steady) // 2
    first = max((s.keys or 0 for s in steady[:half]), default=0)
    second = max((s.keys or 0 for s in steady[half:]), default=0)
    flat = second <= first * KEYS_SLACK[0] + KEYS_SLACK[1]
    return Check("keys_bounded", most <= bound and flat and half > 0,
                 f"DBSIZE at most {most} (bound {bound} for {r.users} mobiles, {r.devices} devices); steady state: first half at most "
                 f"{first}, second half at most {second}")


def start_mariadb(stack: Stack) -> tuple[str, int]:
    """A private mariadbd with an empty database (the gateway's `migrate` makes the tables): its URL and
    port."""
    need("mariadbd", "mariadb-server")
    server = MariaDBProcess(stack.folder / "mariadb")
    server.start()
    stack.closers.append(server.stop)
    server.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
    return server.url(DATABASE), server.port


def soak_kind(kind: str, seconds: float, folder: Path) -> KindResult:
    folder.mkdir(parents=True)
    stack = Stack(folder)
    timing = Timing.for_run(seconds - min(10.0, max(3.0, seconds / 10)))
    result = KindResult(kind, timing)
    try:
        stub = free_port()
        stack.start([sys.executable, "-m", "upstream_stub", "--port", str(stub)], stub, cwd=ROOT)
        procs = Processes(0, free_port(), free_port(), stub)
        if kind == "embedded":
            redis_url, database_url = "memory://", f"sqlite:///{folder}/users.db"
        else:
            redis_url = procs.redis_url = login.redis(stack)
            database_url, mysql_port = start_mariadb(stack)
            procs.stores = {"redis": int(redis_url.rsplit(":", 1)[1].split("/")[0]), "mysql": mysql_port}
        config = folder / "gateway.yaml"
        config.write_text(yaml.safe_dump(gateway_config(procs.port, procs.admin, f"http://127.0.0.1:{stub}",
                                                        redis_url, database_url, timing)))
        if kind == "real":
            subprocess.run([sys.executable, "-m", "gateway", "migrate", "--config", str(config)], cwd=ROOT,
                           check=True, capture_output=True, timeout=60)
        gateway = stack.start([sys.executable, "-m", "gateway", "--config", str(config)], procs.port, cwd=ROOT)
        procs.pid = gateway.pid
        log = GatewayLog(folder / f"{Path(sys.executable).name}-{procs.port}.log")
        asyncio.run(drive(procs, log, result, seconds))
        log.poll()
        result.log_errors, result.token_lines, result.codes_seen = log.errors, log.token_lines, log.codes_seen
    finally:
        stack.close()
    result.checks = judge(result)
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latency_ms(times: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(times, 0.5) * 1000, 2), "p99": round(percentile(times, 0.99) * 1000, 2),
            "max": round(max(times, default=0) * 1000, 2)}


def summary(r: KindResult) -> dict[str, Any]:
    tally = r.tally
    return {
        "ok": all(c.ok for c in r.checks),
        "timing": asdict(r.timing),
        "capacity_rps": round(r.capacity_rps, 1), "target_rps": round(r.target_rps, 1),
        "achieved_rps": round(r.achieved_rps, 1), "latest_start_s": round(r.late, 3), "open_seconds": r.open_seconds, "users": r.users,
        "devices": r.devices,
        "sent": tally.sent, "answered": tally.answered, "connection_errors": tally.connection_errors,
        "timeouts": tally.timeouts, "not_started": tally.not_started,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "kinds": dict(sorted(tally.kinds.items())), "unexpected": dict(tally.unexpected),
        "latency_ms": latency_ms([t for kind in tally.latencies.values() for t in kind]),
        "latency_ms_by_kind": {kind: latency_ms(times) for kind, times in sorted(tally.latencies.items())},
        "counted_by_gateway": r.counted_by_gateway, "gateway_5xx": r.gateway_5xx,
        "rss_mib": [[s.at, round(s.rss / 2**20, 2)] for s in r.samples],
        "fds": {"start": r.fds_start, "end": r.fds_end, "samples": [[s.at, s.fds] for s in r.samples]},
        "keys": None if r.samples and r.samples[0].keys is None else {
            "samples": [[s.at, s.keys] for s in r.samples], "bound": key_bound(r),
            "revocations": [[s.at, s.revocations] for s in r.samples], "by_prefix": r.keys_by_prefix},
        "token_cache": [[s.at, s.token_cache] for s in r.samples],
        "log": {"error_lines": len(r.log_errors), "token_lines": r.token_lines, "codes_seen": r.codes_seen},
        "checks": [asdict(c) for c in r.checks],
    }


def print_report(r: KindResult, data: dict[str, Any]) -> None:
    print(f"\n== {r.kind}: {data['open_seconds']:.0f} s open loop at {r.target_rps:.0f} req/s "
          f"(capacity {r.capacity_rps:.0f} req/s, achieved {r.achieved_rps:.0f}), {r.users} mobiles, {r.devices} devices, "
          f"horizon {r.timing.horizon:.0f} s, warm-up {r.timing.warm_up:.0f} s")
    print(f"   requests {data['kinds']}")
    print(f"   statuses {data['statuses']}; open-loop latency p50 {data['latency_ms']['p50']} ms, "
          f"p99 {data['latency_ms']['p99']} ms, max {data['latency_ms']['max']} ms; latest start "
          f"{data['latest_start_s'] * 1000:.0f} ms behind the schedule")
    print(f"   p99 by request (ms) { {kind: v['p99'] for kind, v in data['latency_ms_by_kind'].items()} }")
    rss_first, rss_last = data["rss_mib"][0][1], data["rss_mib"][-1][1]
    print(f"   RSS {rss_first} -> {rss_last} MiB; token cache {data['token_cache'][0][1]:.0f} -> "
          f"{data['token_cache'][-1][1]:.0f}")
    if data["keys"]:
        print(f"   Redis keys by prefix at the end {data['keys']['by_prefix']}")
    for check in r.checks:
        print(f"   [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="time under load per store kind")
    parser.add_argument("--seconds", type=float, help="instead of --minutes (at least 20)")
    parser.add_argument("--stores", choices=("embedded", "real", "both"), default="both")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args(argv)
    seconds = max(20.0, args.seconds if args.seconds is not None else args.minutes * 60)
    kinds = ("embedded", "real") if args.stores == "both" else (args.stores,)
    results: dict[str, Any] = {}
    failed: list[str] = []
    with _uvloop(), tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        for kind in kinds:
            result = soak_kind(kind, seconds, Path(tmp) / kind)
            results[kind] = summary(result)
            print_report(result, results[kind])
            failed += [f"{kind}:{c.name}" for c in result.checks if not c.ok]
    report = {"ok": not failed, "failed": failed, "seconds_per_kind": seconds, "kinds": results}
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    print("\nsoak: every check passed" if not failed else f"\nsoak: FAILED {', '.join(failed)}")
    return 0 if not failed else 1


@contextlib.contextmanager
def _uvloop() -> Iterator[None]:
    """The driver on uvloop when it is there: the load generator shares the machine with the gateway."""
    try:
        import uvloop
    except ImportError:
        yield
        return
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(policy)


if __name__ == "__main__":
    sys.exit(main())
