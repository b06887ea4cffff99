"""The limit stage: which limits a request counts against, and the 429 when one is spent.

Keys: `ip` is the client address (see client_ip.py); `mobile` is the mobile
(or account) being logged into, normalized; `user` is the token's user id,
or the client address for an anonymous request.
"""
from __future__ import annotations

from typing import Iterable

from .config import LimitsConfig, RateLimit
from .errors import TooManyRequests
from .stores.limits import Limiter


class RateLimits:
    def __init__(self, limiter: Limiter, config: LimitsConfig) -> None:
        self._limiter = limiter
        self._config = config

    async def _spend(self, scope: str, limits: Iterable[RateLimit], values: dict[str, str]) -> None:
        for limit in limits:
            retry_after = await self._limiter.hit(limit.rate, scope, limit.key, values[limit.key])
            if retry_after is not None:
                raise TooManyRequests(retry_after, scope)

    async def sms(self, ip: str, mobile: str) -> None:
        await self._spend("sms", self._config.sms, {"ip": ip, "mobile": mobile})

    async def login(self, ip: str, subject: str) -> None:
        """Counts the attempt against `limits.login` (failed logins are counted by stores/failures.py)."""
        await self._spend("login", self._config.login, {"ip": ip, "mobile": subject})

    async def refresh(self, ip: str, user_id: int) -> None:
        await self._spend("refresh", self._config.refresh, {"ip": ip, "user": str(user_id)})

    async def route(self, path: str, limits: tuple[RateLimit, ...], ip: str, user_id: int | None) -> None:
        """The limits of the route configured at `path`."""
        if limits:
            user = str(user_id) if user_id is not None else f"ip:{ip}"
            await self._spend(f"route:{path}", limits, {"ip": ip, "user": user})
