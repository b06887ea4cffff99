"""The proxy pipeline: match → authenticate → authorize → limit → mutate → forward.

`admit` runs the checks (shared with forward-auth mode); `proxy` then mutates
the headers and forwards. A client that sent `Expect: 100-continue` is told
to go on only when the forward stage first reads the body, after every check
has passed, so a refused client never sends it.
"""
from __future__ import annotations

from typing import NamedTuple

from ..client_ip import ClientIp
from ..errors import MethodNotImplemented, NotFound, PayloadTooLarge
from ..http.reply import Reply
from ..http.request import Request
from ..logs import REQUEST_ID
from ..ratelimit import RateLimits
from .authenticate import Authenticator
from .forward import Forwarder
from .match import Route, RouteTable
from .mutate import RequestIds, upstream_request_fields
from .websocket import is_upgrade, relay_websocket


# Never proxied (RFC 9110 §15.6.2: supported for no resource). CONNECT asks for a tunnel to an authority
# (§9.3.6), and a 2xx to it makes the upstream connection one (RFC 9112 §6.3), which a pooled connection must
# never become. TRACE has the upstream reflect the request it got (§9.3.8): the fields the gateway added,
# X-User-Id and, on a route that forwards it, the bearer token, would come back in a response body.
NOT_PROXIED = frozenset({"CONNECT", "TRACE"})


class Admission(NamedTuple):
    route: Route
    user_id: int | None


class Pipeline:
    def __init__(self, routes: RouteTable[Route], authenticator: Authenticator, limits: RateLimits,
                 client_ip: ClientIp, request_ids: RequestIds, forwarder: Forwarder) -> None:
        self._routes = routes
        self._authenticator = authenticator
        self._limits = limits
        self._client_ip = client_ip
        self._request_ids = request_ids
        self._forwarder = forwarder

    async def admit(self, request: Request, method: str, path: str, authorization: str | None) -> Admission:
        """`path` is normalized. Raises the 401/403/404/429 that ends the request here."""
        route = self._routes.match(path)
        if route is None:
            raise NotFound("No route matches this path.")
        note = request.note
        if note is not None:  # metrics or the access log are on
            note.route, note.upstream = route.path, route.upstream.name
            if self._client_ip.trusted:
                note.client = self._client_ip(request)
        mode = route.mode(method)
        authenticator = self._authenticator
        claims = authenticator.authenticate(authorization, mode)
        user_id = None
        if claims is not None:
            if not authenticator.authorized(claims, mode):  # the user's status is not cached
                await authenticator.status_allows(claims)
            user_id = claims.user_id
            if note is not None:
                note.user_id = user_id
        if route.limits:
            await self._limits.route(route.path, route.limits, self._client_ip(request), user_id)
        return Admission(route, user_id)

    async def proxy(self, request: Request, reply: Reply, path: str) -> None:
        headers = request.headers
        req_id = self._request_ids(headers.get("X-Request-Id"))
        REQUEST_ID.set(req_id)  # every log record from here on carries it, a refusal's too
        if request.method in NOT_PROXIED:
            raise MethodNotImplemented()
        admission = await self.admit(request, request.method, path, headers.get("Authorization"))
        route = admission.route
        limit = route.body_limit
        if limit is not None and (request.body.length or 0) > limit:
            raise PayloadTooLarge()
        fields = upstream_request_fields(
            headers.raw,
            user_id=admission.user_id,
            forward_authorization=route.forward_authorization,
            peer=request.peer,
            scheme=self._client_ip.scheme(request),
            req_id=req_id,
        )
        path_qs = f"{path}?{request.query}" if request.query else path
        if is_upgrade(request):
            await relay_websocket(request, reply, route, path_qs, fields)
        else:
            await self._forwarder.forward(request, reply, route, path_qs, fields, req_id)
