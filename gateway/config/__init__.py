"""gateway.yaml, parsed once into frozen dataclasses.

`load_config` gathers every problem it finds, each with its place in the file
(`routes[2].upstream: unknown upstream 'nwes'`), and raises one `ConfigError`.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping

import yaml

from .model import (
    Config,
    DatabaseConfig,
    IdsConfig,
    JwtConfig,
    JwtKey,
    LimitsConfig,
    RateLimit,
    RedisConfig,
    RevocationConfig,
    RouteConfig,
    ServerConfig,
    SmsConfig,
    UpstreamConfig,
)
from .reader import Reader
from .sections import read_config

__all__ = [
    "Config", "ConfigError", "DatabaseConfig", "IdsConfig", "JwtConfig", "JwtKey", "LimitsConfig", "RateLimit",
    "RedisConfig", "RevocationConfig", "RouteConfig", "ServerConfig", "SmsConfig", "UpstreamConfig",
    "load_config", "parse_config",
]

ENV_OVERRIDES = {
    "GATEWAY_HOST": ("server", "host"),
    "GATEWAY_PORT": ("server", "port"),
    "GATEWAY_JWT_SECRET": ("jwt", "secret"),
    "GATEWAY_REDIS_URL": ("redis", "url"),
    "GATEWAY_DATABASE_URL": ("database", "url"),
}


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str, *, env: Mapping[str, str] | None = None, dev: bool = False) -> Config:
    env = os.environ if env is None else env
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    return replace(parse_config(raw, env=env, dev=dev), source=path)


def parse_config(raw: Any, *, env: Mapping[str, str], dev: bool = False) -> Config:
    reader = Reader(env)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping"])
    raw = reader.expand(raw, "")
    _apply_env_overrides(raw, env)
    config = read_config(reader, raw, dev)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in ENV_OVERRIDES.items():
        if var not in env:
            continue
        block = raw.get(section)
        if not isinstance(block, dict):
            block = raw[section] = {}
        if var == "GATEWAY_JWT_SECRET" and "keys" in block:
            continue  # jwt.keys name their secrets themselves, with ${VAR}
        block[key] = env[var]
