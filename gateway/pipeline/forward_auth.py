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

from ..client_ip import ClientIp
from ..errors import Forbidden
from ..http.request import Request
from ..http.response import Response
from ..paths import normalize_path
from .stages import Pipeline

PREFIX = "/_gateway/auth"


class ForwardAuth:
    def __init__(self, pipeline: Pipeline, client_ip: ClientIp) -> None:
        self._pipeline = pipeline
        self._client_ip = client_ip

    async def check(self, request: Request) -> Response:
        if not self._client_ip.is_trusted(request):
            raise Forbidden("Forward-auth answers trusted proxies only.")
        headers = request.headers
        method = headers.get("X-Forwarded-Method") or request.method
        target = headers.get("X-Forwarded-Uri") or headers.get("X-Original-URI")
        if target is None:
            target = request.path[len(PREFIX):] or "/"
        path = normalize_path(target.partition("?")[0])
        admission = await self._pipeline.admit(request, method.upper(), path, headers.get("Authorization"))
        headers_out = {"X-User-Id": str(admission.user_id)} if admission.user_id is not None else {}
        return Response(200, headers=headers_out)
