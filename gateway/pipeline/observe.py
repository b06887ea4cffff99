"""The last stage of every request: the metrics, and the access log line when `server.access_log` is on.

The server calls it once a request is over, answered or not (http/protocol.py's
`Observer`); with neither metrics nor an access log it is not called at all.
The access log never carries a token, a code, a password or a query string:
its `path` is the request's path alone.
"""
from __future__ import annotations

import time
from bisect import bisect_left as _bisect

from ..errors import BadRequest, GatewayError, TooManyRequests
from ..http.reply import Reply
from ..http.request import Request
from ..logs import AccessLog
from ..metrics import BUCKETS, CELL, METHODS, UNMATCHED, Metrics
from ..paths import origin_path

CLIENT_CLOSED = 499  # nginx's: the client closed the connection before its answer was written
_ANY = ()


class RequestObserver:
    def __init__(self, metrics: Metrics, *, log_access: bool) -> None:
        self._cells = metrics.requests if metrics.enabled else None
        self._disconnects = metrics.client_disconnects
        self._limited = metrics.rate_limited
        self._access_log = AccessLog() if log_access else None

    def __call__(self, request: Request, reply: Reply, error: GatewayError | None, gone: bool) -> None:
        note = request.note
        assert note is not None  # made for every request while there is an observer
        seconds = time.monotonic() - note.started
        status = CLIENT_CLOSED if gone else reply.status
        cells = self._cells
        if cells is not None:
            # Metrics.request_done, inline: this runs for every request
            method = request.method
            key = (note.route or UNMATCHED, method if method in METHODS else "other", status)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = [0.0] * CELL
            cell[0] += 1
            cell[1 + _bisect(BUCKETS, seconds)] += 1
            cell[-1] += seconds
            if gone:
                self._disconnects[_ANY] += 1
            if error is not None and isinstance(error, TooManyRequests):
                self._limited[(error.limit,)] += 1
        if self._access_log is not None:
            path = _logged_path(request.path)
            self._access_log.write(f"{request.method} {path} {status}", {
                "client": note.client, "method": request.method, "path": path, "route": note.route,
                "status": status, "user_id": note.user_id, "upstream": note.upstream, "target": note.target,
                "duration_ms": round(seconds * 1000, 3), "bytes_sent": reply.sent})


def _logged_path(target: str) -> str:
    """The path as sent (never the query: the request keeps it apart), or of an absolute-form target its path
    alone: no scheme, host or user:password@."""
    if target.startswith("/") or target == "-":
        return target
    try:
        return origin_path(target)
    except BadRequest:
        return "-"
