"""Reading raw YAML data into typed values, recording every problem with its place."""
from __future__ import annotations

import re
from typing import Any, Mapping

import limits

from ..durations import parse_duration
from .model import RateLimit

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.warnings: list[str] = []  # not errors: logged at start and on reload

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    # -- ${VAR} and ${VAR:-default} -----------------------------------------
    def expand(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: self.expand(v, join(where, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return _ENV_REF.sub(lambda m: self._lookup(m, where), value)
        return value

    def _lookup(self, match: re.Match[str], where: str) -> str:
        name, default = match.group(1), match.group(2)
        if name in self.env:
            return self.env[name]
        if default is not None:
            return default
        self.problem(where, f"environment variable {name} is not set")
        return ""

    # -- typed values ---------------------------------------------------------
    def section(self, raw: Any, where: str, known: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(where or "(top level)", "must be a mapping")
            return {}
        for key in raw:
            if key not in known:
                self.problem(join(where, str(key)), "unknown key")
        return raw

    def items(self, raw: Any, where: str) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(where, "must be a list")
            return []
        return raw

    def string(self, block: dict[str, Any], key: str, where: str, default: str | None) -> str | None:
        value = block.get(key, default)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        self.problem(join(where, key), "must be a string")
        return default

    def choice(self, block: dict[str, Any], key: str, where: str, choices: tuple[str, ...]) -> str:
        value = self.string(block, key, where, choices[0]) or choices[0]
        if value not in choices:
            self.problem(join(where, key), f"must be one of {', '.join(choices)}")
            return choices[0]
        return value

    def integer(self, block: dict[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
        value = block.get(key, default)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(join(where, key), "must be a whole number")
            return default
        if not lo <= value <= hi:
            self.problem(join(where, key), f"must be between {lo} and {hi}")
            return default
        return value

    def duration(self, block: dict[str, Any], key: str, where: str, default: float, *, zero: bool = False) -> float:
        value = block.get(key, default)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(join(where, key), str(exc))
            return default
        if seconds < 0 or (seconds == 0 and not zero):
            self.problem(join(where, key), "must be positive")
            return default
        return seconds

    def boolean(self, block: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = block.get(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        self.problem(join(where, key), "must be true or false")
        return default

    def rate(self, value: Any, where: str) -> limits.RateLimitItem | None:
        try:
            if not isinstance(value, str):
                raise ValueError
            return limits.parse(value)
        except ValueError:
            self.problem(where, f"must be a rate such as 10/minute or 100 per hour, got {value!r}")
            return None

    def rate_limits(self, raw: Any, where: str, keys: tuple[str, ...]) -> tuple[RateLimit, ...]:
        found = []
        for i, spec in enumerate(self.items(raw, where)):
            place = f"{where}[{i}]"
            block = self.section(spec, place, {"rate", "key"})
            if not block:
                continue
            rate = self.rate(block.get("rate"), f"{place}.rate")
            key = block.get("key")
            if key not in keys:
                self.problem(f"{place}.key", f"must be one of {', '.join(keys)}")
            elif rate is not None:
                found.append(RateLimit(rate=rate, key=key))
        return tuple(found)

    def check_scheme(self, where: str, url: str, schemes: tuple[str, ...]) -> None:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in schemes:
            self.problem(where, f"must start with one of {', '.join(s + '://' for s in schemes)}")
