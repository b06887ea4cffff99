"""The CORS stage (`cors` in gateway.yaml): pages of other origins may call the gateway.

It runs first, before authentication. A preflight (OPTIONS with `Origin` and
`Access-Control-Request-Method`) is answered here and never forwarded: 204
with the policy's `Access-Control-Allow-*` when the origin, the method and
every requested header are allowed, else 403 with none. Any other request
with an `Origin` the policy allows gets `Access-Control-Allow-Origin` (and
`Vary: Origin`, the exposed headers, credentials) on whatever answers it,
the gateway's own errors included, so that the page can read a 401. The
gateway's own endpoints follow the top-level policy (forward-auth excepted:
the proxy in front answers CORS there), a route its own (which narrows the
top level's). On a route whose CORS is off, preflights and the upstream's
own `Access-Control-*` fields pass through as for any request; on every
other route the upstream's are replaced.
"""
from __future__ import annotations

from ..config.model import CorsPolicy
from ..errors import Forbidden
from ..http.response import Response
from .match import Route, RouteTable

_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class CorsAnswers:
    """One policy's answers, made once."""

    def __init__(self, policy: CorsPolicy) -> None:
        self._origins = policy.allow_origins
        self._any = policy.any_origin
        self._methods = frozenset(policy.allow_methods)
        self._headers = frozenset(name.lower() for name in policy.allow_headers)
        tail = b""
        if policy.expose_headers:
            tail += b"Access-Control-Expose-Headers: %s\r\n" % ", ".join(policy.expose_headers).encode()
        if policy.allow_credentials:
            tail += b"Access-Control-Allow-Credentials: true\r\n"
        self._tail = tail
        self._preflight = {
            "Access-Control-Allow-Methods": ", ".join(policy.allow_methods),
            "Access-Control-Allow-Headers": ", ".join(policy.allow_headers),
            "Access-Control-Max-Age": str(policy.max_age),
            **({"Access-Control-Allow-Credentials": "true"} if policy.allow_credentials else {}),
            "Vary": _PREFLIGHT_VARY,
        }

    def allowed(self, origin: str) -> str | None:
        """The value of Access-Control-Allow-Origin for `origin`, or None when it is not allowed."""
        if self._any:
            return "*"
        origin = origin.lower()
        return origin if origin in self._origins else None

    def fields(self, origin: str | None) -> bytes:
        """The fields an answer to a request from `origin` carries (None: it sent no Origin; a cache must
        still know that the answer depends on it)."""
        if origin is None:
            return b"Access-Control-Allow-Origin: *\r\n" + self._tail if self._any else b"Vary: Origin\r\n"
        allowed = self.allowed(origin)
        if allowed is None:
            return b"Vary: Origin\r\n"
        if allowed == "*":
            return b"Access-Control-Allow-Origin: *\r\n" + self._tail
        return b"Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n%s" % (allowed.encode(), self._tail)

    def preflight(self, origin: str, method: str, headers: str | None) -> Response:
        allowed = self.allowed(origin)
        if allowed is None:
            raise _refused("CORS: this origin may not call the gateway.")
        if method not in self._methods:
            raise _refused(f"CORS: the method {method[:32]} is not allowed here.")
        asked = {name.strip().lower() for name in (headers or "").split(",") if name.strip()}
        if not asked <= self._headers:
            raise _refused("CORS: a requested header is not allowed here.")
        return Response(204, headers={"Access-Control-Allow-Origin": allowed, **self._preflight})


def _refused(message: str) -> Forbidden:
    return Forbidden(message, headers={"Vary": _PREFLIGHT_VARY})


class Cors:
    def __init__(self, top: CorsPolicy, routes: RouteTable[Route]) -> None:
        self._top = CorsAnswers(top)
        self._routes = routes
        self._answers: dict[CorsPolicy, CorsAnswers] = {top: self._top}

    def answers(self, path: str, own: bool) -> CorsAnswers | None:
        """The answers for a normalized path: the top level's for the gateway's own endpoints and for a path
        no route matches; a route's own (None when its CORS is off)."""
        if own:
            return self._top
        route = self._routes.match(path)
        if route is None:
            return self._top
        policy = route.cors
        if policy is None:
            return None
        answers = self._answers.get(policy)
        if answers is None:
            answers = self._answers[policy] = CorsAnswers(policy)
        return answers

