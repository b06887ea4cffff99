"""Revoked sessions and per-user "not before" times.

Every check is a local dictionary look-up (`RevocationList`): no network
round trip per request. Two stores answer the `Revocations` protocol:
`MemoryRevocations` is the whole store for one instance; `RedisRevocations`
keeps the list in Redis too and every instance's copy fresh through pub/sub.
While its subscription is down the copy may be stale, and checks fail closed
(503) unless `revocation.on_redis_down` is `allow`. Both also tell the user
status cache when a user's status changed (`StatusListener`).

Redis layout: one sorted set, `gw:revocations`, whose members are
`sid:<sid>` or `user:<user_id>:<not_before>` scored by the time the entry
stops mattering (no token it covers can still be alive). The key's own TTL is
the longest token lifetime, renewed on each write. Changes are published on
`gw:events`, with user status changes (`status:<user_id>`).
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import Any, Callable, NamedTuple, Protocol, cast


from ..claims import Claims
from . import StoreUnavailable
from redis.asyncio.cluster import RedisCluster

from .kv import REDIS_DOWN, AnyRedis

log = logging.getLogger("gateway.stores.revocation")
KEY = "gw:revocations"
CHANNEL = "gw:events"


class StatusListener(Protocol):
    """Told when a user's enabled/disabled status may have changed (the user status cache)."""

    def forget(self, user_id: int) -> None: ...
    def forget_all(self) -> None: ...


class Revocations(Protocol):
    @property
    def fresh(self) -> bool:
        """False while changes made elsewhere may be missing from this instance's copy."""

    def is_revoked(self, claims: Claims) -> bool: ...
    def on_status_change(self, listener: StatusListener) -> None: ...
    def off_status_change(self, listener: StatusListener) -> None: ...
    async def revoke_sessions(self, *sids: str) -> None: ...
    async def revoke_user(self, user_id: int) -> None:
        """Every token of the user issued until now."""
    async def status_changed(self, user_id: int) -> None: ...


class Entry(NamedTuple):
    """One revocation: a session (`sid`), or a user's tokens issued until `not_before`; made by `session` or
    `user`. `drop_at`: when no token it covers can still be alive."""

    drop_at: float
    sid: str | None = None
    user_id: int | None = None
    not_before: float = 0.0

    @classmethod
    def session(cls, sid: str, drop_at: float) -> Entry:
        return cls(drop_at, sid=sid)

    @classmethod
    def user(cls, user_id: int, not_before: float, drop_at: float) -> Entry:
        return cls(drop_at, user_id=user_id, not_before=not_before)

    def member(self) -> str:
        """As a member of the Redis sorted set (scored by `drop_at`)."""
        return f"sid:{self.sid}" if self.sid is not None else f"user:{self.user_id}:{self.not_before}"

    @classmethod
    def parse(cls, member: str, drop_at: float) -> Entry | None:
        """None for a member this version does not know (or cannot read)."""
        kind, _, rest = member.partition(":")
        try:
            if kind == "sid" and rest:
                return cls.session(rest, drop_at)
            if kind == "user":
                user, _, not_before = rest.partition(":")
                return cls.user(int(user), float(not_before), drop_at)
        except ValueError:
            pass
        log.warning("revocation entry not understood, left out: %.40r", member)
        return None


class RevocationList:
    """This instance's copy: revoked sessions and each user's not-before time, dropped when they no longer
    matter."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._sessions: dict[str, float] = {}  # sid -> when the entry may be dropped
        self._not_before: dict[int, tuple[float, float]] = {}  # user_id -> (not_before, drop at)
        # (drop at, 0 and a sid | 1 and a user id) of every entry added, soonest first: pruning looks at what
        # is due alone, where a scan of the whole list on each revocation cost 68 ms at 1.2M entries (a day of
        # logouts at scale). A key added again leaves its old triple behind, skipped when it comes up.
        self._due: list[tuple[float, int, str | int]] = []

    def is_revoked(self, claims: Claims) -> bool:
        sessions = self._sessions
        if claims.sid in sessions or claims.family in sessions:
            return True
        entry = self._not_before.get(claims.user_id)
        return entry is not None and claims.iat <= entry[0]

    def add(self, entry: Entry) -> None:
        if entry.sid is not None:
            self._sessions[entry.sid] = entry.drop_at
            heapq.heappush(self._due, (entry.drop_at, 0, entry.sid))
        elif entry.user_id is not None:
            old = self._not_before.get(entry.user_id, (float("-inf"), 0.0))
            self._not_before[entry.user_id] = kept = max(old, (entry.not_before, entry.drop_at))
            heapq.heappush(self._due, (kept[1], 1, entry.user_id))
        self._prune()

    def clear(self) -> None:
        self._sessions.clear()
        self._not_before.clear()
        self._due.clear()

    def __len__(self) -> int:
        return len(self._sessions) + len(self._not_before)

    def _prune(self) -> None:
        now, due = self._clock(), self._due
        while due and due[0][0] <= now:
            _, _, key = heapq.heappop(due)
            if isinstance(key, str):
                if self._sessions.get(key, now + 1) <= now:
                    del self._sessions[key]
            elif self._not_before.get(key, (0.0, now + 1))[1] <= now:
                del self._not_before[key]


class _Listeners:
    def __init__(self) -> None:
        self._listeners: list[StatusListener] = []

    def add(self, listener: StatusListener) -> None:
        self._listeners.append(listener)

    def remove(self, listener: StatusListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def forget(self, user_id: int) -> None:
        for listener in self._listeners:
            listener.forget(user_id)

    def forget_all(self) -> None:
        for listener in self._listeners:
            listener.forget_all()


class MemoryRevocations:
    """The revocations of one instance (`redis.url: memory://`)."""

    fresh = True

    def __init__(self, max_ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        self._max_ttl = max_ttl
        self._clock = clock
        self._list = RevocationList(clock)
        self._listeners = _Listeners()

    def is_revoked(self, claims: Claims) -> bool:
        return self._list.is_revoked(claims)

    def on_status_change(self, listener: StatusListener) -> None:
        self._listeners.add(listener)

    def off_status_change(self, listener: StatusListener) -> None:
        self._listeners.remove(listener)

    async def revoke_sessions(self, *sids: str) -> None:
        for entry in _session_entries(sids, self._clock() + self._max_ttl):
            self._list.add(entry)

    async def revoke_user(self, user_id: int) -> None:
        now = self._clock()
        self._list.add(Entry.user(user_id, now, now + self._max_ttl))

    async def status_changed(self, user_id: int) -> None:
        self._listeners.forget(user_id)


class RedisRevocations:
    """The revocations of every instance sharing one Redis: stored there, mirrored here through pub/sub."""

    def __init__(self, redis: AnyRedis, max_ttl: float, *, clock: Callable[[], float] = time.time,
                 retry_delay: float = 0.5) -> None:
        self._redis = redis
        self._max_ttl = max_ttl
        self._clock = clock
        self._list = RevocationList(clock)
        self._listeners = _Listeners()
        self._retry_delay = retry_delay
        self._stopped = False
        self._synced = asyncio.Event()
        self.fresh = False  # until the first load after subscribing

    def is_revoked(self, claims: Claims) -> bool:
        return self._list.is_revoked(claims)

    def on_status_change(self, listener: StatusListener) -> None:
        self._listeners.add(listener)

    def off_status_change(self, listener: StatusListener) -> None:
        self._listeners.remove(listener)

    async def wait_until_fresh(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except asyncio.TimeoutError:
            log.error("revocation list not loaded within %.0fs; authenticated requests fail closed", timeout)
        return self.fresh

    def stop(self) -> None:
        self._stopped = True

    async def revoke_sessions(self, *sids: str) -> None:
        await self._store(_session_entries(sids, self._clock() + self._max_ttl))

    async def revoke_user(self, user_id: int) -> None:
        now = self._clock()
        await self._store([Entry.user(user_id, now, now + self._max_ttl)])

    async def status_changed(self, user_id: int) -> None:
        self._listeners.forget(user_id)
        await self._publish(f"status:{user_id}")

    async def _store(self, entries: list[Entry]) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(KEY, {entry.member(): entry.drop_at for entry in entries})
                pipe.zremrangebyscore(KEY, "-inf", self._clock())
                pipe.expire(KEY, int(self._max_ttl) + 1)
                await pipe.execute()
        except REDIS_DOWN as exc:
            log.error("cannot store a revocation: %s", exc)
            raise StoreUnavailable() from None
        for entry in entries:  # stored: in force here at once, whatever becomes of the message
            self._list.add(entry)
        try:
            # Published once stored (a cluster runs no keyless command inside a transaction). Should this fail,
            # the other instances load the stored list when their subscription comes back; the 503 asks the
            # client to retry, which is harmless.
            for entry in entries:
                await self._redis.publish(CHANNEL, f"revoke {entry.member()} {entry.drop_at}")
        except REDIS_DOWN as exc:
            log.error("a revocation is stored but could not be announced: %s", exc)
            raise StoreUnavailable() from None

    async def _publish(self, message: str) -> None:
        try:
            await self._redis.publish(CHANNEL, message)
        except REDIS_DOWN as exc:
            log.error("cannot publish %s: %s", message.split()[0], exc)
            raise StoreUnavailable() from None

    async def listen(self) -> None:
        """Subscribe, load the whole list, then apply changes as they come; forever."""
        while not self._stopped:
            try:  # a cluster client learns its slots on its first command; its pub/sub needs them first
                if isinstance(self._redis, RedisCluster):
                    await self._redis.initialize()
            except REDIS_DOWN as exc:
                log.warning("redis cluster unreachable (%s); retrying", exc)
                await asyncio.sleep(self._retry_delay)
                continue
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
            except REDIS_DOWN as exc:
                if self.fresh:
                    log.error("revocation updates lost (%s); authenticated requests fail closed until back", exc)
                self.fresh = False
                if isinstance(self._redis, RedisCluster):  # the node it listened on may have failed over
                    await _refresh_topology(self._redis)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            await asyncio.sleep(self._retry_delay)

    async def load_once(self) -> None:
        """The list as Redis holds it now, without subscribing: for the operator's commands."""
        try:
            await self._load()
        except REDIS_DOWN as exc:
            log.error("cannot load the revocation list: %s", type(exc).__name__)
            raise StoreUnavailable() from None

    async def _load(self) -> None:
        entries = await self._redis.zrangebyscore(KEY, self._clock(), "+inf", withscores=True)
        self._list.clear()
        for member, drop_at in cast(list[tuple[str, float]], entries):  # withscores: (member, score) pairs
            entry = Entry.parse(_text(member), float(drop_at))
            if entry is not None:
                self._list.add(entry)
        # Anything cached about users may be older than what we just missed.
        self._listeners.forget_all()

    def _receive(self, data: Any) -> None:
        kind, _, rest = _text(data).partition(" ")
        try:
            if kind == "revoke":
                member, _, drop_at = rest.rpartition(" ")
                entry = Entry.parse(member, float(drop_at))
                if entry is not None:
                    self._list.add(entry)
            elif kind.startswith("status:"):
                self._listeners.forget(int(kind[len("status:"):]))
        except ValueError:  # a message this version cannot read must not end the subscription
            log.warning("revocation message not understood, ignored: %.60r", data)


async def _refresh_topology(cluster: RedisCluster) -> None:
    try:
        await cluster.nodes_manager.initialize()
    except REDIS_DOWN as exc:
        log.warning("redis cluster topology not refreshed: %s", exc)


def _session_entries(sids: tuple[str, ...], drop_at: float) -> list[Entry]:
    if not all(sids):
        raise ValueError("an empty session id would match no token, or every token made without one")
    return [Entry.session(sid, drop_at) for sid in sids]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
