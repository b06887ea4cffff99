"""Issuing and verifying the seed's access and refresh tokens (pure: no I/O).

Payload: {"user_id", "refresh", "exp", "iat", "jti"}. Verification pins the
configured algorithm and checks the claim types itself, because PyJWT accepts
an `exp` given as a numeric string and knows nothing of `user_id` or `refresh`.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Callable

import jwt

from ..config import JwtConfig


class InvalidToken(Exception):
    """Malformed, badly signed, expired, or with claims of the wrong type."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    refresh: bool
    exp: float
    iat: float
    jti: str


@dataclass(frozen=True)
class TokenPair:
    token: str
    refresh_token: str


class TokenService:
    def __init__(self, config: JwtConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._key = config.secret
        self._algorithm = config.algorithm
        self._algorithms = [config.algorithm]
        self._access_ttl = config.access_ttl
        self._refresh_ttl = config.refresh_ttl
        self._clock = clock
        self._cache: dict[str, Claims] = {}
        self._cache_size = config.cache_size

    def issue(self, user_id: int, *, refresh: bool) -> str:
        now = int(self._clock())
        ttl = self._refresh_ttl if refresh else self._access_ttl
        payload = {
            "user_id": user_id,
            "refresh": refresh,
            "exp": now + int(ttl),
            "iat": now,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(payload, self._key, algorithm=self._algorithm)

    def issue_pair(self, user_id: int) -> TokenPair:
        return TokenPair(self.issue(user_id, refresh=False), self.issue(user_id, refresh=True))

    def verify(self, token: str) -> Claims:
        """Verify once per distinct token; the result is cached, never past its `exp`."""
        claims = self._cache.get(token)
        now = self._clock()
        if claims is not None:
            if claims.exp > now:
                return claims
            del self._cache[token]
            raise InvalidToken("expired")
        claims = self._decode(token, now)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._evict(now)
            self._cache[token] = claims
        return claims

    def _evict(self, now: float) -> None:
        cache = self._cache
        expired = [t for t, c in cache.items() if c.exp <= now]
        for token in expired:
            del cache[token]
        while len(cache) >= self._cache_size:
            del cache[next(iter(cache))]  # oldest first: dicts keep insertion order

    def _decode(self, token: str, now: float) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options={"require": ["exp"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        return _claims(payload, now)


def _claims(payload: dict[str, object], now: float) -> Claims:
    exp, user_id, refresh = payload.get("exp"), payload.get("user_id"), payload.get("refresh")
    if not _is_number(exp):
        raise InvalidToken("exp is not a number")
    if exp <= now:  # type: ignore[operator]
        raise InvalidToken("expired")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise InvalidToken("user_id is not a positive integer")
    if not isinstance(refresh, bool):
        raise InvalidToken("refresh is not a boolean")
    iat = payload.get("iat", 0)
    jti = payload.get("jti", "")
    return Claims(
        user_id=user_id,
        refresh=refresh,
        exp=float(exp),  # type: ignore[arg-type]
        iat=float(iat) if _is_number(iat) else 0.0,  # type: ignore[arg-type]
        jti=jti if isinstance(jti, str) else "",
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bearer_token(header: str | None) -> str | None:
    """The token from `Bearer <token>` (exactly one space, as the seed says), else None."""
    if header is None or not header.startswith("Bearer "):
        return None
    token = header[7:]
    if not token or " " in token or "\t" in token:
        return None
    return token
