"""One-time SMS codes at `app:code:{mobile}`, with a bounded number of guesses.

In Redis a check is one script, one round trip: it refuses a mobile whose
failed logins are spent (failures.py), counts the attempt, compares the guess
and, when it is right, deletes the code, else counts a failed login, all in
one atomic step, so of two concurrent right guesses exactly one wins and no
guess escapes the count. The comparison is
Lua string equality, which for Redis's Lua (5.1, every string interned) is a
pointer comparison, so its time says nothing about the code. After
`max_attempts` guesses the code is dead, even for the right one. In memory,
and on the replica, the code is compared in constant time here.

When the primary refuses connections the code is read from the replica, as
the seed does. A replica cannot count or delete, so during the outage this
instance counts attempts and spent codes itself, and says so in the log.
"""
from __future__ import annotations

import hmac
import logging
import time
from typing import Any, Awaitable, Callable, NamedTuple, Protocol


from . import StoreUnavailable
from .failures import LUA, MemoryFailures, Window, failures_key, member, wait_of
from redis.asyncio import Redis

from .kv import REDIS_DOWN, AnyRedis, KeyValue, MemoryKV

log = logging.getLogger("gateway.stores.codes")
SWEEP_AT = 1024
_DOWN = REDIS_DOWN

CHECK = LUA + """
local limit = tonumber(ARGV[5])
local now = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
if limit > 0 then
  local wait = spent(KEYS[3], now, window, limit)
  if wait then return -1 - wait end
end
local ok = 0
local code = redis.call('GET', KEYS[1])
if code then
  local n = redis.call('INCR', KEYS[2])
  if n == 1 then redis.call('PEXPIRE', KEYS[2], math.max(redis.call('PTTL', KEYS[1]), 1)) end
  if n > tonumber(ARGV[1]) then
    redis.call('DEL', KEYS[1], KEYS[2])
  elseif code == ARGV[2] then
    redis.call('DEL', KEYS[1], KEYS[2])
    ok = 1
  end
end
if ok == 0 and limit > 0 then record(KEYS[3], now, window, ARGV[6]) end
return ok
"""


def code_key(mobile: str) -> str:
    return f"app:code:{mobile}"


def attempts_key(mobile: str) -> str:
    """In the code's slot on a Redis Cluster: its hash tag is the code's whole key (the seed's key, which has
    none, hashes whole), so the check script's keys share one slot."""
    return f"gw:code-attempts:{{{code_key(mobile)}}}"


def same(real: str, guess: str) -> bool:
    return hmac.compare_digest(real.encode(), guess.encode())


class Checked(NamedTuple):
    ok: bool  # the right code, now spent
    retry_after: float | None = None  # the mobile's failed logins are spent: nothing was checked


class CodeStore(Protocol):
    async def put(self, mobile: str, code: str, ttl: int) -> None:
        """Store a new code, replacing the old one and its attempt count."""

    async def check(self, mobile: str, guess: str, max_attempts: int, failures: Window | None) -> Checked:
        """Right once for the right code; counts every guess, and every wrong one as a failed login."""


class MemoryCodeStore:
    def __init__(self, failures: MemoryFailures, clock: Callable[[], float] = time.monotonic) -> None:
        self._codes: dict[str, list[Any]] = {}  # mobile -> [code, attempts, deadline]
        self._failures = failures
        self._clock = clock

    async def put(self, mobile: str, code: str, ttl: int) -> None:
        now = self._clock()
        if len(self._codes) >= SWEEP_AT and len(self._codes) % SWEEP_AT == 0:
            for stale in [m for m, entry in self._codes.items() if entry[2] <= now]:
                del self._codes[stale]  # codes never tried again would otherwise stay for good
        self._codes[mobile] = [code, 0, now + ttl]

    async def check(self, mobile: str, guess: str, max_attempts: int, failures: Window | None) -> Checked:
        return await _counting_here(self._failures, mobile, failures, lambda: self._right(mobile, guess, max_attempts))

    async def _right(self, mobile: str, guess: str, max_attempts: int) -> bool:
        entry = self._codes.get(mobile)
        if entry is None or entry[2] <= self._clock():
            self._codes.pop(mobile, None)
            return False
        entry[1] += 1
        if entry[1] > max_attempts:
            del self._codes[mobile]
            return False
        if same(entry[0], guess):
            del self._codes[mobile]
            return True
        return False


async def _counting_here(local: MemoryFailures, mobile: str, window: Window | None,
                         right: Callable[[], Awaitable[bool]]) -> Checked:
    """A check whose failed logins this instance counts itself."""
    if window is not None and (wait := local.exhausted_now(mobile, window)) is not None:
        return Checked(False, wait)
    ok = await right()
    if not ok and window is not None:
        local.record_now(mobile, window)
    return Checked(ok)


class RedisCodeStore:
    def __init__(self, primary: AnyRedis, replica: Redis | None, failures: MemoryFailures) -> None:
        self._primary = primary
        self._replica = replica
        self._check = primary.register_script(CHECK)
        self._local: KeyValue = MemoryKV()  # attempts and spent codes while only the replica answers
        self._local_failures = failures  # failed logins while only the replica answers

    async def put(self, mobile: str, code: str, ttl: int) -> None:
        try:
            async with self._primary.pipeline(transaction=True) as pipe:
                pipe.set(code_key(mobile), code, ex=ttl)
                pipe.delete(attempts_key(mobile))
                await pipe.execute()
        except _DOWN as exc:
            log.error("cannot store sms code: redis primary unavailable: %s", exc)
            raise StoreUnavailable() from None

    async def check(self, mobile: str, guess: str, max_attempts: int, failures: Window | None) -> Checked:
        now_ms = int(time.time() * 1000)
        window: list[int | str] = [int(failures.seconds * 1000), failures.limit, member(now_ms)] if failures \
            else [0, 0, ""]
        try:
            result = int(await self._check(keys=[code_key(mobile), attempts_key(mobile), failures_key(mobile)],
                                           args=[max_attempts, guess, now_ms, *window]))
        except _DOWN as exc:
            log.error("redis primary unavailable while checking an sms code: %s", exc)
            if self._replica is None:
                raise StoreUnavailable() from None
            return await _counting_here(self._local_failures, mobile, failures,
                                        lambda: self._check_on_replica(mobile, guess, max_attempts))
        return Checked(result == 1, wait_of(result))

    async def _check_on_replica(self, mobile: str, guess: str, max_attempts: int) -> bool:
        assert self._replica is not None
        try:
            stored = await self._replica.get(code_key(mobile))
        except _DOWN as exc:
            log.error("redis replica unavailable while reading an sms code: %s", exc)
            raise StoreUnavailable() from None
        if stored is None:
            return False
        real = stored.decode() if isinstance(stored, bytes) else stored
        log.warning("sms code read from the replica; attempts are counted by this instance only")
        marker = f"{mobile}:{real}"
        if await self._local.get(f"spent:{marker}") is not None:
            return False
        tries = await self._local.incr(f"tries:{marker}")
        await self._local.expire(f"tries:{marker}", 600)
        if tries > max_attempts or not same(real, guess):
            return False
        await self._local.set(f"spent:{marker}", "1", ex=600)
        return True
