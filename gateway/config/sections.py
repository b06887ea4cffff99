"""One reader per section of gateway.yaml."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping

from ..paths import normalize_route_path
from .cors import cors_section, route_cors
from .jwtkeys import read_keys
from .model import (
    AdminConfig,
    AuthMode,
    ClusterConfig,
    CorsPolicy,
    Config,
    DatabaseConfig,
    IdsConfig,
    JwtConfig,
    LimitsConfig,
    Network,
    RedisConfig,
    RevocationConfig,
    RouteConfig,
    SentinelConfig,
    ServerConfig,
    SmsConfig,
    Timeouts,
    UpstreamConfig,
    WebSocketLimits,
)
from .reader import Reader
from .tls import server_tls
from .upstreams import size, timeouts, upstreams_section, websocket_limits

SMS_SENDERS = ("log",)
MAX_CODE_TTL = 600  # NIST SP 800-63B: an out-of-band secret lives 10 minutes at most
DEFAULT_SMS_LIMITS = [{"rate": "1/minute", "key": "mobile"}, {"rate": "100/hour", "key": "ip"}]
TOP_LEVEL = {"server", "admin", "cors", "jwt", "redis", "database", "ids", "sms", "limits", "revocation", "upstreams", "routes"}


def read_config(reader: Reader, raw: dict[str, Any], dev: bool) -> Config:
    reader.section(raw, "", TOP_LEVEL)
    upstreams = upstreams_section(reader, raw.get("upstreams"))
    cors = cors_section(reader, raw.get("cors"))
    config = Config(
        server=server(reader, raw.get("server")),
        admin=admin(reader, raw.get("admin")),
        jwt=jwt(reader, raw.get("jwt"), dev),
        redis=redis(reader, raw.get("redis")),
        database=database(reader, raw.get("database")),
        ids=ids(reader, raw.get("ids")),
        sms=sms(reader, raw.get("sms")),
        limits=limits_section(reader, raw.get("limits")),
        revocation=revocation(reader, raw.get("revocation")),
        upstreams=upstreams,
        routes=routes(reader, raw.get("routes"), upstreams, cors),
        cors=cors,
        warnings=tuple(reader.warnings),
    )
    check_workers(reader, config)
    check_admin(reader, config)
    return config


def admin(reader: Reader, raw: Any) -> AdminConfig | None:
    if raw is None:
        return None
    block = reader.section(raw, "admin", {"host", "port", "probe_timeout"})
    return AdminConfig(
        host=reader.string(block, "host", "admin", "127.0.0.1") or "127.0.0.1",
        port=reader.integer(block, "port", "admin", 8001, 0, 65535),
        probe_timeout=reader.duration(block, "probe_timeout", "admin", 1.0),
    )


def check_admin(reader: Reader, config: Config) -> None:
    admin, server = config.admin, config.server
    if admin is not None and admin.port != 0 and admin.port == server.port:
        reader.problem("admin.port", f"is the public listener's port ({server.port}): the admin listener needs "
                                     f"its own, so that no route can reach or shadow it")


def check_workers(reader: Reader, config: Config) -> None:
    workers = config.server.workers
    if workers == 1:
        return
    if config.redis.embedded:
        reader.problem("server.workers", "more than 1 needs a shared Redis: memory:// lives inside one process")
    if config.ids.worker_id + workers - 1 > 31:
        reader.problem("server.workers", f"worker i uses snowflake worker id ids.worker_id + i, which must stay "
                                         f"below 32 (ids.worker_id is {config.ids.worker_id})")


def server(reader: Reader, raw: Any) -> ServerConfig:
    block = reader.section(raw, "server", {"host", "port", "access_log", "log_level", "log_format", "trusted_proxies",
                                           "workers",
                                           "shutdown_timeout", "keepalive_timeout", "header_timeout",
                                           "max_connections", "client_timeout", "tls"})
    return ServerConfig(
        host=reader.string(block, "host", "server", "127.0.0.1") or "127.0.0.1",
        port=reader.integer(block, "port", "server", 8000, 0, 65535),
        access_log=reader.boolean(block, "access_log", "server", False),
        log_format=reader.choice(block, "log_format", "server", ("json", "text")),
        log_level=reader.choice({k: str(v).upper() for k, v in block.items()}, "log_level", "server",
                                ("INFO", "DEBUG", "WARNING", "ERROR")),
        trusted_proxies=networks(reader, block.get("trusted_proxies"), "server.trusted_proxies"),
        workers=reader.integer(block, "workers", "server", 1, 1, 32),
        shutdown_timeout=reader.duration(block, "shutdown_timeout", "server", 30.0, zero=True),
        keepalive_timeout=reader.duration(block, "keepalive_timeout", "server", 75.0),
        header_timeout=reader.duration(block, "header_timeout", "server", 10.0),
        max_connections=reader.integer(block, "max_connections", "server", 10000, 1, 1_000_000),
        client_timeout=reader.duration(block, "client_timeout", "server", 60.0),
        tls=server_tls(reader, block.get("tls")),
    )


def networks(reader: Reader, raw: Any, where: str) -> tuple[Network, ...]:
    found = []
    for i, value in enumerate(reader.items(raw, where)):
        try:
            found.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            reader.problem(f"{where}[{i}]", f"must be an IP address or CIDR block, got {value!r}")
    return tuple(found)


def jwt(reader: Reader, raw: Any, dev: bool) -> JwtConfig:
    block = reader.section(raw, "jwt", {"secret", "algorithm", "keys", "access_ttl", "refresh_ttl", "cache_size",
                                        "issuer", "audience", "leeway", "rotate_refresh_tokens", "rotation_grace",
                                        "accept_legacy_tokens"})
    keys, generated, legacy = read_keys(reader, block, dev)
    access_ttl = reader.duration(block, "access_ttl", "jwt", 2 * 3600)
    refresh_ttl = reader.duration(block, "refresh_ttl", "jwt", 14 * 86400)
    if refresh_ttl <= access_ttl:
        reader.problem("jwt.refresh_ttl", "must be longer than jwt.access_ttl")
    return JwtConfig(
        keys=keys,
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        cache_size=reader.integer(block, "cache_size", "jwt", 50_000, 0, 10_000_000),
        issuer=reader.string(block, "issuer", "jwt", None) or None,
        audience=reader.string(block, "audience", "jwt", None) or None,
        leeway=reader.duration(block, "leeway", "jwt", 0.0, zero=True),
        rotate_refresh_tokens=reader.boolean(block, "rotate_refresh_tokens", "jwt", False),
        rotation_grace=reader.duration(block, "rotation_grace", "jwt", 10.0, zero=True),
        generated=generated,
        kidless_legacy=legacy,
        accept_legacy_tokens=reader.boolean(block, "accept_legacy_tokens", "jwt", True),
    )


def redis(reader: Reader, raw: Any) -> RedisConfig:
    block = reader.section(raw, "redis", {"url", "replica_url", "sentinel", "cluster"})
    url = reader.string(block, "url", "redis", "memory://") or "memory://"
    replica = reader.string(block, "replica_url", "redis", None) or None
    reader.check_scheme("redis.url", url, ("memory", "redis", "rediss", "unix"))
    sentinel = sentinel_section(reader, block.get("sentinel"))
    if sentinel is not None and (url != "memory://" or replica is not None):
        reader.problem("redis.sentinel", "replaces redis.url and redis.replica_url: give one or the other")
    cluster = cluster_section(reader, block.get("cluster"))
    if cluster is not None and (url != "memory://" or replica is not None or sentinel is not None):
        reader.problem("redis.cluster", "replaces redis.url, redis.replica_url and redis.sentinel: give one of them")
    elif replica is not None:
        reader.check_scheme("redis.replica_url", replica, ("redis", "rediss", "unix"))
        if url == "memory://":
            reader.problem("redis.replica_url", "needs a real Redis in redis.url")
    return RedisConfig(url=url, replica_url=replica, sentinel=sentinel, cluster=cluster)


def host_ports(reader: Reader, raw: Any, where: str, what: str) -> tuple[tuple[str, int], ...]:
    """A list of `host:port`, at least one."""
    found = []
    for i, host in enumerate(reader.items(raw, where)):
        name, _, port = str(host).rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            reader.problem(f"{where}[{i}]", f"must be host:port, got {host!r}")
        else:
            found.append((name, int(port)))
    if raw is None:
        reader.problem(where, "is required")
    elif raw == []:
        reader.problem(where, f"must list at least one {what}")
    return tuple(found)


def cluster_section(reader: Reader, raw: Any) -> ClusterConfig | None:
    if raw is None:
        return None
    where = "redis.cluster"
    block = reader.section(raw, where, {"nodes", "password"})
    return ClusterConfig(nodes=host_ports(reader, block.get("nodes"), f"{where}.nodes", "node"),
                         password=reader.string(block, "password", where, None))


def sentinel_section(reader: Reader, raw: Any) -> SentinelConfig | None:
    if raw is None:
        return None
    where = "redis.sentinel"
    block = reader.section(raw, where, {"hosts", "service", "password", "db"})
    return SentinelConfig(
        hosts=host_ports(reader, block.get("hosts"), f"{where}.hosts", "Sentinel"),
        service=reader.string(block, "service", where, "mymaster") or "mymaster",
        password=reader.string(block, "password", where, None),
        db=reader.integer(block, "db", where, 0, 0, 15),
    )


def database(reader: Reader, raw: Any) -> DatabaseConfig:
    block = reader.section(raw, "database", {"url", "pool_size"})
    url = reader.string(block, "url", "database", "sqlite:///gateway.db") or ""
    reader.check_scheme("database.url", url, ("sqlite", "mysql"))
    return DatabaseConfig(url=url, pool_size=reader.integer(block, "pool_size", "database", 10, 1, 1000))


def ids(reader: Reader, raw: Any) -> IdsConfig:
    block = reader.section(raw, "ids", {"datacenter_id", "worker_id"})
    return IdsConfig(
        datacenter_id=reader.integer(block, "datacenter_id", "ids", 0, 0, 31),
        worker_id=reader.integer(block, "worker_id", "ids", 0, 0, 31),
    )


def sms(reader: Reader, raw: Any) -> SmsConfig:
    block = reader.section(raw, "sms", {"sender", "code_ttl", "max_attempts"})
    code_ttl = int(reader.duration(block, "code_ttl", "sms", 300))
    if code_ttl > MAX_CODE_TTL:
        reader.problem("sms.code_ttl", f"must be at most {MAX_CODE_TTL} seconds (NIST SP 800-63B)")
    return SmsConfig(
        sender=reader.choice(block, "sender", "sms", SMS_SENDERS),
        code_ttl=code_ttl,
        max_attempts=reader.integer(block, "max_attempts", "sms", 5, 1, 100),
    )


def limits_section(reader: Reader, raw: Any) -> LimitsConfig:
    block = reader.section(raw, "limits", {"sms", "login", "refresh", "login_failures"})
    failures = block.get("login_failures", "100/day")
    return LimitsConfig(
        sms=reader.rate_limits(block.get("sms", DEFAULT_SMS_LIMITS), "limits.sms", ("mobile", "ip")),
        login=reader.rate_limits(block.get("login"), "limits.login", ("mobile", "ip")),
        refresh=reader.rate_limits(block.get("refresh"), "limits.refresh", ("user", "ip")),
        login_failures=reader.rate(failures, "limits.login_failures") if failures is not None else None,
    )


def revocation(reader: Reader, raw: Any) -> RevocationConfig:
    block = reader.section(raw, "revocation", {"user_status_cache_ttl", "on_redis_down"})
    return RevocationConfig(
        user_status_cache_ttl=reader.duration(block, "user_status_cache_ttl", "revocation", 60.0, zero=True),
        on_redis_down=reader.choice(block, "on_redis_down", "revocation", ("reject", "allow")),
    )


def routes(reader: Reader, raw: Any, upstreams: Mapping[str, UpstreamConfig], cors: CorsPolicy | None = None
           ) -> tuple[RouteConfig, ...]:
    found = [route(reader, f"routes[{i}]", spec, upstreams, cors)
             for i, spec in enumerate(reader.items(raw, "routes"))]
    seen: dict[str, int] = {}
    for i, r in enumerate(found):
        if r.path in seen:
            reader.problem(f"routes[{i}].path", f"duplicates routes[{seen[r.path]}].path")
        seen.setdefault(r.path, i)
    return tuple(found)


def route(reader: Reader, where: str, raw: Any, upstreams: Mapping[str, UpstreamConfig],
          cors: CorsPolicy | None = None) -> RouteConfig:
    block = reader.section(raw, where, {"path", "upstream", "auth", "forward_authorization", "limits", "timeouts",
                                        "max_body_size", "retry_non_idempotent", "cors", "websocket"})
    path = reader.string(block, "path", where, None)
    try:
        path = normalize_route_path(path or "")
    except ValueError as exc:
        reader.problem(f"{where}.path", str(exc))
    upstream_name = reader.string(block, "upstream", where, None)
    if not upstream_name:
        reader.problem(f"{where}.upstream", "is required")
    elif upstream_name not in upstreams:
        reader.problem(f"{where}.upstream", f"unknown upstream {upstream_name!r}")
    return RouteConfig(
        path=path or "/",
        upstream=upstream_name or "",
        auth=auth(reader, block.get("auth", "required"), f"{where}.auth"),
        forward_authorization=reader.boolean(block, "forward_authorization", where, False),
        limits=reader.rate_limits(block.get("limits"), f"{where}.limits", ("ip", "user")),
        timeouts=route_timeouts(reader, block.get("timeouts"), f"{where}.timeouts", upstreams.get(upstream_name or "")),
        max_body_size=size(reader, block, "max_body_size", where),
        retry_non_idempotent=reader.boolean(block, "retry_non_idempotent", where, False),
        cors=route_cors(reader, block.get("cors"), f"{where}.cors", cors),
        websocket=websocket_limits(reader, block["websocket"], f"{where}.websocket",
                                   upstreams[upstream_name].websocket if upstream_name and upstream_name in upstreams
                                   else WebSocketLimits()) if block.get("websocket") is not None else None,
    )


def route_timeouts(reader: Reader, raw: Any, where: str, upstream: UpstreamConfig | None) -> Timeouts | None:
    if raw is None:
        return None
    return timeouts(reader, raw, where, upstream.timeouts if upstream else Timeouts())


def auth(reader: Reader, raw: Any, where: str) -> Mapping[str, AuthMode]:
    choices = ", ".join(AuthMode)
    if isinstance(raw, str):
        raw = {"*": raw}
    if not isinstance(raw, dict) or not raw:
        reader.problem(where, f"must be one of {choices}, or a mapping of method to mode")
        return {"*": AuthMode.REQUIRED}
    modes: dict[str, AuthMode] = {}
    for method, mode in raw.items():
        key = str(method).upper()
        if key != "*" and not re.fullmatch(r"[A-Z]+", key):
            reader.problem(f"{where}.{method}", "is not an HTTP method")
        if not isinstance(mode, str) or mode not in tuple(AuthMode):
            reader.problem(f"{where}.{method}", f"must be one of {choices}, got {mode!r}")
            mode = AuthMode.REQUIRED
        modes[key] = AuthMode(mode)
    modes.setdefault("*", AuthMode.REQUIRED)  # fail closed: methods the map does not name need a token
    return modes
