"""Sessions: refresh (with optional rotation, RFC 9700 §4.14.2) and logout.

With `jwt.rotate_refresh_tokens`, a refresh token is spent by its first use.
Whoever spends it first mints the successor and keeps it for
`jwt.rotation_grace` seconds, so that concurrent refreshes with the same
token (a browser's several tabs) all get that same successor. A spent token
presented after the grace window is a replay: its whole session is revoked,
newest refresh token included.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Callable

from ..claims import Claims
from ..config import JwtConfig
from ..errors import Forbidden, ServiceUnavailable
from ..stores.kv import KeyValue
from ..stores.revocation import Revocations
from . import legacy
from .tokens import TokenService

PENDING = "pending"
PENDING_TTL = 10  # a rotation that dies half-way frees its token again after this long
WAIT_STEP, WAIT_STEPS = 0.05, 60


def wrong_refresh_token() -> Forbidden:
    return Forbidden("Wrong refresh token.")


class Sessions:
    def __init__(self, tokens: TokenService, revocations: Revocations, kv: KeyValue, config: JwtConfig,
                 *, clock: Callable[[], float] = time.time) -> None:
        self._tokens = tokens
        self._revocations = revocations
        self._kv = kv
        self._rotate = config.rotate_refresh_tokens
        self._grace = config.rotation_grace
        self._clock = clock

    async def refresh(self, claims: Claims) -> dict[str, str]:
        if not self._rotate:
            return {"token": self._tokens.issue(claims.user_id, refresh=False, sid=claims.sid)}
        spent = f"gw:spent:{claims.jti}"
        ttl = max(1, math.ceil(claims.exp - self._clock()))
        if await self._kv.set(spent, PENDING, ex=min(ttl, PENDING_TTL), nx=True):
            return await self._rotate_first(claims, spent, ttl)
        return await self._replay(claims, spent)

    async def _rotate_first(self, claims: Claims, spent: str, ttl: int) -> dict[str, str]:
        pair = self._tokens.issue_pair(claims.user_id, sid=claims.sid)
        successor = {"token": pair.token, "refresh_token": pair.refresh_token}
        await self._kv.set(f"gw:successor:{claims.jti}", json.dumps(successor), ex=max(1, math.ceil(self._grace)))
        await self._kv.set(spent, repr(self._clock()), ex=ttl)
        return successor

    async def _replay(self, claims: Claims, spent: str) -> dict[str, str]:
        spent_at = await self._spent_at(spent)
        if spent_at is not None and self._clock() - spent_at <= self._grace:
            successor = await self._kv.get(f"gw:successor:{claims.jti}")
            if successor is not None:
                return dict(json.loads(successor))
        await self.end(claims)
        raise wrong_refresh_token()

    async def _spent_at(self, spent: str) -> float | None:
        for _ in range(WAIT_STEPS):
            value: Any = await self._kv.get(spent)
            if value != PENDING:
                return float(value) if value is not None else None
            await asyncio.sleep(WAIT_STEP)  # the first refresh is still minting the successor
        raise ServiceUnavailable()

    async def end(self, claims: Claims) -> None:
        await self._revocations.revoke_sessions(*legacy.sessions_ended_by(claims.sid, claims.user_id))
