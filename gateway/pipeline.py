"""The proxy pipeline: match → authenticate → authorize → limit → mutate → forward.

`admit` runs the checks (shared with forward-auth mode); `proxy` then mutates
the headers and forwards. `Expect: 100-continue` is answered only after every
check has passed, so a refused client never sends its body.
"""
from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from . import keys
from .client_ip import request_ip
from .errors import NotFound, PayloadTooLarge
from .proxy.headers import as_text, upstream_request_fields
from .proxy.websocket import is_upgrade, relay_websocket
from .proxy.route import Route
from .routing import normalize_path


@dataclass(frozen=True, slots=True)
class Admission:
    route: Route
    path_qs: str  # normalized path, with the query as sent
    user_id: int | None


async def admit(request: web.Request, method: str, target: str, headers: CIMultiDictProxy[str]) -> Admission:
    app = request.app
    raw_path, _, query = target.partition("?")
    path = normalize_path(raw_path)
    route = app[keys.ROUTES].match(path)
    if route is None:
        raise NotFound("No route matches this path.")
    mode = route.mode(method)
    authenticator = app[keys.AUTHENTICATOR]
    claims = authenticator.authenticate(headers.get("Authorization"), mode)
    user_id = None
    if claims is not None:
        await authenticator.authorize(claims, mode)
        user_id = claims.user_id
    if route.limits:
        ip = request_ip(request, app[keys.CONFIG].server.trusted_proxies)
        await app[keys.RATE_LIMITS].route(route.path, route.limits, ip, user_id)
    return Admission(route, f"{path}?{query}" if query else path, user_id)


async def proxy(request: web.Request) -> web.StreamResponse:
    app = request.app
    headers = request.headers
    admission = await admit(request, request.method, request.raw_path, headers)
    route = admission.route
    forwarder = app[keys.FORWARDER]
    limit = route.body_limit
    if limit is not None and (request.content_length or 0) > limit:
        raise PayloadTooLarge()
    if headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # only now may the client send its body
    req_id = app[keys.REQUEST_IDS](headers)
    fields = upstream_request_fields(
        request.raw_headers,
        user_id=admission.user_id,
        forward_authorization=route.forward_authorization,
        peer=request.remote or "",
        scheme=request.scheme,
        req_id=req_id,
    )
    if is_upgrade(request):
        return await relay_websocket(request, forwarder.session, route, admission.path_qs, as_text(fields))
    return await forwarder.forward(request, route, admission.path_qs, fields, req_id)


async def defer_continue(request: web.Request) -> None:
    """The proxy's `Expect: 100-continue`: answered by `proxy` once the request is allowed, not before."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Unknown Expect: " + request.headers.get("Expect", ""))
