"""The parsed configuration: frozen dataclasses whose fields match the YAML keys."""
from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from limits import RateLimitItem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServerTls:
    """`server.tls`: HTTPS on the public listener. `context` is made (and the files read) when the config is."""

    cert_file: str
    key_file: str
    context: ssl.SSLContext = field(compare=False, repr=False)
    min_version: str = "1.2"
    ciphers: str | None = None
    client_ca_file: str | None = None
    client_auth: str = "none"  # none | optional | required


@dataclass(frozen=True)
class UpstreamTls:
    """`upstreams.NAME.tls`: how the gateway speaks TLS to an upstream's https:// targets."""

    ca_file: str | None = None  # None: the system's trusted CAs
    verify: bool = True
    server_name: str | None = None  # None: each target's host
    cert_file: str | None = None  # a client certificate, for upstreams that ask for one (mTLS)
    key_file: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = False
    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    trusted_proxies: tuple[Network, ...] = ()
    workers: int = 1
    shutdown_timeout: float = 30.0
    keepalive_timeout: float = 75.0  # an idle kept-alive client connection is closed
    header_timeout: float = 10.0  # a request head must arrive whole within this of its first byte (or of accept)
    max_connections: int = 10000  # client connections one process holds; past it, new ones wait to be accepted
    client_timeout: float = 60.0  # the longest a client may send none of its body or take none of its answer
    tls: ServerTls | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


@dataclass(frozen=True)
class AdminConfig:
    """`admin`: the listener of /metrics, /healthz and /readyz (absent: none)."""

    host: str = "127.0.0.1"
    port: int = 8001
    probe_timeout: float = 1.0  # each readiness probe answers within this or counts as failing


@dataclass(frozen=True)
class JwtKey:
    """One key of `jwt.keys`. `signing` is None for a verify-only (public) key."""

    kid: str
    algorithm: str
    signing: Any
    verifying: Any
    public_jwk: Mapping[str, Any] | None = None  # served at /.well-known/jwks.json


@dataclass(frozen=True)
class JwtConfig:
    keys: tuple[JwtKey, ...]
    access_ttl: float = 2 * 3600
    refresh_ttl: float = 14 * 86400
    cache_size: int = 50_000
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 0.0
    rotate_refresh_tokens: bool = False
    rotation_grace: float = 10.0
    generated: bool = False  # True when --dev made up the secret
    kidless_legacy: bool = False  # single `secret` form: tokens without `kid` use it
    accept_legacy_tokens: bool = True  # tokens without `jti`, as the toutiao backend made them

    @property
    def signing_key(self) -> JwtKey:
        return self.keys[0]


@dataclass(frozen=True)
class SentinelConfig:
    hosts: tuple[tuple[str, int], ...]
    service: str = "mymaster"
    password: str | None = None  # of the Redis servers; Sentinel itself is asked without one
    db: int = 0


@dataclass(frozen=True)
class ClusterConfig:
    """`redis.cluster`: a Redis Cluster, found through any of these nodes."""

    nodes: tuple[tuple[str, int], ...]
    password: str | None = None


@dataclass(frozen=True)
class RedisConfig:
    url: str = "memory://"
    replica_url: str | None = None
    sentinel: SentinelConfig | None = None
    cluster: ClusterConfig | None = None

    @property
    def embedded(self) -> bool:
        return self.sentinel is None and self.cluster is None and self.url == "memory://"


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
    max_attempts: int = 5


@dataclass(frozen=True)
class RateLimit:
    rate: RateLimitItem
    key: str  # ip | mobile | user

    def __str__(self) -> str:
        return f"{self.rate} by {self.key}"


@dataclass(frozen=True)
class LimitsConfig:
    sms: tuple[RateLimit, ...] = ()
    login: tuple[RateLimit, ...] = ()
    refresh: tuple[RateLimit, ...] = ()
    login_failures: RateLimitItem | None = None  # failed logins per mobile or account


@dataclass(frozen=True)
class RevocationConfig:
    user_status_cache_ttl: float = 60.0
    on_redis_down: str = "reject"  # reject | allow


@dataclass(frozen=True)
class TargetConfig:
    url: str
    weight: int = 1


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0  # longest wait for the next bytes
    first_byte: float | None = None  # from sending the request to the response headers
    total: float | None = None  # the whole exchange, body included


@dataclass(frozen=True)
class HealthCheckConfig:
    path: str = "/"
    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True)
class PassiveConfig:
    consecutive_failures: int = 3
    cooldown: float = 30.0


IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")


class Balance(StrEnum):
    """How an upstream picks a target (proxy/balancer.py has one class for each)."""

    ROUND_ROBIN = "round_robin"  # smooth weighted, as nginx
    LEAST_CONNECTIONS = "least_connections"  # fewest requests in flight per weight
    RANDOM_TWO_CHOICES = "random_two_choices"  # two weighted random picks, the less loaded wins


@dataclass(frozen=True)
class WebSocketLimits:
    """`upstreams.NAME.websocket` (and a route's own): the tunnels to this upstream."""

    idle_timeout: float = 300.0  # no byte either way for this long: the tunnel is closed (1001)
    max_message_size: int = 4 * 1024 * 1024  # a client's message over this: closed (1009)


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    targets: tuple[TargetConfig, ...]
    balance: Balance = Balance.ROUND_ROBIN
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 100
    health_check: HealthCheckConfig | None = None
    passive: PassiveConfig = field(default_factory=PassiveConfig)
    retry_methods: frozenset[str] = frozenset(IDEMPOTENT)
    max_body_size: int | None = None
    tls: UpstreamTls = field(default_factory=UpstreamTls)
    websocket: WebSocketLimits = field(default_factory=WebSocketLimits)


@dataclass(frozen=True)
class CorsPolicy:
    """`cors` (and a route's narrowing of it): which other origins' pages may call the gateway."""

    allow_origins: frozenset[str]  # exact origins (scheme://host[:port]), or {"*"} without credentials
    allow_methods: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    allow_headers: tuple[str, ...] = ("Authorization", "Content-Type")
    expose_headers: tuple[str, ...] = ("X-Request-Id",)
    max_age: int = 600
    allow_credentials: bool = False

    @property
    def any_origin(self) -> bool:
        return "*" in self.allow_origins


class AuthMode(StrEnum):
    PUBLIC = "public"  # no token needed; one sent is not read
    OPTIONAL = "optional"  # a valid token identifies the user; none is fine; a bad one is 401
    REQUIRED = "required"  # a valid access token of an enabled user, or 401/403


@dataclass(frozen=True)
class RouteConfig:
    path: str
    upstream: str
    auth: Mapping[str, AuthMode]  # method (or "*") -> mode
    forward_authorization: bool = False
    limits: tuple[RateLimit, ...] = ()
    timeouts: Timeouts | None = None  # None: the upstream's
    max_body_size: int | None = None  # None: the upstream's
    retry_non_idempotent: bool = False
    cors: CorsPolicy | None = None  # the top-level `cors`, narrowed by the route's own; None: no CORS here
    websocket: WebSocketLimits | None = None  # None: the upstream's

    def mode(self, method: str) -> AuthMode:
        """The mode for this method; HEAD follows GET; unnamed methods follow "*"."""
        modes = self.auth
        mode = modes.get(method)
        if mode is None and method == "HEAD":
            mode = modes.get("GET")
        return mode or modes["*"]


@dataclass(frozen=True)
class Config:
    jwt: JwtConfig
    server: ServerConfig = field(default_factory=ServerConfig)
    admin: AdminConfig | None = None
    redis: RedisConfig = field(default_factory=RedisConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ids: IdsConfig = field(default_factory=IdsConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    cors: CorsPolicy | None = None  # for the gateway's own endpoints, and the routes that do not narrow it
    source: str = "<memory>"
    warnings: tuple[str, ...] = ()  # logged at start and on each reload: a certificate soon to expire, say
