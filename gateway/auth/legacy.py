"""Session keys for the tokens the toutiao backend issued before the gateway took over.

The backend's `generate_jwt({'user_id': ..., 'refresh': ...}, expiry)` makes
tokens with `user_id`, `refresh` and `exp` only: no `jti`, `sid`, `kid` or
`iat`. They stay valid across the switch (`jwt.accept_legacy_tokens`), so
nobody is logged out by it; but each needs a session of its own, or one
user's logout would end every one of them.

Why these keys. Nothing in a backend token ties an access token to the
refresh token behind it: the backend's refresh endpoint mints access tokens
later than, and apart from, its refresh token. So:

- a legacy refresh token is its own session, `legacy:<user>:<digest>`, the
  digest taken from the token itself, so that every instance derives the
  same key. The tokens the gateway mints from it inherit that `sid`, so a
  logout with any of them, or a replay under rotation, ends the whole line;
- a legacy access token cannot be traced to its refresh token: it belongs to
  `legacy:<user>:access`, which only that user's pre-switch access tokens share;
- all of them, and every token minted from them, also belong to the user's
  pre-switch family, `legacy:<user>`.

Ending a session that began before the switch also ends the user's
pre-switch access tokens, since one of them may belong to the device that
logged out and there is no telling which; the user's other devices get a 401
and refresh once with their own refresh tokens. A logout with a pre-switch
access token, whose refresh token is unknown, ends the whole pre-switch
family. Either way a revocation touches that user's legacy tokens at most:
never another user's, never a session begun at the gateway. (Gateway session
ids come from `secrets.token_urlsafe`, which never writes a colon.)
"""
from __future__ import annotations

import base64
import hashlib

PREFIX = "legacy:"


def _digest(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()[:16]).rstrip(b"=").decode()


def family(user_id: int) -> str:
    return f"{PREFIX}{user_id}"


def legacy_ids(token: str, user_id: int, refresh: bool) -> tuple[str, str]:
    """(jti, sid) for a token that carries no `jti`. The jti keys rotation's spent-token record."""
    digest = _digest(token)
    return digest, f"{family(user_id)}:{digest if refresh else 'access'}"


def family_of(sid: str, user_id: int) -> str:
    """The revocation key a token belongs to besides its sid: the user's pre-switch family, or the sid itself."""
    return family(user_id) if sid.startswith(PREFIX) else sid


def sessions_ended_by(sid: str, user_id: int) -> tuple[str, ...]:
    """What a logout (or a replayed refresh token) with a token of session `sid` revokes."""
    if not sid.startswith(PREFIX):
        return (sid,)
    if sid == f"{family(user_id)}:access":
        return (family(user_id),)
    return sid, f"{family(user_id)}:access"
