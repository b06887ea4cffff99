"""A route with everything about it worked out once, when the configuration is loaded.

The pipeline reads what it needs per request from this one frozen object: the
auth mode of each method, the upstream, the timeouts, the body limit and the
retry policy, the route's own settings over the upstream's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ..config import RateLimit, RouteConfig
from ..config.model import Timeouts
from .upstream import Upstream


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    upstream: Upstream
    modes: Mapping[str, str]  # each method the config names, and HEAD
    other_mode: str  # every other method: the config's "*"
    forward_authorization: bool
    limits: tuple[RateLimit, ...]
    timeouts: Timeouts
    body_limit: int | None
    retry_methods: frozenset[str] | None  # None: any method may be retried

    def mode(self, method: str) -> str:
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
    )


def resolve_all(configs: Iterable[RouteConfig], upstreams: Mapping[str, Upstream]) -> list[Route]:
    return [resolve(config, upstreams[config.upstream]) for config in configs]
