"""One-time SMS codes at `app:code:{mobile}`, consumed atomically (GETDEL).

When the primary refuses connections the code is read from the replica, as
the seed does; a replica cannot delete, so the failure is logged loudly.
"""
from __future__ import annotations

import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import StoreUnavailable
from .kv import KeyValue

log = logging.getLogger("gateway.stores.codes")
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class CodeStore:
    def __init__(self, primary: KeyValue, replica: KeyValue | None = None) -> None:
        self._primary = primary
        self._replica = replica

    @staticmethod
    def key(mobile: str) -> str:
        return f"app:code:{mobile}"

    async def put(self, mobile: str, code: str, ttl: int) -> None:
        try:
            await self._primary.set(self.key(mobile), code, ex=ttl)
        except _DOWN as exc:
            log.error("cannot store sms code: redis primary unavailable: %s", exc)
            raise StoreUnavailable() from None

    async def take(self, mobile: str) -> str | None:
        """The stored code, removed so that it is used at most once."""
        key = self.key(mobile)
        try:
            return await self._primary.getdel(key)  # type: ignore[no-any-return]
        except _DOWN as exc:
            log.error("redis primary unavailable while reading sms code: %s", exc)
            if self._replica is None:
                raise StoreUnavailable() from None
        try:
            return await self._replica.get(key)  # type: ignore[no-any-return]
        except _DOWN as exc:
            log.error("redis replica unavailable while reading sms code: %s", exc)
            raise StoreUnavailable() from None
