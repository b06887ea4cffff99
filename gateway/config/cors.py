"""`cors` and `routes[].cors`: the CORS policy, read and checked.

The top-level section is the policy of the gateway's own endpoints and of
every route; a route may narrow it (fewer origins, methods or headers, a
shorter max_age, no credentials) or turn it off with `cors: false`. It may
not widen it: a route cannot let in an origin the top level refuses.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from .model import CorsPolicy
from .reader import Reader

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
KEYS = {"allow_origins", "allow_methods", "allow_headers", "expose_headers", "max_age", "allow_credentials"}


def cors_section(reader: Reader, raw: Any) -> CorsPolicy | None:
    if raw is None:
        return None
    block = reader.section(raw, "cors", KEYS)
    if "allow_origins" not in block:
        reader.problem("cors.allow_origins", "is required: the origins whose pages may call the gateway")
    return _policy(reader, block, "cors", CorsPolicy(frozenset()))


def route_cors(reader: Reader, raw: Any, where: str, top: CorsPolicy | None) -> CorsPolicy | None:
    """A route's policy: the top level's, narrowed by `raw`; None for `false` or when there is no top level."""
    if raw is None:
        return top
    if raw is False:
        return None
    if top is None:
        reader.problem(where, "narrows the top-level cors section, which is missing")
        return None
    block = reader.section(raw, where, KEYS)
    policy = _policy(reader, block, where, top)
    _narrower(reader, where, policy, top)
    return policy


def _policy(reader: Reader, block: dict[str, Any], where: str, base: CorsPolicy) -> CorsPolicy:
    origins = base.allow_origins
    if "allow_origins" in block:
        origins = frozenset(_origins(reader, block["allow_origins"], f"{where}.allow_origins"))
    policy = replace(
        base,
        allow_origins=origins,
        allow_methods=_tokens(reader, block, "allow_methods", where, base.allow_methods, upper=True),
        allow_headers=_tokens(reader, block, "allow_headers", where, base.allow_headers),
        expose_headers=_tokens(reader, block, "expose_headers", where, base.expose_headers),
        max_age=reader.integer(block, "max_age", where, base.max_age, 0, 86400),
        allow_credentials=reader.boolean(block, "allow_credentials", where, base.allow_credentials),
    )
    if policy.any_origin and policy.allow_credentials:
        reader.problem(f"{where}.allow_origins", '"*" is refused with allow_credentials: name the origins '
                                                 "(browsers refuse credentials for any origin)")
    return policy


def _origins(reader: Reader, raw: Any, where: str) -> list[str]:
    found = []
    for i, value in enumerate(reader.items(raw, where)):
        origin = str(value).rstrip("/")
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            reader.problem(f"{where}[{i}]", f'must be an origin such as https://app.example.com, or "*"; got {value!r}')
        elif origin.lower().startswith("https://") and origin.endswith(":443") or \
                origin.lower().startswith("http://") and origin.endswith(":80"):
            reader.problem(f"{where}[{i}]", f"names its scheme's default port, which browsers leave out of Origin: "
                                            f"{origin.rsplit(':', 1)[0]}")
        else:
            found.append(origin.lower())
    if raw == []:
        reader.problem(where, "must list at least one origin")
    return found


def _tokens(reader: Reader, block: dict[str, Any], key: str, where: str, default: tuple[str, ...], *,
            upper: bool = False) -> tuple[str, ...]:
    if key not in block:
        return default
    found = []
    for i, value in enumerate(reader.items(block[key], f"{where}.{key}")):
        text = str(value)
        if not _TOKEN.fullmatch(text) or text == "*":
            reader.problem(f"{where}.{key}[{i}]", f"must be a method or field name (no wildcard), got {value!r}")
        else:
            found.append(text.upper() if upper else text)
    return tuple(found)


def _narrower(reader: Reader, where: str, policy: CorsPolicy, top: CorsPolicy) -> None:
    if not top.any_origin and not policy.allow_origins <= top.allow_origins:
        extra = ", ".join(sorted(policy.allow_origins - top.allow_origins))
        reader.problem(f"{where}.allow_origins", f"may only narrow the top-level list; not there: {extra}")
    if not set(policy.allow_methods) <= set(top.allow_methods):
        reader.problem(f"{where}.allow_methods", "may only narrow the top-level list")
    if not {h.lower() for h in policy.allow_headers} <= {h.lower() for h in top.allow_headers}:
        reader.problem(f"{where}.allow_headers", "may only narrow the top-level list")
    if not {h.lower() for h in policy.expose_headers} <= {h.lower() for h in top.expose_headers}:
        reader.problem(f"{where}.expose_headers", "may only narrow the top-level list")
    if policy.max_age > top.max_age:
        reader.problem(f"{where}.max_age", f"may only narrow the top level's ({top.max_age})")
    if policy.allow_credentials and not top.allow_credentials:
        reader.problem(f"{where}.allow_credentials", "may only narrow the top level, which does not allow them")
