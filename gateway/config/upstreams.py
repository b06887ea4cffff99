"""Reading `upstreams:` and the proxy settings of `routes:`."""
from __future__ import annotations

import re
from typing import Any

from .model import (
    IDEMPOTENT,
    Balance,
    HealthCheckConfig,
    PassiveConfig,
    TargetConfig,
    Timeouts,
    UpstreamConfig,
    WebSocketLimits,
)
from .reader import Reader
from .tls import upstream_tls

_TARGET = re.compile(r"https?://[^/\s?#]+/?")
_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)b?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def upstreams_section(reader: Reader, raw: Any) -> dict[str, UpstreamConfig]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        reader.problem("upstreams", "must be a mapping of name to upstream")
        return {}
    return {str(name): upstream(reader, str(name), spec) for name, spec in raw.items()}


def upstream(reader: Reader, name: str, raw: Any) -> UpstreamConfig:
    where = f"upstreams.{name}"
    block = reader.section(raw, where, {"targets", "balance", "timeouts", "max_connections", "health_check",
                                        "passive", "retry_methods", "max_body_size", "tls", "websocket"})
    specs = block.get("targets")
    if not isinstance(specs, list) or not specs:
        reader.problem(f"{where}.targets", "must be a non-empty list of http:// or https:// URLs")
        specs = []
    targets = tuple(t for i, spec in enumerate(specs) if (t := target(reader, f"{where}.targets[{i}]", spec)))
    if block.get("tls") is not None and targets and not any(t.url.startswith("https://") for t in targets):
        reader.problem(f"{where}.tls", "is set, but no target is https://")
    return UpstreamConfig(
        name=name,
        targets=targets,
        balance=Balance(reader.choice(block, "balance", where, tuple(Balance))),
        timeouts=timeouts(reader, block.get("timeouts"), f"{where}.timeouts", Timeouts()),
        max_connections=reader.integer(block, "max_connections", where, 100, 1, 100000),
        health_check=health_check(reader, block.get("health_check"), f"{where}.health_check"),
        passive=passive(reader, block.get("passive"), f"{where}.passive"),
        retry_methods=methods(reader, block.get("retry_methods", list(IDEMPOTENT)), f"{where}.retry_methods"),
        max_body_size=size(reader, block, "max_body_size", where),
        tls=upstream_tls(reader, block.get("tls"), where),
        websocket=websocket_limits(reader, block.get("websocket"), f"{where}.websocket", WebSocketLimits()),
    )


def websocket_limits(reader: Reader, raw: Any, where: str, base: WebSocketLimits) -> WebSocketLimits:
    """`websocket: {idle_timeout, max_message_size}`; unnamed keys are `base`'s."""
    block = reader.section(raw, where, {"idle_timeout", "max_message_size"})
    return WebSocketLimits(
        idle_timeout=reader.duration(block, "idle_timeout", where, base.idle_timeout),
        max_message_size=size(reader, block, "max_message_size", where) or base.max_message_size,
    )


def target(reader: Reader, where: str, raw: Any) -> TargetConfig | None:
    if isinstance(raw, str):
        raw = {"url": raw}
    block = reader.section(raw, where, {"url", "weight"})
    url = block.get("url")
    if not isinstance(url, str) or not _TARGET.fullmatch(url):
        reader.problem(where, f"must be http://host:port or https://host:port, got {url!r}")
        return None
    return TargetConfig(url=url.rstrip("/"), weight=reader.integer(block, "weight", where, 1, 1, 1000))


def timeouts(reader: Reader, raw: Any, where: str, base: Timeouts) -> Timeouts:
    block = reader.section(raw, where, {"connect", "read", "first_byte", "total"})

    def optional(key: str, default: float | None) -> float | None:
        return reader.duration(block, key, where, 0.0) if key in block else default

    return Timeouts(
        connect=reader.duration(block, "connect", where, base.connect),
        read=reader.duration(block, "read", where, base.read),
        first_byte=optional("first_byte", base.first_byte),
        total=optional("total", base.total),
    )


def health_check(reader: Reader, raw: Any, where: str) -> HealthCheckConfig | None:
    if raw is None:
        return None
    block = reader.section(raw, where, {"path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"})
    path = reader.string(block, "path", where, "/") or "/"
    if not path.startswith("/"):
        reader.problem(f"{where}.path", "must start with /")
    return HealthCheckConfig(
        path=path,
        interval=reader.duration(block, "interval", where, 5.0),
        timeout=reader.duration(block, "timeout", where, 1.0),
        healthy_threshold=reader.integer(block, "healthy_threshold", where, 2, 1, 100),
        unhealthy_threshold=reader.integer(block, "unhealthy_threshold", where, 3, 1, 100),
    )


def passive(reader: Reader, raw: Any, where: str) -> PassiveConfig:
    block = reader.section(raw, where, {"consecutive_failures", "cooldown"})
    return PassiveConfig(
        consecutive_failures=reader.integer(block, "consecutive_failures", where, 3, 1, 1000),
        cooldown=reader.duration(block, "cooldown", where, 30.0),
    )


def methods(reader: Reader, raw: Any, where: str) -> frozenset[str]:
    found = set()
    for i, method in enumerate(reader.items(raw, where)):
        if not isinstance(method, str) or not re.fullmatch(r"[A-Za-z]+", method):
            reader.problem(f"{where}[{i}]", "is not an HTTP method")
        else:
            found.add(method.upper())
    return frozenset(found)


def size(reader: Reader, block: dict[str, Any], key: str, where: str) -> int | None:
    value = block.get(key)
    if value is None:
        return None
    match = _SIZE.fullmatch(str(value)) if not isinstance(value, bool) else None
    if match is None or int(match.group(1)) == 0:
        reader.problem(f"{where}.{key}", f"must be a size such as 512k, 10m or 1g, got {value!r}")
        return None
    return int(match.group(1)) * _UNITS[match.group(2).lower()]
