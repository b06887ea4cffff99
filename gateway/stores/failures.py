"""Failed logins per subject (a mobile, or `account:<name>`) in a sliding window: `limits.login_failures`.

Once a subject has had `limit` failures within the window, it may not log in
until the oldest of them leaves the window, whatever secret it brings. In
Redis the failures are a sorted set of timestamps at
`gw:login-failures:{subject}`, shared by every instance; the SMS-code check
reads and counts it in the same script that checks the code (codes.py), so
that concurrent guesses cannot all pass the check before any is counted.
When Redis cannot be reached, this instance counts by itself.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from typing import Any, Callable, NamedTuple, Protocol

from limits import RateLimitItem
from redis.exceptions import RedisError

log = logging.getLogger("gateway.stores.failures")
_DOWN = (RedisError, OSError)

EXHAUSTED = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then return -1 end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + tonumber(ARGV[2]) - tonumber(ARGV[1])
"""
RECORD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


class Window(NamedTuple):
    limit: int
    seconds: float

    @classmethod
    def of(cls, rate: RateLimitItem | None) -> Window | None:
        return cls(rate.amount, float(rate.get_expiry())) if rate is not None else None


def failures_key(subject: str) -> str:
    return f"gw:login-failures:{subject}"


def member(now_ms: int) -> str:
    return f"{now_ms}-{os.urandom(6).hex()}"  # two failures in one millisecond are two members


class LoginFailures(Protocol):
    async def exhausted(self, subject: str, window: Window) -> float | None:
        """Seconds until the subject may try again, or None while it has failures left."""

    async def record(self, subject: str, window: Window) -> None: ...


class MemoryFailures:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._times: dict[str, collections.deque[float]] = {}
        self._clock = clock

    async def exhausted(self, subject: str, window: Window) -> float | None:
        return self.exhausted_now(subject, window)

    def exhausted_now(self, subject: str, window: Window) -> float | None:
        times = self._times.get(subject)
        if not times:
            return None
        now = self._clock()
        while times and times[0] <= now - window.seconds:
            times.popleft()
        if not times:
            del self._times[subject]
            return None
        return times[0] + window.seconds - now if len(times) >= window.limit else None

    async def record(self, subject: str, window: Window) -> None:
        self.record_now(subject, window)

    def record_now(self, subject: str, window: Window) -> None:
        self._times.setdefault(subject, collections.deque()).append(self._clock())


class RedisFailures:
    def __init__(self, primary: Any, local: MemoryFailures) -> None:
        self._exhausted = primary.register_script(EXHAUSTED)
        self._record = primary.register_script(RECORD)
        self.local = local  # while Redis is down

    async def exhausted(self, subject: str, window: Window) -> float | None:
        now_ms = int(time.time() * 1000)
        try:
            wait_ms = await self._exhausted(keys=[failures_key(subject)],
                                            args=[now_ms, int(window.seconds * 1000), window.limit])
        except _DOWN as exc:
            log.error("redis unavailable, counting failed logins per instance: %s", exc)
            return self.local.exhausted_now(subject, window)
        return None if int(wait_ms) < 0 else max(int(wait_ms) / 1000, 1.0)

    async def record(self, subject: str, window: Window) -> None:
        now_ms = int(time.time() * 1000)
        try:
            await self._record(keys=[failures_key(subject)], args=[now_ms, int(window.seconds * 1000), member(now_ms)])
        except _DOWN as exc:
            log.error("redis unavailable, counting failed logins per instance: %s", exc)
            self.local.record_now(subject, window)
