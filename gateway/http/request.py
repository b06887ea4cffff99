"""A request as the server parsed it: the fields as sent, and a body that is read on demand."""
from __future__ import annotations

from .body import RequestBody

RawFields = list[tuple[bytes, bytes]]


class Headers:
    """The client's header fields in order, as bytes, and the first value of each name by its lowercase
    name (made by the server while it parses). Text values are decoded as UTF-8 with surrogateescape, so
    that nothing is lost."""

    __slots__ = ("raw", "_first")

    def __init__(self, raw: RawFields, first: dict[bytes, bytes] | None = None) -> None:
        self.raw = raw
        if first is None:
            first = {}
            for name, value in raw:
                first.setdefault(name.lower(), value)
        self._first = first

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._first.get(name.lower().encode("latin-1"))
        return value.decode("utf-8", "surrogateescape") if value is not None else default

    def getall(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("utf-8", "surrogateescape") for field, value in self.raw if field.lower() == wanted]


class RequestNote:
    """What the access log and the metrics say of a request beyond its head; the stages fill it in as they
    learn it. Only while something observes requests (metrics, the access log): otherwise none is made."""

    __slots__ = ("started", "client", "route", "user_id", "upstream", "target")

    def __init__(self, started: float, client: str) -> None:
        self.started = started  # time.monotonic() when the head was parsed
        self.client = client  # the peer, or the client behind a trusted proxy
        self.route: str | None = None  # the route's configured path, never the request's
        self.user_id: int | None = None
        self.upstream: str | None = None
        self.target: str | None = None


class Request:
    __slots__ = ("method", "path", "query", "version", "headers", "peer", "scheme", "body", "keep_alive",
                 "upgrade", "note")

    def __init__(self, method: str, target: str, version: str, headers: Headers, peer: str, scheme: str,
                 body: RequestBody, note: RequestNote | None, *, keep_alive: bool, upgrade: bool) -> None:
        self.method = method
        self.path, _, self.query = target.partition("?")  # of the request-target as sent
        self.version = version  # "1.1" or "1.0"
        self.headers = headers
        self.peer = peer  # the socket's peer address
        self.scheme = scheme
        self.body = body
        self.keep_alive = keep_alive
        self.upgrade = upgrade  # llhttp saw Connection: upgrade with an Upgrade field (or CONNECT)
        self.note = note
