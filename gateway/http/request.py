"""A request as the server parsed it: the fields as sent, and a body that is read on demand."""
from __future__ import annotations

from .body import RequestBody

RawFields = list[tuple[bytes, bytes]]


class Headers:
    """The client's header fields in order, as bytes, with a case-insensitive look-up of the text values
    (decoded as UTF-8 with surrogateescape, so that nothing is lost). The index is built on first use."""

    __slots__ = ("raw", "_index")

    def __init__(self, raw: RawFields) -> None:
        self.raw = raw
        self._index: dict[str, list[str]] | None = None

    def _build(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for name, value in self.raw:
            index.setdefault(name.decode("latin-1").lower(), []).append(value.decode("utf-8", "surrogateescape"))
        self._index = index
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        values = (self._index or self._build()).get(name.lower())
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        return list((self._index or self._build()).get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in (self._index or self._build())


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "headers", "peer", "scheme", "body",
                 "keep_alive", "upgrade")

    def __init__(self, method: str, target: str, version: str, headers: Headers, peer: str, scheme: str,
                 body: RequestBody, *, keep_alive: bool, upgrade: bool) -> None:
        self.method = method
        self.target = target  # the request-target as sent (origin-form)
        path, _, self.query = target.partition("?")
        self.path = path
        self.version = version  # "1.1" or "1.0"
        self.headers = headers
        self.peer = peer  # the socket's peer address
        self.scheme = scheme
        self.body = body
        self.keep_alive = keep_alive
        self.upgrade = upgrade  # llhttp saw Connection: upgrade with an Upgrade field (or CONNECT)
