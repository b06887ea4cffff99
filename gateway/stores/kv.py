"""Key-value connections: a real Redis (redis.asyncio), or `memory://` for one instance.

`MemoryKV` speaks the subset of the redis.asyncio API that the stores use,
with the same expiry behaviour, so a store is written once for both.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, AsyncIterator, Callable, Protocol

import redis.asyncio as aioredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisClusterException, RedisError

from ..config.model import RedisConfig
from . import unavailable_on


class KeyValue(Protocol):
    async def get(self, name: str) -> Any: ...
    async def set(self, name: str, value: str, ex: int | None = None, nx: bool = False) -> Any: ...
    async def incr(self, name: str) -> Any: ...
    async def expire(self, name: str, seconds: int) -> Any: ...
    async def delete(self, *names: str) -> Any: ...
    async def ping(self) -> None:
        """A round trip to the store (for /readyz); StoreUnavailable when it does not answer."""


SWEEP_EVERY = 1024  # writes between sweeps of expired keys


class MemoryKV:
    """Expired keys go when read, and in a sweep every SWEEP_EVERY writes, so keys nobody reads again
    (spent refresh tokens, say) do not pile up."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}
        self._clock = clock
        self._writes = 0

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            now = self._clock()
            for name in [n for n, (_, deadline) in self._data.items() if deadline is not None and deadline <= now]:
                del self._data[name]

    def _live(self, name: str) -> str | None:
        item = self._data.get(name)
        if item is None:
            return None
        value, deadline = item
        if deadline is not None and deadline <= self._clock():
            del self._data[name]
            return None
        return value

    async def get(self, name: str) -> str | None:
        return self._live(name)

    async def set(self, name: str, value: str, ex: float | None = None, nx: bool = False) -> bool | None:
        if nx and self._live(name) is not None:
            return None
        deadline = None if ex is None else self._clock() + ex
        self._data[name] = (str(value), deadline)
        self._wrote()
        return True

    async def incr(self, name: str) -> int:
        value = int(self._live(name) or 0) + 1
        deadline = self._data[name][1] if name in self._data else None
        self._data[name] = (str(value), deadline)
        return value

    async def expire(self, name: str, seconds: float) -> bool:
        value = self._live(name)
        if value is None:
            return False
        self._data[name] = (value, self._clock() + seconds)
        return True

    async def delete(self, *names: str) -> int:
        return sum(self._data.pop(name, None) is not None for name in names)

    async def ping(self) -> None:
        return None  # in the process: it answers while the process does

    async def aclose(self) -> None:
        self._data.clear()


class RedisKV:
    """A redis.asyncio client as a KeyValue: a Redis that cannot be reached is StoreUnavailable (503) here,
    so that no stage above the stores sees a driver's exception."""

    def __init__(self, client: AnyRedis) -> None:
        self._client = client

    async def get(self, name: str) -> Any:
        with _unavailable():
            return await self._client.get(name)

    async def set(self, name: str, value: str, ex: int | None = None, nx: bool = False) -> Any:
        with _unavailable():
            return await self._client.set(name, value, ex=ex, nx=nx)

    async def incr(self, name: str) -> Any:
        with _unavailable():
            return await self._client.incr(name)

    async def expire(self, name: str, seconds: int) -> Any:
        with _unavailable():
            return await self._client.expire(name, seconds)

    async def delete(self, *names: str) -> Any:
        with _unavailable():
            return await self._client.delete(*names)

    async def ping(self) -> None:
        with _unavailable():
            if isinstance(self._client, RedisCluster):  # a node answers PING while its cluster is down
                state = (await self._client.cluster_info()).get("cluster_state")
                if state != "ok":
                    raise RedisClusterException(f"cluster_state is {state}")
            else:
                await self._client.ping()


def _unavailable() -> contextlib.AbstractContextManager[None]:
    return unavailable_on(REDIS_DOWN, "redis")


_TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 2}
# A plain client (Sentinel's included), or a Redis Cluster client: the stores use what both have. Every
# command and script of the stores names its keys, and those of one script share a hash tag (codes.py).
AnyRedis = Redis | RedisCluster
# What a Redis that cannot serve raises: the cluster client's own exception is no RedisError.
REDIS_DOWN: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


REDIS_CONNECTIONS = 100  # to one Redis, per process, at most
# Pools make a command wait for a free connection (as long as a command may take) when all are in use:
# redis-py's own pool refuses at once ("Too many connections"), which turned a burst of requests into 503s
# and ERROR lines while Redis was well (found by bench.soak).
_BLOCKING: dict[str, Any] = {"max_connections": REDIS_CONNECTIONS, "timeout": _TIMEOUTS["socket_timeout"]}


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (it finds the primary or a replica) with the blocking pool's wait for a connection."""


def connect(url: str) -> Redis:
    pool = aioredis.BlockingConnectionPool.from_url(url, decode_responses=True, **_BLOCKING, **_TIMEOUTS)
    return Redis.from_pool(pool)


def connect_redis(config: RedisConfig) -> tuple[AnyRedis, Redis | None]:
    """(primary, replica or None). With Sentinel the primary follows a promoted replica,
    and the replica is any replica Sentinel knows. A cluster is one client, which follows the slots' moves
    (MOVED, ASK) itself; its replicas are its own business."""
    if config.cluster is not None:
        nodes = [ClusterNode(host, port) for host, port in config.cluster.nodes]
        return RedisCluster(startup_nodes=nodes, decode_responses=True, password=config.cluster.password,
                            socket_connect_timeout=_TIMEOUTS["socket_connect_timeout"],
                            socket_timeout=_TIMEOUTS["socket_timeout"]), None
    if config.sentinel is None:
        return connect(config.url), connect(config.replica_url) if config.replica_url else None
    sentinel = Sentinel(list(config.sentinel.hosts), sentinel_kwargs=dict(_TIMEOUTS),  # type: ignore[no-untyped-call]
                        **_TIMEOUTS)
    service, db, password = config.sentinel.service, config.sentinel.db, config.sentinel.password
    return (sentinel.master_for(service, decode_responses=True, db=db, password=password,
                                connection_pool_class=_BlockingSentinelPool, **_BLOCKING),
            sentinel.slave_for(service, decode_responses=True, db=db, password=password,
                               connection_pool_class=_BlockingSentinelPool, **_BLOCKING))


@contextlib.asynccontextmanager
async def open_redis(config: RedisConfig) -> AsyncIterator[tuple[AnyRedis, Redis | None]]:
    """connect_redis's clients, closed when done: for the operator's commands."""
    primary, replica = connect_redis(config)
    try:
        yield primary, replica
    finally:
        await primary.aclose()
        if replica is not None:
            await replica.aclose()
