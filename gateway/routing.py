"""The match stage: the route for a normalized path (paths.py makes it so)."""
from __future__ import annotations

from typing import Generic, Iterable, Protocol, TypeVar


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
