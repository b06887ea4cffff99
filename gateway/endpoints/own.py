"""The paths the gateway answers itself, matched before any route: they are never proxied."""
from __future__ import annotations

from typing import Awaitable, Callable

from ..errors import MethodNotAllowed
from ..http.request import Request
from ..http.response import Response
from ..pipeline.forward_auth import PREFIX as FORWARD_AUTH
from ..pipeline.forward_auth import ForwardAuth
from .auth import AuthEndpoints

Endpoint = Callable[[Request], Awaitable[Response]]
SMS_CODES = "/v1_0/sms/codes/"


class OwnEndpoints:
    def __init__(self, auth: AuthEndpoints, forward_auth: ForwardAuth) -> None:
        self._auth = auth
        self._forward_auth = forward_auth
        self._exact: dict[str, dict[str, Endpoint]] = {
            "/v1_0/authorizations": {"POST": auth.login, "PUT": auth.refresh, "DELETE": auth.logout},
            "/.well-known/jwks.json": {"GET": auth.jwks},
        }

    def match(self, method: str, path: str) -> Endpoint | None:
        """The endpoint for a normalized path, or None: the path is the routes' to match.
        Raises MethodNotAllowed for an own path and a method it does not serve."""
        methods = self._exact.get(path)
        if methods is not None:
            return _by_method(methods, method)
        if path.startswith(SMS_CODES) and "/" not in path[len(SMS_CODES):] and len(path) > len(SMS_CODES):
            mobile = path[len(SMS_CODES):]
            return _by_method({"GET": lambda request: self._auth.send_code(request, mobile)}, method)
        if path == FORWARD_AUTH or path.startswith(FORWARD_AUTH + "/"):
            return self._forward_auth.check
        return None


def _by_method(methods: dict[str, Endpoint], method: str) -> Endpoint:
    endpoint = methods.get(method)
    if endpoint is None:
        raise MethodNotAllowed(headers={"Allow": ", ".join(methods)})
    return endpoint
