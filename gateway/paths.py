"""Request paths in normal form.

A request's path is normalized once (`normalize_path`); the normalized path is
the one that is authorized and the one that is forwarded, so the gateway and
the upstream can never disagree about which resource was asked for. Route
paths in the configuration are normalized the same way.
"""
from __future__ import annotations

import re
import string

from .errors import BadRequest

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
# Encoded characters that would change how the path splits into segments.
# So would an encoded ";" at a server that decodes before it cuts path parameters (Spring's firewall refuses
# it, for that reason).
_FORBIDDEN_ENCODED = {"2F": "an encoded slash", "5C": "an encoded backslash", "00": "an encoded NUL",
                      "3B": "an encoded path parameter (%3B)"}


# A path already in normal form: segments of plain characters, none empty, "." or "..", no escapes.
# Most requests' paths are; they skip the work below.
_NORMAL = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~!$&'()*+,=:@-]+)+/?|/")
# Characters that some servers behind the gateway cut a path at, so that they would see another resource than
# the one authorized: a fragment (never part of a request-target, RFC 9112 §3.2; aiohttp and others drop it,
# so /public/secret#x reaches them as /public/secret) and path parameters (Tomcat and Jetty drop ";..." from
# each segment, so /public/..;/admin reaches them as /admin; Spring Security's firewall refuses ";" too).
_CUT_AT = {"#": "a fragment (#)", ";": "a path parameter (;)"}


class BadPath(ValueError):
    pass


def normalize_path(raw: str) -> str:
    """Decode unreserved percent-escapes, merge slashes, resolve dot segments.

    Raises BadRequest for an encoded slash, backslash or NUL, a bad escape,
    a control character, a fragment or path parameter (#, ;), or a path that
    climbs above the root.
    """
    if _NORMAL.fullmatch(raw):
        return raw
    try:
        return _normalize(raw)
    except BadPath as exc:
        raise BadRequest(f"Invalid path: {exc}.") from None


def normalize_route_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError("must start with /")
    try:
        normalized = _normalize(path)
    except BadPath as exc:
        raise ValueError(str(exc)) from None
    return normalized.rstrip("/") or "/"


def _normalize(raw: str) -> str:
    if not raw.startswith("/"):
        raise BadPath("it must start with /")
    if "\\" in raw:
        raise BadPath("it contains a backslash")
    for char, what in _CUT_AT.items():
        if char in raw:
            raise BadPath(f"it contains {what}")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw):
        raise BadPath("it contains a control character")
    decoded = _decode_unreserved(raw) if "%" in raw else raw
    segments: list[str] = []
    parts = decoded.split("/")
    for part in parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if not segments:
                raise BadPath("it climbs above the root")
            segments.pop()
        else:
            segments.append(part)
    trailing = parts[-1] in ("", ".", "..") and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")


def _decode_unreserved(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        hexpair = raw[i + 1:i + 3]
        if len(hexpair) != 2 or not set(hexpair) <= _HEX:
            raise BadPath("it has a malformed percent-escape")
        hexpair = hexpair.upper()
        if hexpair in _FORBIDDEN_ENCODED:
            raise BadPath(f"it contains {_FORBIDDEN_ENCODED[hexpair]}")
        decoded = chr(int(hexpair, 16))
        out.append(decoded if decoded in _UNRESERVED else "%" + hexpair)
        i += 3
    return "".join(out)


def origin_path(target: str) -> str:
    """The path of a request-target: origin-form as sent, or the path of an absolute-form one (RFC 9112 §3.2.2),
    without its scheme and authority (and so without any user:password@ in it)."""
    if target.startswith("/"):
        return target
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    raise BadRequest("Invalid request target.")
