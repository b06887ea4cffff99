"""Revoked sessions and per-user "not before" times.

Every check is a local dictionary look-up: no network round trip per request.
`MemoryRevocations` is the whole store for one instance. `RedisRevocations`
also keeps the list in Redis and keeps every instance's copy fresh through
pub/sub; while its subscription is down the copy may be stale, and checks
fail closed (503) unless `revocation.on_redis_down` is `allow`.

Redis layout: one sorted set, `gw:revocations`, whose members are
`sid:<sid>` or `user:<user_id>:<not_before>` scored by the time the entry
stops mattering (no token it covers can still be alive). The key's own TTL is
the longest token lifetime, renewed on each write. Changes are published on
`gw:events`, with user status changes (`status:<user_id>`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from redis.exceptions import RedisError

from ..claims import Claims
from . import StoreUnavailable

log = logging.getLogger("gateway.stores.revocation")
KEY = "gw:revocations"
CHANNEL = "gw:events"
Listener = Callable[[int], None]


class MemoryRevocations:
    def __init__(self, max_ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        self._max_ttl = max_ttl
        self._clock = clock
        self._sessions: dict[str, float] = {}  # sid -> when the entry may be dropped
        self._not_before: dict[int, tuple[float, float]] = {}  # user_id -> (not_before, drop at)
        self._status_listeners: list[Listener] = []
        self.fresh = True

    def is_revoked(self, claims: Claims) -> bool:
        sessions = self._sessions
        if claims.sid in sessions or claims.family in sessions:
            return True
        entry = self._not_before.get(claims.user_id)
        return entry is not None and claims.iat <= entry[0]

    def on_status_change(self, listener: Listener) -> None:
        self._status_listeners.append(listener)

    async def revoke_sessions(self, *sids: str) -> None:
        drop_at = self._clock() + self._max_ttl
        for member in _session_members(sids):
            self._apply(member, drop_at)

    async def revoke_user(self, user_id: int) -> None:
        now = self._clock()
        self._apply(f"user:{user_id}:{now}", now + self._max_ttl)

    async def status_changed(self, user_id: int) -> None:
        self._notify_status(user_id)

    def _apply(self, member: str, drop_at: float) -> None:
        kind, _, rest = member.partition(":")
        if kind == "sid":
            self._sessions[rest] = drop_at
        elif kind == "user":
            user, _, not_before = rest.partition(":")
            old = self._not_before.get(int(user), (float("-inf"), 0.0))
            self._not_before[int(user)] = max(old, (float(not_before), drop_at))
        self._prune()

    def _notify_status(self, user_id: int) -> None:
        for listener in self._status_listeners:
            listener(user_id)

    def _prune(self) -> None:
        now = self._clock()
        for sid in [s for s, drop in self._sessions.items() if drop <= now]:
            del self._sessions[sid]
        for user in [u for u, (_, drop) in self._not_before.items() if drop <= now]:
            del self._not_before[user]


class RedisRevocations(MemoryRevocations):
    def __init__(self, redis: Any, max_ttl: float, *, clock: Callable[[], float] = time.time,
                 retry_delay: float = 0.5) -> None:
        super().__init__(max_ttl, clock=clock)
        self._redis = redis
        self._retry_delay = retry_delay
        self._stopped = False
        self._synced = asyncio.Event()
        self.fresh = False  # until the first load after subscribing

    async def wait_until_fresh(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except asyncio.TimeoutError:
            log.error("revocation list not loaded within %.0fs; authenticated requests fail closed", timeout)
        return self.fresh

    def stop(self) -> None:
        self._stopped = True

    async def revoke_sessions(self, *sids: str) -> None:
        await self._store(_session_members(sids), self._clock() + self._max_ttl)

    async def revoke_user(self, user_id: int) -> None:
        now = self._clock()
        await self._store([f"user:{user_id}:{now}"], now + self._max_ttl)

    async def status_changed(self, user_id: int) -> None:
        self._notify_status(user_id)
        await self._publish(f"status:{user_id}")

    async def _store(self, members: list[str], drop_at: float) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(KEY, {member: drop_at for member in members})
                pipe.zremrangebyscore(KEY, "-inf", self._clock())
                pipe.expire(KEY, int(self._max_ttl) + 1)
                for member in members:
                    pipe.publish(CHANNEL, f"revoke {member} {drop_at}")
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.error("cannot store a revocation: %s", exc)
            raise StoreUnavailable() from None
        for member in members:
            self._apply(member, drop_at)

    async def _publish(self, message: str) -> None:
        try:
            await self._redis.publish(CHANNEL, message)
        except (RedisError, OSError) as exc:
            log.error("cannot publish %s: %s", message.split()[0], exc)
            raise StoreUnavailable() from None

    async def listen(self) -> None:
        """Subscribe, load the whole list, then apply changes as they come; forever."""
        while not self._stopped:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self._load()  # after subscribing, so no change can fall in between
                self.fresh = True
                self._synced.set()
                log.info("revocation list in sync")
                while not self._stopped:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._receive(message["data"])
            except (RedisError, OSError) as exc:
                if self.fresh:
                    log.error("revocation updates lost (%s); authenticated requests fail closed until back", exc)
                self.fresh = False
            finally:
                await pubsub.aclose()
            await asyncio.sleep(self._retry_delay)

    async def _load(self) -> None:
        entries = await self._redis.zrangebyscore(KEY, self._clock(), "+inf", withscores=True)
        self._sessions.clear()
        self._not_before.clear()
        for member, drop_at in entries:
            self._apply(_text(member), float(drop_at))
        # Anything cached about users may be older than what we just missed.
        self._notify_status(0)

    def _receive(self, data: Any) -> None:
        kind, _, rest = _text(data).partition(" ")
        if kind == "revoke":
            member, _, drop_at = rest.rpartition(" ")
            self._apply(member, float(drop_at))
        elif kind.startswith("status:"):
            self._notify_status(int(kind[len("status:"):]))


def _session_members(sids: tuple[str, ...]) -> list[str]:
    if not all(sids):
        raise ValueError("an empty session id would match no token, or every token made without one")
    return [f"sid:{sid}" for sid in sids]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
