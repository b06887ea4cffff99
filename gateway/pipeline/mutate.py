"""The mutate stage: the headers an upstream receives, and the ones a client gets back.

Hop-by-hop headers (RFC 9110 §7.6.1) and every header that `Connection`
names are removed before the gateway adds its own. Identity headers are the
gateway's alone: a client-sent X-User-Id never passes, in any spelling; nor
do the fields that would make an upstream act on another path or method.
"""
from __future__ import annotations

import itertools
import os
import re
from typing import Iterable

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
# Set by the gateway (below, or the framing by the forward stage), so a client's copies never pass.
_OWN = frozenset({"host", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
                  "content-length"})
# Other ways of naming the client, or how it came, that an upstream may believe (RFC 7239's Forwarded, nginx's
# X-Real-IP, CDNs' and load balancers' own): the gateway says who the client is in X-Forwarded-For and how it
# came in X-Forwarded-Proto alone, so a client's own copies never pass.
_CLIENT_NAMING = frozenset({"forwarded", "x-real-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip",
                            "fastly-client-ip", "x-cluster-client-ip", "x-forwarded-port", "x-forwarded-ssl",
                            "x-forwarded-scheme", "x-url-scheme", "front-end-https"})
IDENTITY = frozenset({"x-user-id"})
# Fields some frameworks let override the path or the method the request line names (IIS, Symfony and Zend
# read X-Original-URL and X-Rewrite-URL, Spring and ASP.NET X-Forwarded-Prefix, many the method overrides):
# the upstream must act on the path and method that were authorized, so a client's copies never pass.
OVERRIDES = frozenset({"x-original-url", "x-rewrite-url", "x-original-uri", "x-forwarded-prefix",
                       "x-http-method-override", "x-http-method", "x-method-override"})
_REQUEST_DROP = HOP_BY_HOP | _OWN | _CLIENT_NAMING | IDENTITY | OVERRIDES
_REQUEST_DROP_WITH_AUTH = _REQUEST_DROP | {"authorization"}
_RESPONSE_DROP = HOP_BY_HOP | {"server"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


RESPONSE_DROP_RAW = frozenset(name.encode() for name in _RESPONSE_DROP)  # never sent back to a client
_HAS_LENGTH, _HAS_REQUEST_ID, _HAS_DATE, _DROP, _CORS = 1, 2, 4, 8, 16
_CORS_FIELDS = (b"access-control-allow-origin", b"access-control-allow-credentials", b"access-control-expose-headers",
                b"access-control-allow-methods", b"access-control-allow-headers", b"access-control-max-age")
_RESPONSE_FIELD = {name: _DROP for name in RESPONSE_DROP_RAW} | {name: _CORS for name in _CORS_FIELDS} | {
    b"content-length": _HAS_LENGTH, b"x-request-id": _HAS_REQUEST_ID, b"date": _HAS_DATE}
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive"})  # dropped with Connection itself
_REQUEST_DROP_RAW = frozenset(name.encode() for name in _REQUEST_DROP)
_REQUEST_DROP_WITH_AUTH_RAW = frozenset(name.encode() for name in _REQUEST_DROP_WITH_AUTH)
RawFields = list[tuple[bytes, bytes]]


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


class RequestIds:
    """32 hex characters: a random per-process prefix and a counter (no syscall per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self, sent: str | None) -> str:
        """The client's X-Request-Id when it is sane, else a new one."""
        if sent is not None and _REQUEST_ID.fullmatch(sent):
            return sent
        return f"{self._prefix}{next(self._counter):016x}"


def upstream_request_fields(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    user_id: int | None,
    forward_authorization: bool,
    peer: str,
    scheme: str,
    req_id: str,
) -> bytes:
    """The header lines an upstream receives, in one pass over the client's fields as sent."""
    drop = _REQUEST_DROP_WITH_AUTH_RAW if not forward_authorization else _REQUEST_DROP_RAW
    kept: RawFields = []
    named: set[bytes] = set()
    forwarded_for: list[bytes] = []
    host = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in drop:
            if lowered == b"connection":
                named |= _tokens(value)
            elif lowered == b"x-forwarded-for":
                forwarded_for.append(value)
            elif lowered == b"host" and host is None:
                host = value
            continue
        if b"_" in lowered and lowered.replace(b"_", b"-") in drop:
            continue  # X_User_Id and friends: servers that fold _ into - must not see them
        kept.append((name, value))
    if named:
        kept = [(name, value) for name, value in kept if name.lower() not in named]
    parts: list[bytes] = []
    for name, value in kept:
        parts += (name, b": ", value, b"\r\n")
    forwarded_for.append(peer.encode())
    parts += (b"X-Forwarded-For: ", b", ".join(forwarded_for), b"\r\nX-Forwarded-Proto: ", scheme.encode(), b"\r\n")
    if host:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    parts += (b"X-Request-Id: ", req_id.encode(), b"\r\n")
    if user_id is not None:
        parts.append(b"X-User-Id: %d\r\n" % user_id)
    return b"".join(parts)


def client_response_fields(fields: RawFields, req_id: str, date: bytes, *, cors: bool = False
                           ) -> tuple[bytes, bool]:
    """The upstream's answer fields for the client, as header lines: hop-by-hop ones and those `Connection`
    names dropped, Server replaced by the gateway's (the writer adds it), X-Request-Id and Date added when
    missing; with `cors` (the gateway answers CORS on this route) the upstream's Access-Control-* too.
    Also whether the upstream gave a Content-Length, which then frames the body as it did."""
    parts: list[bytes] = []
    have = 0
    named: set[bytes] = set()
    for name, value in fields:
        kind = _RESPONSE_FIELD.get(name.lower(), 0)
        if kind == _CORS:
            if cors:
                continue
            kind = 0
        if kind == _DROP:
            if name.lower() == b"connection" and value.lower() not in _CONNECTION_OPTIONS:
                named |= _tokens(value) - _CONNECTION_OPTIONS
            continue
        have |= kind
        parts += (name, b": ", value, b"\r\n")
    if named:  # rare: fields the upstream meant for this hop only
        named.add(b"connection")
        return client_response_fields([(n, v) for n, v in fields if n.lower() not in named], req_id, date, cors=cors)
    if not have & _HAS_REQUEST_ID:
        parts += (b"X-Request-Id: ", req_id.encode(), b"\r\n")
    if not have & _HAS_DATE:
        parts += (b"Date: ", date, b"\r\n")
    return b"".join(parts), bool(have & _HAS_LENGTH)
