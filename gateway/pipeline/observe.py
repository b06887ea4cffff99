"""The last stage of every request: the metrics, and the access log line when `server.access_log` is on.

The server calls it once a request is over, answered or not (http/protocol.py's
`Observer`). The access log never carries a token, a code, a password or a
query string: its `path` is the request's path alone.
"""
from __future__ import annotations

import logging
import time

from ..errors import GatewayError, TooManyRequests
from ..http.reply import Reply
from ..http.request import Request
from ..metrics import UNMATCHED, Metrics

access_log = logging.getLogger("gateway.access")
CLIENT_CLOSED = 499


class RequestObserver:
    def __init__(self, metrics: Metrics, *, log_access: bool) -> None:
        self._metrics = metrics if metrics.enabled else None
        self._log_access = log_access

    def __call__(self, request: Request, reply: Reply, error: GatewayError | None, gone: bool) -> None:
        note = request.note
        seconds = time.monotonic() - note.started
        # nginx's 499: the client closed the connection before its answer was written
        status = CLIENT_CLOSED if gone else reply.status
        if self._metrics is not None:
            self._metrics.request_done(note.route or UNMATCHED, request.method, status, seconds, gone=gone,
                                       limit=error.limit if isinstance(error, TooManyRequests) else None)
        if self._log_access:
            access_log.info("%s %s %d", request.method, request.path, status, extra={"access": {
                "client": note.client, "method": request.method, "path": request.path, "route": note.route,
                "status": status, "user_id": note.user_id, "upstream": note.upstream, "target": note.target,
                "duration_ms": round(seconds * 1000, 3), "bytes_sent": reply.sent}})
