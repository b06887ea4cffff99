"""The gateway's one error family.

    GatewayError                 status, message, headers
    ├── BadRequest               400
    ├── Unauthorized             401  (carries WWW-Authenticate)
    ├── Forbidden                403
    │   └── UserDisabled         403  (the user is disabled)
    ├── NotFound                 404
    ├── MethodNotAllowed         405
    ├── RequestTimeout           408
    ├── PayloadTooLarge          413
    ├── UriTooLong               414
    ├── ExpectationFailed        417
    ├── TooManyRequests          429  (carries Retry-After)
    ├── HeadersTooLarge          431
    ├── InternalError            500
    ├── MethodNotImplemented     501  (TRACE and CONNECT are never proxied)
    ├── BadGateway               502
    ├── ServiceUnavailable       503  (a store the gateway needs is down)
    │   └── NoHealthyUpstream    503
    └── GatewayTimeout           504

Stages raise these; `error_response` in http/response.py is the one place they become JSON.
"""
from __future__ import annotations

import math
from typing import Mapping


class GatewayError(Exception):
    status = 500
    message = "Internal server error."

    def __init__(self, message: str | None = None, *, headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, str] | None = None, reason: str | None = None) -> None:
        self.message = message or type(self).message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more JSON fields, such as the upstream's name
        self.reason = reason  # for the debug log only, never sent: why exactly (a token "expired", say)
        super().__init__(self.message)


class BadRequest(GatewayError):
    status = 400
    message = "Bad request."


class Unauthorized(GatewayError):
    status = 401
    message = "User must be authorized."


class Forbidden(GatewayError):
    status = 403
    message = "Forbidden."


class UserDisabled(Forbidden):
    """The user exists but is disabled: at login, at refresh, or on a proxied request."""


class NotFound(GatewayError):
    status = 404
    message = "Not found."


class MethodNotAllowed(GatewayError):
    status = 405
    message = "Method not allowed."


class RequestTimeout(GatewayError):
    status = 408
    message = "Request body timed out."


class PayloadTooLarge(GatewayError):
    status = 413
    message = "Request body too large."


class UriTooLong(GatewayError):
    status = 414
    message = "Request target too long."


class ExpectationFailed(GatewayError):
    status = 417
    message = "Only Expect: 100-continue is supported."


class HeadersTooLarge(GatewayError):
    status = 431
    message = "Request header fields too large."


class TooManyRequests(GatewayError):
    status = 429
    message = "Too many requests."

    def __init__(self, retry_after: float, limit: str = "login_failures") -> None:
        super().__init__(headers={"Retry-After": str(max(1, math.ceil(retry_after)))})
        self.limit = limit  # which limit was spent: for the metrics, never sent


class InternalError(GatewayError):
    status = 500


class MethodNotImplemented(GatewayError):
    status = 501
    message = "Method not implemented."


class BadGateway(GatewayError):
    status = 502
    message = "Bad gateway."


class ServiceUnavailable(GatewayError):
    status = 503
    message = "Service unavailable."


class NoHealthyUpstream(ServiceUnavailable):
    message = "No healthy upstream."


class GatewayTimeout(GatewayError):
    status = 504
    message = "Gateway timeout."
