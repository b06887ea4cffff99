"""The proxy pipeline: match → authenticate → authorize → limit → mutate → forward.

`Expect: 100-continue` is answered only after every check has passed, so a
refused client never sends its body.

Errors raised by any stage are rendered by `middleware.render_errors`. A
request refused before `forward` never reaches an upstream, and its body is
never read.
"""
from __future__ import annotations

from aiohttp import web

from . import keys
from .client_ip import client_ip
from .errors import NotFound, PayloadTooLarge
from .proxy.headers import upstream_request_headers
from .routing import auth_mode, normalize_path


async def proxy(request: web.Request) -> web.StreamResponse:
    app = request.app
    raw_path, _, query = request.raw_path.partition("?")
    path = normalize_path(raw_path)
    route = app[keys.ROUTES].match(path)
    if route is None:
        raise NotFound("No route matches this path.")
    headers = request.headers
    mode = auth_mode(route, request.method)
    authenticator = app[keys.AUTHENTICATOR]
    claims = authenticator.authenticate(headers.get("Authorization"), mode)
    user_id = None
    if claims is not None:
        await authenticator.authorize(claims, mode)
        user_id = claims.user_id
    peer = request.remote or ""
    if route.limits:
        ip = client_ip(peer, headers.getall("X-Forwarded-For", ()), app[keys.CONFIG].server.trusted_proxies)
        await app[keys.RATE_LIMITS].route(route, ip, user_id)
    forwarder = app[keys.FORWARDER]
    limit = forwarder.body_limit(route)
    if limit is not None and (request.content_length or 0) > limit:
        raise PayloadTooLarge()
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # only now may the client send its body
    req_id = app[keys.REQUEST_IDS](headers)
    upstream_headers = upstream_request_headers(
        headers,
        user_id=user_id,
        forward_authorization=route.forward_authorization,
        peer=peer,
        scheme=request.scheme,
        host=headers.get("Host"),
        req_id=req_id,
    )
    path_qs = f"{path}?{query}" if query else path
    return await forwarder.forward(request, route, path_qs, upstream_headers, req_id)


async def defer_continue(request: web.Request) -> None:
    """The proxy's `Expect: 100-continue`: answered by `proxy` once the request is allowed, not before."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Unknown Expect: " + request.headers.get("Expect", ""))
