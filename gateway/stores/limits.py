"""Sliding-window rate limits (the `limits` library's moving window), shared through Redis.

On `memory://` the window lives in this process. When Redis cannot be
reached a limit is not dropped: it falls back to this instance's own window
until Redis answers again.
"""
from __future__ import annotations

import logging
import time

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..config import RedisConfig
from .kv import REDIS_DOWN, AnyRedis

log = logging.getLogger("gateway.stores.limits")
_DOWN: tuple[type[Exception], ...] = (StorageError, *REDIS_DOWN)


def redis_storage(client: AnyRedis, config: RedisConfig) -> Storage:
    """A limits storage on the gateway's own redis.asyncio connection pool (plain or Sentinel); on a
    cluster, the library's own cluster client (each limit's window is one key, so one slot)."""
    if config.cluster is not None:
        nodes = ",".join(f"{host}:{port}" for host, port in config.cluster.nodes)
        password = config.cluster.password
        return RedisClusterStorage(f"async+redis+cluster://{nodes}", implementation="redispy", wrap_exceptions=True,
                                   key_prefix="gw:limits", socket_timeout=2, socket_connect_timeout=2,
                                   **({"password": password} if password else {}))
    assert isinstance(client, Redis)
    return RedisStorage("async+redis://", implementation="redispy", wrap_exceptions=True,
                        connection_pool=client.connection_pool,  # type: ignore[arg-type]  # typed as scalars
                        key_prefix="gw:limits")


class Limiter:
    def __init__(self, storage: Storage | None = None) -> None:
        self._storage = storage
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared = MovingWindowRateLimiter(storage) if storage is not None else self._local

    async def close(self) -> None:
        """Close the client the limits library made for a cluster (on a plain Redis it shares the gateway's,
        which the gateway closes)."""
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)  # limits' redis-py bridge
        if isinstance(client, RedisCluster):
            await client.aclose()

    async def hit(self, rate: RateLimitItem, *key: str) -> float | None:
        """Count one request. None when it is allowed, else the seconds until it would be."""
        return await self._ask(rate, key, count=True)

    async def exhausted(self, rate: RateLimitItem, *key: str) -> float | None:
        """Like hit, without counting."""
        return await self._ask(rate, key, count=False)

    async def _ask(self, rate: RateLimitItem, key: tuple[str, ...], *, count: bool) -> float | None:
        try:
            return await _ask(self._shared, rate, key, count)
        except _DOWN as exc:
            log.error("rate limit storage unavailable, limiting per instance: %s", exc)
            return await _ask(self._local, rate, key, count)


async def _ask(limiter: MovingWindowRateLimiter, rate: RateLimitItem, key: tuple[str, ...], count: bool) -> float | None:
    allowed = await (limiter.hit(rate, *key) if count else limiter.test(rate, *key))
    if allowed:
        return None
    return await _retry_after(limiter, rate, key)


async def _retry_after(limiter: MovingWindowRateLimiter, rate: RateLimitItem, key: tuple[str, ...]) -> float:
    stats = await limiter.get_window_stats(rate, *key)
    return max(stats.reset_time - time.time(), 1.0)
