"""The match stage: the route for a normalized path (paths.py makes it so).

A `Route` has everything about it worked out once, when the configuration is
loaded: the auth mode of each method, the upstream, the timeouts, the body
limit and the retry policy, the route's own settings over the upstream's.
The stages read what they need per request from this one frozen object.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Iterable, Mapping, Protocol, TypeVar

from ..config import RateLimit, RouteConfig
from ..config.model import AuthMode, CorsPolicy, Timeouts, WebSocketLimits
from ..proxy.upstream import Upstream


class _HasPath(Protocol):
    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=_HasPath)


class RouteTable(Generic[R]):
    """Longest whole-segment prefix wins: /v1_0/articles matches /v1_0/articles/1, not /v1_0/articlesX."""

    def __init__(self, routes: Iterable[R]) -> None:
        self._by_path = {route.path: route for route in routes}

    def match(self, path: str) -> R | None:
        by_path = self._by_path
        candidate = path.rstrip("/") or "/"
        while True:
            route = by_path.get(candidate)
            if route is not None:
                return route
            if candidate == "/":
                return None
            candidate = candidate[:candidate.rfind("/")] or "/"


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    upstream: Upstream
    modes: Mapping[str, AuthMode]  # each method the config names, and HEAD
    other_mode: AuthMode  # every other method: the config's "*"
    forward_authorization: bool
    limits: tuple[RateLimit, ...]
    timeouts: Timeouts
    body_limit: int | None
    retry_methods: frozenset[str] | None  # None: any method may be retried
    cors: CorsPolicy | None  # None: CORS is off here (the upstream's own Access-Control-* fields pass)
    websocket: WebSocketLimits  # the route's, else the upstream's

    def mode(self, method: str) -> AuthMode:
        return self.modes.get(method, self.other_mode)

    def may_retry(self, method: str) -> bool:
        return self.retry_methods is None or method in self.retry_methods


def resolve(config: RouteConfig, upstream: Upstream) -> Route:
    named = {method for method in config.auth if method != "*"} | {"HEAD"}
    return Route(
        path=config.path,
        upstream=upstream,
        modes={method: config.mode(method) for method in named},
        other_mode=config.auth["*"],
        forward_authorization=config.forward_authorization,
        limits=config.limits,
        timeouts=config.timeouts or upstream.config.timeouts,
        body_limit=config.max_body_size or upstream.config.max_body_size,
        retry_methods=None if config.retry_non_idempotent else upstream.config.retry_methods,
        cors=config.cors,
        websocket=config.websocket or upstream.config.websocket,
    )


def resolve_all(configs: Iterable[RouteConfig], upstreams: Mapping[str, Upstream]) -> list[Route]:
    return [resolve(config, upstreams[config.upstream]) for config in configs]
