"""gateway.yaml, parsed once into frozen dataclasses.

`load_config` gathers every problem it finds, each with its place in the file
(`routes[2].upstream: unknown upstream 'nwes'`), and raises one `ConfigError`.
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from .durations import parse_duration
from .routing import AUTH_MODES, normalize_route_path

# RFC 7518 §3.2: an HMAC key at least as long as the hash output.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
ALGORITHMS = tuple(MIN_SECRET_BYTES)
SMS_SENDERS = ("log",)
ENV_OVERRIDES = {
    "GATEWAY_HOST": ("server", "host"),
    "GATEWAY_PORT": ("server", "port"),
    "GATEWAY_JWT_SECRET": ("jwt", "secret"),
    "GATEWAY_REDIS_URL": ("redis", "url"),
    "GATEWAY_DATABASE_URL": ("database", "url"),
}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = False
    log_level: str = "INFO"


@dataclass(frozen=True)
class JwtConfig:
    secret: str
    algorithm: str = "HS256"
    access_ttl: float = 2 * 3600
    refresh_ttl: float = 14 * 86400
    cache_size: int = 10000
    generated: bool = False  # True when --dev made up the secret


@dataclass(frozen=True)
class RedisConfig:
    url: str = "memory://"
    replica_url: str | None = None


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///gateway.db"
    pool_size: int = 10


@dataclass(frozen=True)
class IdsConfig:
    datacenter_id: int = 0
    worker_id: int = 0


@dataclass(frozen=True)
class SmsConfig:
    sender: str = "log"
    code_ttl: int = 300


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    targets: tuple[str, ...]
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_connections: int = 100


@dataclass(frozen=True)
class RouteConfig:
    path: str
    upstream: str
    auth: Mapping[str, str]  # method (or "*") -> public | optional | required
    forward_authorization: bool = False


@dataclass(frozen=True)
class Config:
    jwt: JwtConfig
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ids: IdsConfig = field(default_factory=IdsConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    source: str = "<memory>"


def load_config(path: str, *, env: Mapping[str, str] | None = None, dev: bool = False) -> Config:
    env = os.environ if env is None else env
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    config = parse_config(raw, env=env, dev=dev)
    return _replace_source(config, path)


def parse_config(raw: Any, *, env: Mapping[str, str], dev: bool = False) -> Config:
    reader = _Reader(env)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping"])
    raw = reader.expand(raw, "")
    _apply_env_overrides(raw, env)
    config = reader.config(raw, dev)
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


def _replace_source(config: Config, source: str) -> Config:
    from dataclasses import replace

    return replace(config, source=source)


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in ENV_OVERRIDES.items():
        if var in env:
            block = raw.get(section)
            if not isinstance(block, dict):
                block = raw[section] = {}
            block[key] = env[var]


class _Reader:
    """Reads raw YAML data, recording problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # -- ${VAR} expansion -------------------------------------------------
    def expand(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: self.expand(v, _join(where, str(k))) for k, v in value.items()}
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

    # -- typed readers ------------------------------------------------------
    def section(self, raw: Any, where: str, known: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(where, "must be a mapping")
            return {}
        for key in raw:
            if key not in known:
                self.problem(_join(where, str(key)), "unknown key")
        return raw

    def string(self, block: dict[str, Any], key: str, where: str, default: str | None) -> str | None:
        value = block.get(key, default)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        self.problem(_join(where, key), "must be a string")
        return default

    def integer(self, block: dict[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
        value = block.get(key, default)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(_join(where, key), "must be a whole number")
            return default
        if not lo <= value <= hi:
            self.problem(_join(where, key), f"must be between {lo} and {hi}")
            return default
        return value

    def duration(self, block: dict[str, Any], key: str, where: str, default: float) -> float:
        value = block.get(key, default)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(_join(where, key), str(exc))
            return default
        if seconds <= 0:
            self.problem(_join(where, key), "must be positive")
            return default
        return seconds

    def boolean(self, block: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = block.get(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        self.problem(_join(where, key), "must be true or false")
        return default

    # -- sections -------------------------------------------------------------
    def config(self, raw: dict[str, Any], dev: bool) -> Config | None:
        self.section(raw, "", {"server", "jwt", "redis", "database", "ids", "sms", "upstreams", "routes"})
        upstreams = self.upstreams(raw.get("upstreams"))
        return Config(
            server=self.server(raw.get("server")),
            jwt=self.jwt(raw.get("jwt"), dev),
            redis=self.redis(raw.get("redis")),
            database=self.database(raw.get("database")),
            ids=self.ids(raw.get("ids")),
            sms=self.sms(raw.get("sms")),
            upstreams=upstreams,
            routes=self.routes(raw.get("routes"), upstreams),
        )

    def server(self, raw: Any) -> ServerConfig:
        block = self.section(raw, "server", {"host", "port", "access_log", "log_level"})
        level = (self.string(block, "log_level", "server", "INFO") or "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            self.problem("server.log_level", "must be DEBUG, INFO, WARNING or ERROR")
        return ServerConfig(
            host=self.string(block, "host", "server", "127.0.0.1") or "127.0.0.1",
            port=self.integer(block, "port", "server", 8000, 0, 65535),
            access_log=self.boolean(block, "access_log", "server", False),
            log_level=level,
        )

    def jwt(self, raw: Any, dev: bool) -> JwtConfig:
        block = self.section(raw, "jwt", {"secret", "algorithm", "access_ttl", "refresh_ttl", "cache_size"})
        algorithm = self.string(block, "algorithm", "jwt", "HS256") or "HS256"
        if algorithm not in ALGORITHMS:
            self.problem("jwt.algorithm", f"must be one of {', '.join(ALGORITHMS)}")
        secret = self.string(block, "secret", "jwt", "") or ""
        generated = False
        if not secret and dev:
            secret, generated = secrets.token_urlsafe(64), True
        elif not secret:
            self.problem("jwt.secret", "is required (set GATEWAY_JWT_SECRET, or run with --dev)")
        elif len(secret.encode()) < MIN_SECRET_BYTES.get(algorithm, 32):
            self.problem("jwt.secret", f"must be at least {MIN_SECRET_BYTES.get(algorithm, 32)} bytes for {algorithm}")
        access_ttl = self.duration(block, "access_ttl", "jwt", 2 * 3600)
        refresh_ttl = self.duration(block, "refresh_ttl", "jwt", 14 * 86400)
        if refresh_ttl <= access_ttl:
            self.problem("jwt.refresh_ttl", "must be longer than jwt.access_ttl")
        return JwtConfig(
            secret=secret,
            algorithm=algorithm,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            cache_size=self.integer(block, "cache_size", "jwt", 10000, 0, 10_000_000),
            generated=generated,
        )

    def redis(self, raw: Any) -> RedisConfig:
        block = self.section(raw, "redis", {"url", "replica_url"})
        url = self.string(block, "url", "redis", "memory://") or "memory://"
        replica = self.string(block, "replica_url", "redis", None) or None
        self._check_scheme("redis.url", url, ("memory", "redis", "rediss", "unix"))
        if replica is not None:
            self._check_scheme("redis.replica_url", replica, ("redis", "rediss", "unix"))
            if url == "memory://":
                self.problem("redis.replica_url", "needs a real Redis in redis.url")
        return RedisConfig(url=url, replica_url=replica)

    def database(self, raw: Any) -> DatabaseConfig:
        block = self.section(raw, "database", {"url", "pool_size"})
        url = self.string(block, "url", "database", "sqlite:///gateway.db") or ""
        self._check_scheme("database.url", url, ("sqlite", "mysql"))
        return DatabaseConfig(url=url, pool_size=self.integer(block, "pool_size", "database", 10, 1, 1000))

    def ids(self, raw: Any) -> IdsConfig:
        block = self.section(raw, "ids", {"datacenter_id", "worker_id"})
        return IdsConfig(
            datacenter_id=self.integer(block, "datacenter_id", "ids", 0, 0, 31),
            worker_id=self.integer(block, "worker_id", "ids", 0, 0, 31),
        )

    def sms(self, raw: Any) -> SmsConfig:
        block = self.section(raw, "sms", {"sender", "code_ttl"})
        sender = self.string(block, "sender", "sms", "log") or "log"
        if sender not in SMS_SENDERS:
            self.problem("sms.sender", f"must be one of {', '.join(SMS_SENDERS)}")
        return SmsConfig(sender=sender, code_ttl=int(self.duration(block, "code_ttl", "sms", 300)))

    def upstreams(self, raw: Any) -> dict[str, UpstreamConfig]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem("upstreams", "must be a mapping of name to upstream")
            return {}
        return {str(name): self.upstream(str(name), spec) for name, spec in raw.items()}

    def upstream(self, name: str, raw: Any) -> UpstreamConfig:
        where = f"upstreams.{name}"
        block = self.section(raw, where, {"targets", "timeouts", "max_connections"})
        targets = block.get("targets")
        if not isinstance(targets, list) or not targets:
            self.problem(f"{where}.targets", "must be a non-empty list of http:// URLs")
            targets = []
        for i, target in enumerate(targets):
            if not isinstance(target, str) or not re.fullmatch(r"https?://[^/\s?#]+/?", target):
                self.problem(f"{where}.targets[{i}]", f"must be http://host:port, got {target!r}")
        timeouts = self.section(block.get("timeouts"), f"{where}.timeouts", {"connect", "read"})
        return UpstreamConfig(
            name=name,
            targets=tuple(str(t).rstrip("/") for t in targets),
            connect_timeout=self.duration(timeouts, "connect", f"{where}.timeouts", 5.0),
            read_timeout=self.duration(timeouts, "read", f"{where}.timeouts", 30.0),
            max_connections=self.integer(block, "max_connections", where, 100, 1, 100000),
        )

    def routes(self, raw: Any, upstreams: Mapping[str, UpstreamConfig]) -> tuple[RouteConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem("routes", "must be a list")
            return ()
        routes = [self.route(f"routes[{i}]", spec, upstreams) for i, spec in enumerate(raw)]
        seen: dict[str, int] = {}
        for i, route in enumerate(routes):
            if route is None:
                continue
            if route.path in seen:
                self.problem(f"routes[{i}].path", f"duplicates routes[{seen[route.path]}].path")
            seen.setdefault(route.path, i)
        return tuple(r for r in routes if r is not None)

    def route(self, where: str, raw: Any, upstreams: Mapping[str, UpstreamConfig]) -> RouteConfig | None:
        block = self.section(raw, where, {"path", "upstream", "auth", "forward_authorization"})
        path = self.string(block, "path", where, None)
        try:
            path = normalize_route_path(path or "")
        except ValueError as exc:
            self.problem(f"{where}.path", str(exc))
        upstream = self.string(block, "upstream", where, None)
        if not upstream:
            self.problem(f"{where}.upstream", "is required")
        elif upstream not in upstreams:
            self.problem(f"{where}.upstream", f"unknown upstream {upstream!r}")
        return RouteConfig(
            path=path or "/",
            upstream=upstream or "",
            auth=self.auth(block.get("auth", "required"), f"{where}.auth"),
            forward_authorization=self.boolean(block, "forward_authorization", where, False),
        )

    def auth(self, raw: Any, where: str) -> Mapping[str, str]:
        if isinstance(raw, str):
            raw = {"*": raw}
        if not isinstance(raw, dict) or not raw:
            self.problem(where, f"must be one of {', '.join(AUTH_MODES)}, or a mapping of method to mode")
            return {"*": "required"}
        modes: dict[str, str] = {}
        for method, mode in raw.items():
            key = str(method).upper()
            if key != "*" and not re.fullmatch(r"[A-Z]+", key):
                self.problem(f"{where}.{method}", "is not an HTTP method")
            if mode not in AUTH_MODES:
                self.problem(f"{where}.{method}", f"must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
                mode = "required"
            modes[key] = mode
        # Fail closed: methods the table does not name need a token.
        modes.setdefault("*", "required")
        return modes

    def _check_scheme(self, where: str, url: str, schemes: tuple[str, ...]) -> None:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in schemes:
            self.problem(where, f"must start with one of {', '.join(s + '://' for s in schemes)}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
