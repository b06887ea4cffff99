"""Failed logins per subject (a mobile, or `account:<name>`) in a sliding window: `limits.login_failures`.

Once a subject has had `limit` failures within the window, it may not log in
until the oldest of them leaves the window, whatever secret it brings. In
Redis the failures are a sorted set of timestamps at
`gw:login-failures:{app:code:<subject>}`, shared by every instance; the SMS-code check
reads and counts it in the same script that checks the code (codes.py), so
that concurrent guesses cannot all pass the check before any is counted.
When the primary cannot be reached, a login fails closed (503) unless the
replica (`redis.replica_url`) answers: logins then go on (codes are read
from the replica) and this instance counts failures by itself meanwhile, as
the code check does.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from typing import Callable, NamedTuple, Protocol

from limits import RateLimitItem

from . import StoreUnavailable
from .kv import REDIS_DOWN, AnyRedis

log = logging.getLogger("gateway.stores.failures")
_DOWN = REDIS_DOWN

# The window's rule, in one place for every script that reads or counts failures (codes.py's too).
# spent(): the milliseconds until the oldest failure leaves the window when `limit` are in it, else nil.
LUA = """
local function spent(key, now, window, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then return nil end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
local function record(key, now, window, member)
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
end
"""
# The scripts answer -1 - wait when the window is spent: a negative number is never another answer.
EXHAUSTED = LUA + """
local wait = spent(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait then return -1 - wait end
return 0
"""
RECORD = LUA + "record(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])\n"


def wait_of(answer: int) -> float | None:
    """The seconds to wait that a script's negative answer stands for (at least one), else None."""
    return max((-1 - answer) / 1000, 1.0) if answer < 0 else None


class Window(NamedTuple):
    limit: int
    seconds: float

    @classmethod
    def of(cls, rate: RateLimitItem | None) -> Window | None:
        return cls(rate.amount, float(rate.get_expiry())) if rate is not None else None


def failures_key(subject: str) -> str:
    """Hash-tagged like the SMS code's attempts (codes.py): a mobile's failures share its code's slot on a
    Redis Cluster, as the code check's script needs."""
    return f"gw:login-failures:{{app:code:{subject}}}"


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
    def __init__(self, primary: AnyRedis, local: MemoryFailures, replica: AnyRedis | None) -> None:
        self._exhausted = primary.register_script(EXHAUSTED)
        self._record = primary.register_script(RECORD)
        self.local = local  # while only the replica answers
        self._replica = replica

    async def _counting_here(self, exc: Exception) -> MemoryFailures:
        """The local count while the replica answers (logins go on, as the code check's do); else 503."""
        if self._replica is not None:
            try:
                await self._replica.ping()
            except _DOWN:
                pass
            else:
                log.error("redis primary unavailable, counting failed logins per instance: %s", exc)
                return self.local
        log.error("redis unavailable, refusing logins: %s", exc)
        raise StoreUnavailable() from None

    async def exhausted(self, subject: str, window: Window) -> float | None:
        now_ms = int(time.time() * 1000)
        try:
            answer = await self._exhausted(keys=[failures_key(subject)],
                                            args=[now_ms, int(window.seconds * 1000), window.limit])
        except _DOWN as exc:
            return (await self._counting_here(exc)).exhausted_now(subject, window)
        return wait_of(int(answer))

    async def record(self, subject: str, window: Window) -> None:
        now_ms = int(time.time() * 1000)
        try:
            await self._record(keys=[failures_key(subject)], args=[now_ms, int(window.seconds * 1000), member(now_ms)])
        except _DOWN as exc:
            (await self._counting_here(exc)).record_now(subject, window)
