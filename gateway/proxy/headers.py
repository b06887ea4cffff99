"""The mutate stage: the headers an upstream receives, and the ones a client gets back.

Hop-by-hop headers (RFC 9110 §7.6.1) and every header that `Connection`
names are removed before the gateway adds its own. Identity headers are the
gateway's alone: a client-sent X-User-Id never passes, in any spelling.
"""
from __future__ import annotations

import itertools
import os
import re
from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
# Set by the gateway below, so a client's copies never pass.
_OWN = frozenset({"host", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"})
IDENTITY = frozenset({"x-user-id"})
_REQUEST_DROP = HOP_BY_HOP | _OWN | IDENTITY
_REQUEST_DROP_WITH_AUTH = _REQUEST_DROP | {"authorization"}
_RESPONSE_DROP = HOP_BY_HOP | {"server"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
SERVER = "toutiao-gateway"


def _connection_named(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _filtered(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    named = _connection_named(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in drop or lowered in named:
            continue
        if "_" in lowered and lowered.replace("_", "-") in drop:
            continue  # X_User_Id and friends: servers that fold _ into - must not see them
        out.add(name, value)
    return out


class RequestIds:
    """32 hex characters: a random per-process prefix and a counter (no syscall per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self, headers: CIMultiDictProxy[str]) -> str:
        """The client's X-Request-Id when it is sane, else a new one."""
        sent = headers.get("X-Request-Id")
        if sent is not None and _REQUEST_ID.fullmatch(sent):
            return sent
        return f"{self._prefix}{next(self._counter):016x}"


def upstream_request_headers(
    headers: CIMultiDictProxy[str],
    *,
    user_id: int | None,
    forward_authorization: bool,
    peer: str,
    scheme: str,
    host: str | None,
    req_id: str,
) -> CIMultiDict[str]:
    out = _filtered(headers, _REQUEST_DROP if forward_authorization else _REQUEST_DROP_WITH_AUTH)
    forwarded_for = headers.getall("X-Forwarded-For", ())
    out["X-Forwarded-For"] = ", ".join([*forwarded_for, peer])
    out["X-Forwarded-Proto"] = scheme
    if host:
        out["X-Forwarded-Host"] = host
    out["X-Request-Id"] = req_id
    if user_id is not None:
        out["X-User-Id"] = str(user_id)
    return out


def client_response_headers(headers: CIMultiDictProxy[str], req_id: str) -> CIMultiDict[str]:
    out = _filtered(headers, _RESPONSE_DROP)
    out["Server"] = SERVER
    out.setdefault("X-Request-Id", req_id)
    return out
