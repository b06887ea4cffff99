"""Durations in config: a number of seconds, or a number with a unit (500ms, 30s, 5m, 2h, 14d)."""
from __future__ import annotations

import re
from typing import Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 2h or 14d")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.fullmatch(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"must be a duration such as 30s, 5m, 2h or 14d, got {value!r}")
