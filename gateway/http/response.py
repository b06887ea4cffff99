"""The gateway's own answers: complete responses, JSON mostly, and the one place errors become JSON."""
from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Mapping

from ..errors import GatewayError
from ..logs import REQUEST_ID

REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
SERVER = "toutiao-gateway"


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int = 200, body: bytes = b"", *, headers: Mapping[str, str] | None = None,
                 content_type: str | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        if content_type is not None:
            self.headers["Content-Type"] = content_type


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json.dumps(data).encode(), headers=headers,
                    content_type="application/json; charset=utf-8")


def error_response(error: GatewayError) -> Response:
    """Every error the gateway answers is this JSON: `{"message": ...}` and the error's extra fields, with
    the request's X-Request-Id when it has one (a 502 the client reports can be found in the log)."""
    response = json_response({"message": error.message, **error.extra}, error.status, error.headers)
    request_id = REQUEST_ID.get()
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id
    return response
