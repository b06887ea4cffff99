"""`user_basic.last_login`, written behind: the users who logged in during one second share one UPDATE.

A login does not wait for the write (nothing depends on it, and a round trip
per login was a third of a login's cost). What is noted is written at the
next tick, and at shutdown; a write that fails is tried again at the next
tick, so a database outage delays the times but loses none.
"""
from __future__ import annotations

import asyncio
import logging

from ..stores.users import UserStore

log = logging.getLogger("gateway.auth")
INTERVAL = 1.0
BATCH = 500  # users per UPDATE


class LastLogins:
    def __init__(self, users: UserStore, interval: float = INTERVAL) -> None:
        self._users = users
        self._interval = interval
        self._noted: set[int] = set()

    def note(self, user_id: int) -> None:
        self._noted.add(user_id)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._noted:
            return
        noted, self._noted = sorted(self._noted), set()
        for start in range(0, len(noted), BATCH):
            batch = noted[start:start + BATCH]
            try:
                await self._users.touch_logins(batch)
            except Exception as exc:  # StoreUnavailable, or anything else: kept for the next tick
                log.warning("last_login of %d users not written yet: %s", len(batch), type(exc).__name__)
                self._noted.update(batch)
