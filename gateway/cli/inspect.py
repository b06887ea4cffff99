"""Operator commands that look without touching: `routes` and `token inspect`.

`routes` prints the route table in the order the gateway tries it (the
longest path first: a request takes the longest whole-segment prefix).
`token inspect` says whether a token is valid here and exactly why not, with
its claims and the time it has left. Neither prints a secret; `token inspect`
never prints the token or its signature.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import sys
import time
from typing import TextIO

import jwt

from ..auth.tokens import InvalidToken, TokenService, bearer_token
from ..claims import Claims
from ..config import Config
from ..errors import ServiceUnavailable
from ..stores.databases import open_user_store
from ..stores.kv import open_redis
from ..stores.revocation import RedisRevocations

# InvalidToken's reasons, as an operator reads them
_WHY = {
    "malformed": "malformed: not a JWT (three base64url parts, a JSON header)",
    "key-locating header": "refused header: jku, x5u, jwk or x5c (the gateway never fetches keys a token names)",
    "unknown kid or algorithm": "no key of this gateway has this kid and algorithm",
    "InvalidSignatureError": "bad signature: not signed with the key this gateway verifies it with",
    "DecodeError": "malformed: the payload or signature does not decode",
    "InvalidAlgorithmError": "algorithm refused",
    "MissingRequiredClaimError": "no exp claim",
    "InvalidIssuerError": "wrong issuer (jwt.issuer)",
    "InvalidAudienceError": "wrong audience (jwt.audience)",
}


def routes_command(config: Config, out: TextIO = sys.stdout) -> int:
    rows = [("#", "path", "auth by method", "upstream", "targets", "timeouts", "limits")]
    for order, route in enumerate(sorted(config.routes, key=lambda r: (-len(r.path), r.path)), 1):
        upstream = config.upstreams[route.upstream]
        modes = [f"{method} {mode}" for method, mode in route.auth.items() if method != "*"]
        modes.append(f"{'others' if modes else 'all'} {route.auth['*']}")
        timeouts = route.timeouts or upstream.timeouts
        spans = [f"connect {timeouts.connect:g}s", f"read {timeouts.read:g}s"]
        spans += [f"{name} {value:g}s" for name, value in (("first_byte", timeouts.first_byte),
                                                            ("total", timeouts.total)) if value]
        rows.append((str(order), route.path, ", ".join(modes), route.upstream,
                     " ".join(t.url + (f" (weight {t.weight})" if t.weight != 1 else "") for t in upstream.targets),
                     ", ".join(spans), ", ".join(str(limit) for limit in route.limits) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


def token_command(config: Config, token: str | None, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """0: valid here; 1: not, and why."""
    text = (token if token is not None else stdin.readline()).strip()
    text = bearer_token(text) or text  # "Bearer <token>" as copied from a request is fine too
    now = time.time()
    _describe(text, now, out)
    try:
        claims = TokenService(config.jwt).verify(text)
    except InvalidToken as exc:
        reason = str(exc)
        print(f"valid: no: {_WHY.get(reason, reason)}", file=out)
        return 1
    problems = asyncio.run(_state(config, claims, out))
    if claims.refresh:
        problems.insert(0, "a refresh token: accepted only at PUT /v1_0/authorizations (403 on routes)")
    left = claims.exp - now
    print(f"time left: {_span(left)} (until {_when(claims.exp)})", file=out)
    if problems:
        for problem in problems:
            print(f"valid: no: {problem}", file=out)
        return 1
    print("valid: yes", file=out)
    return 0


def _describe(token: str, now: float, out: TextIO) -> None:
    """The header and claims as the token states them, before any check (so a refused one shows them too)."""
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return
    shown = {name: header.get(name) for name in ("alg", "kid", "typ") if name in header}
    print(f"header: {json.dumps(shown)}", file=out)
    visible = {k: v for k, v in payload.items() if k in ("user_id", "refresh", "iat", "nbf", "exp", "jti", "sid",
                                                          "iss", "aud")}
    print(f"claims: {json.dumps(visible)}", file=out)
    exp = payload.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp <= now:
        print(f"expired: {_when(exp)}, {_span(now - exp)} ago", file=out)


async def _state(config: Config, claims: Claims, out: TextIO) -> list[str]:
    """What the stores say: revoked, disabled, or unknown user."""
    problems = []
    if config.redis.embedded:
        print("revocation: not checked (memory:// revocations live in the gateway's process)", file=out)
    else:
        async with open_redis(config.redis) as (primary, _):
            revocations = RedisRevocations(primary, config.jwt.refresh_ttl)
            try:
                await revocations.load_once()
            except ServiceUnavailable:
                problems.append("revocation: Redis unavailable, cannot tell (the gateway answers 503)")
            else:
                if revocations.is_revoked(claims):
                    problems.append("revoked: its session was logged out, or every session of the user ended")
    try:
        users = await open_user_store(config.database.url, 1)
    except ServiceUnavailable:
        return [*problems, "user: the database is unavailable, cannot tell"]
    try:
        user = await users.get_by_id(claims.user_id)
    finally:
        await users.close()
    if user is None:
        problems.append(f"user {claims.user_id} does not exist (403 on routes)")
    elif not user.enabled:
        problems.append(f"user {claims.user_id} is disabled (403)")
    return problems


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return " ".join(parts + [f"{seconds}s"]) if not days else " ".join(parts)
