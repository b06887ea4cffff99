"""Issuing and verifying the seed's access and refresh tokens (pure: no I/O).

Payload: {"user_id", "refresh", "exp", "iat", "jti", "sid"} (+ "iss", "aud"
when configured). `sid` names the session: every token issued from one login,
across refreshes and rotations, shares it, so one revocation ends them all.
Tokens without a `jti` were made by the toutiao backend before the switch;
`legacy.py` gives them session keys of their own.

Verification trusts nothing in the header but `kid`, and that only as a key
into the configured table: the key's own algorithm is pinned (so `none` and
HS/RS confusion fail), and `jku`, `x5u`, `jwk` and `x5c` are refused outright,
never fetched. Claim types are checked here because PyJWT accepts an `exp`
given as a numeric string and knows nothing of `user_id` or `refresh`.
"""
from __future__ import annotations

import itertools
import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

import jwt
from jwt.algorithms import HMACAlgorithm

from ..claims import Claims
from ..config import JwtConfig, JwtKey
from . import legacy

_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
# Expired entries are swept out every quarter of the access TTL, at most a minute apart: a token verified once
# and never again (most are: a client refreshes before exp) would otherwise keep its entry until the cache
# is full, and a gateway's memory would grow for hours towards cache_size entries of dead tokens.
SWEEP_EVERY = 60.0
# Ids are snowflakes (ids.py): 63 bits. A larger one names no user, and SQLite cannot even look it up.
MAX_USER_ID = 2**63 - 1


class _CheckedOnceHMAC(HMACAlgorithm):
    """PyJWT checks an HMAC secret on every signature (is it a PEM or SSH key?): a tenth of a login's CPU.
    The configured secrets are few and fixed, so each is checked once."""

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._prepared: dict[Any, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = super().prepare_key(key)
        return prepared


def _signer() -> jwt.PyJWS:
    jws = jwt.PyJWS()
    for name, hash_alg in (("HS256", HMACAlgorithm.SHA256), ("HS384", HMACAlgorithm.SHA384),
                           ("HS512", HMACAlgorithm.SHA512)):
        jws.unregister_algorithm(name)
        jws.register_algorithm(name, _CheckedOnceHMAC(hash_alg))
    return jws


class InvalidToken(Exception):
    """Malformed, badly signed, expired, not yet valid, or with claims of the wrong type. `kind` sorts the
    reason for the metrics: malformed, bad_signature or expired."""

    def __init__(self, reason: str, kind: str = "malformed") -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class TokenPair:
    token: str
    refresh_token: str


def new_id() -> str:
    return secrets.token_urlsafe(16)


class TokenService:
    def __init__(self, config: JwtConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._signing = config.signing_key
        self._by_kid = {key.kid: key for key in config.keys}
        self._kidless = config.signing_key if config.kidless_legacy else None
        self._leeway = config.leeway
        self._clock = clock
        self._cache: dict[str, Claims] = {}
        self._cache_size = config.cache_size
        self._sweep_every = min(SWEEP_EVERY, max(1.0, config.access_ttl / 4))
        self._next_sweep = clock() + self._sweep_every
        self._jws = _signer()

    def issue(self, user_id: int, *, refresh: bool, sid: str) -> str:
        if not sid:
            raise ValueError("every issued token names its session")
        now = self._clock()
        ttl = self._config.refresh_ttl if refresh else self._config.access_ttl
        # iat to the millisecond (RFC 7519 NumericDate allows fractions), so that a per-user
        # "not before" set by a revocation does not also catch a login a moment after it;
        # rounded down, so a token is never "issued in the future" when verified at once.
        payload: dict[str, Any] = {
            "user_id": user_id, "refresh": refresh, "exp": int(now + ttl), "iat": math.floor(now * 1000) / 1000, "jti": new_id(),
            "sid": sid,
        }
        if self._config.issuer:
            payload["iss"] = self._config.issuer
        if self._config.audience:
            payload["aud"] = self._config.audience
        key = self._signing
        body = json.dumps(payload, separators=(",", ":")).encode()  # as jwt.encode makes it
        return self._jws.encode(body, key.signing, algorithm=key.algorithm, headers={"kid": key.kid})

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def issue_pair(self, user_id: int, sid: str | None = None) -> TokenPair:
        sid = sid or new_id()
        return TokenPair(self.issue(user_id, refresh=False, sid=sid), self.issue(user_id, refresh=True, sid=sid))

    def verify(self, token: str) -> Claims:
        """Verify once per distinct token; the result is cached, never past its `exp`."""
        claims = self._cache.get(token)
        now = self._clock()
        if claims is not None:
            if claims.exp + self._leeway > now:
                return claims
            del self._cache[token]
            raise InvalidToken("expired", "expired")
        claims = self._decode(token, now)
        if self._cache_size:
            if now >= self._next_sweep:
                self._drop_expired(now)
            if len(self._cache) >= self._cache_size:
                self._evict(now)
            self._cache[token] = claims
        return claims

    def _drop_expired(self, now: float) -> None:
        cache = self._cache
        for token in [t for t, c in cache.items() if c.exp + self._leeway <= now]:
            del cache[token]
        self._next_sweep = now + self._sweep_every

    def _evict(self, now: float) -> None:
        """Drop the expired entries, and when that is not a tenth of the cache, the oldest tenth: a scan of
        the whole cache then happens once per tenth of it, not once per token verified."""
        self._drop_expired(now)
        cache = self._cache
        excess = len(cache) - self._cache_size * 9 // 10
        if excess > 0:
            for token in list(itertools.islice(cache, excess)):  # oldest first: dicts keep insertion order
                del cache[token]

    def _key_for(self, token: str) -> JwtKey:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed") from None
        if any(name in header for name in _FORBIDDEN_HEADERS):
            raise InvalidToken("key-locating header")
        kid = header.get("kid")
        key = self._kidless if kid is None else self._by_kid.get(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.algorithm:
            raise InvalidToken("unknown kid or algorithm", "bad_signature")
        return key

    def _decode(self, token: str, now: float) -> Claims:
        key = self._key_for(token)
        config = self._config
        try:
            payload = jwt.decode(
                token,
                key.verifying,
                algorithms=[key.algorithm],
                audience=config.audience,
                issuer=config.issuer,
                options={
                    "require": ["exp"], "verify_exp": False, "verify_iat": False, "verify_nbf": False,
                    "verify_aud": config.audience is not None, "strict_aud": config.audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            kind = "bad_signature" if isinstance(exc, jwt.InvalidSignatureError) else "malformed"
            raise InvalidToken(type(exc).__name__, kind) from None
        if not config.accept_legacy_tokens and not _has_jti(payload):
            raise InvalidToken("no jti: made before the switch, and jwt.accept_legacy_tokens is off")
        return _claims(payload, now, self._leeway, token)


def _claims(payload: dict[str, Any], now: float, leeway: float, token: str) -> Claims:
    exp, user_id, refresh = _number(payload.get("exp")), payload.get("user_id"), payload.get("refresh")
    if exp is None:
        raise InvalidToken("exp is not a number")
    if exp + leeway <= now:
        raise InvalidToken("expired", "expired")
    for name in ("nbf", "iat"):
        if name in payload:
            value = _number(payload[name])
            if value is None or value > now + leeway:
                raise InvalidToken(f"{name} is in the future or not a number")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id <= MAX_USER_ID:
        raise InvalidToken("user_id is not a positive 63-bit integer")
    if not isinstance(refresh, bool):
        raise InvalidToken("refresh is not a boolean")
    if _has_jti(payload):
        jti, sid = payload["jti"], payload.get("sid")
        sid = sid if isinstance(sid, str) and sid else jti
    else:
        jti, sid = legacy.legacy_ids(token, user_id, refresh)
    return Claims(
        user_id=user_id,
        refresh=refresh,
        exp=exp,
        iat=_number(payload.get("iat")) or 0.0,
        jti=jti,
        sid=sid,
        family=legacy.family_of(sid, user_id),
    )


def _has_jti(payload: dict[str, Any]) -> bool:
    """Tokens without one (no string, or an empty one) were made by the toutiao backend: see legacy.py."""
    jti = payload.get("jti")
    return isinstance(jti, str) and jti != ""


def _number(value: object) -> float | None:
    """A JSON number as a float; None for anything else, booleans and numeric strings included."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def bearer_token(header: str | None) -> str | None:
    """The token from `Bearer <token>` (exactly one space, as the seed says), else None."""
    if header is None or not header.startswith("Bearer "):
        return None
    token = header[7:]
    if not token or not token.isascii() or " " in token or "\t" in token:
        return None
    return token
