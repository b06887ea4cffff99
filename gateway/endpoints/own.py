"""The paths the gateway answers itself, matched before any route: they are never proxied."""
from __future__ import annotations

import importlib.resources
from typing import Awaitable, Callable, NamedTuple

import yaml

from ..errors import MethodNotAllowed
from ..http.request import Request
from ..http.response import Response, json_response
from ..pipeline.forward_auth import PREFIX as FORWARD_AUTH
from ..pipeline.forward_auth import ForwardAuth
from .auth import AuthEndpoints

Endpoint = Callable[[Request], Awaitable[Response]]
SMS_CODES = "/v1_0/sms/codes/"
OPENAPI = "/_gateway/openapi.json"


def openapi_document() -> Response:
    """docs/openapi.yaml (shipped in the package as endpoints/openapi.yaml), as JSON: read once."""
    text = importlib.resources.files(__package__ or "gateway.endpoints").joinpath("openapi.yaml").read_text()
    return json_response(yaml.safe_load(text), headers={"Cache-Control": "public, max-age=300"})


class OwnEndpoints:
    def __init__(self, auth: AuthEndpoints, forward_auth: ForwardAuth) -> None:
        self._auth = auth
        self._forward_auth = forward_auth
        document = openapi_document()

        async def openapi(request: Request) -> Response:
            return document

        self._exact: dict[str, dict[str, Endpoint]] = {
            "/v1_0/authorizations": {"POST": auth.login, "PUT": auth.refresh, "DELETE": auth.logout},
            "/.well-known/jwks.json": {"GET": auth.jwks},
            OPENAPI: {"GET": openapi},
        }

    def match(self, path: str) -> OwnPath | None:
        """The gateway's own path for a normalized path, or None: the path is the routes' to match."""
        methods = self._exact.get(path)
        if methods is not None:
            return OwnPath(path, methods)
        if path.startswith(SMS_CODES) and "/" not in path[len(SMS_CODES):] and len(path) > len(SMS_CODES):
            mobile = path[len(SMS_CODES):]
            return OwnPath(SMS_CODES + "{mobile}", {"GET": lambda request: self._auth.send_code(request, mobile)})
        if path == FORWARD_AUTH or path.startswith(FORWARD_AUTH + "/"):
            return OwnPath(FORWARD_AUTH, {"*": self._forward_auth.check}, cors=False)
        return None


class OwnPath(NamedTuple):
    route: str  # as the metrics and the access log name it: the path as documented, {mobile} for the mobile
    methods: dict[str, Endpoint]  # "*": any method
    cors: bool = True  # forward-auth: no, the proxy in front answers CORS for the requests it checks

    def endpoint(self, method: str) -> Endpoint:
        """Raises MethodNotAllowed for a method this path does not serve."""
        endpoint = self.methods.get(method) or self.methods.get("*")
        if endpoint is None:
            raise MethodNotAllowed(headers={"Allow": ", ".join(self.methods)})
        return endpoint
