"""Forward-auth mode: nginx `auth_request`, Traefik ForwardAuth, Envoy's HTTP ext_authz.

The proxy in front asks `/_gateway/auth` whether a request may pass. The
original method comes from X-Forwarded-Method, the original URI from
X-Forwarded-Uri or X-Original-URI; without them (Envoy, with `path_prefix:
/_gateway/auth`) the check request's own method and path are the original's.
The same route table, modes and limits apply. The answer is 200 with
X-User-Id (when there is a user), or the same 401/403 JSON as the proxy.
Only peers in `server.trusted_proxies` may ask.
"""
from __future__ import annotations

from aiohttp import web

from . import keys
from .client_ip import is_trusted
from .errors import Forbidden
from .pipeline import admit

PREFIX = "/_gateway/auth"


async def forward_auth(request: web.Request) -> web.Response:
    if not is_trusted(request.remote or "", request.app[keys.CONFIG].server.trusted_proxies):
        raise Forbidden("Forward-auth answers trusted proxies only.")
    headers = request.headers
    method = headers.get("X-Forwarded-Method") or request.method
    target = headers.get("X-Forwarded-Uri") or headers.get("X-Original-URI")
    if target is None:
        target = request.raw_path[len(PREFIX):] or "/"
    admission = await admit(request, method.upper(), target, headers)
    response = web.Response(status=200)
    if admission.user_id is not None:
        response.headers["X-User-Id"] = str(admission.user_id)
    return response
