"""The client's address and scheme: the socket's, unless its peer is a trusted proxy.

Only then is X-Forwarded-For read, right to left, skipping trusted proxies:
the first address that is not one of ours is the client. A forged entry to
the left of it changes nothing. Likewise X-Forwarded-Proto (http or https)
is believed from a trusted proxy alone: a load balancer that terminated TLS
says so to the upstream through the gateway.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from .config.model import Network
from .http.request import Request


def is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_ip(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage: trust nothing further left
        client = hop
        if not is_trusted(hop, trusted):
            break
    return client


class ClientIp:
    """The one reader of `server.trusted_proxies`."""

    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self.trusted = trusted

    def __call__(self, request: Request) -> str:
        if not self.trusted:
            return request.peer
        return client_ip(request.peer, request.headers.getall("X-Forwarded-For"), self.trusted)

    def is_trusted(self, request: Request) -> bool:
        return is_trusted(request.peer, self.trusted)

    def scheme(self, request: Request) -> str:
        if not self.trusted:
            return request.scheme
        forwarded = request.headers.get("X-Forwarded-Proto")
        if forwarded is None or not is_trusted(request.peer, self.trusted):
            return request.scheme
        forwarded = forwarded.split(",")[-1].strip().lower()  # the nearest proxy's word, appended last
        return forwarded if forwarded in ("http", "https") else request.scheme
