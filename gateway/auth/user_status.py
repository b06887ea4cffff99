"""Whether a user is enabled, cached for `revocation.user_status_cache_ttl` seconds.

A disabled user's tokens are refused on protected routes within that time;
`users disable` also publishes the change, so instances usually forget the
cached status at once.
"""
from __future__ import annotations

import time
from typing import Callable

from ..stores.users import UserStore

MAX_ENTRIES = 100_000


class UserStatusCache:
    def __init__(self, users: UserStore, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._users = users
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[int, tuple[bool, float]] = {}

    def cached(self, user_id: int) -> bool | None:
        """The cached answer, or None when the store must be asked (no coroutine on the common path)."""
        entry = self._cache.get(user_id)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return None

    async def enabled(self, user_id: int) -> bool:
        cached = self.cached(user_id)
        if cached is not None:
            return cached
        now = self._clock()
        user = await self._users.get_by_id(user_id)
        enabled = user is not None and user.enabled
        if self._ttl > 0:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache[user_id] = (enabled, now + self._ttl)
        return enabled

    def forget(self, user_id: int) -> None:
        """Drop one user's cached status."""
        self._cache.pop(user_id, None)

    def forget_all(self) -> None:
        self._cache.clear()
