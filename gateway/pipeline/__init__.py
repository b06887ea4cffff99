"""The proxy's request path, one module per stage, in order:

    match.py          the route for the normalized path (paths.py normalizes it)
    authenticate.py   the token's claims under the route's mode; then authorize: refresh tokens,
                      revoked sessions and disabled users refused
    stages.py         the stages in order (`Pipeline`), rate limits (ratelimit.py) among them
    mutate.py         the header fields an upstream receives, and those the client gets back
    forward.py        the request to a target (proxy/ holds the transport, balancer and health)
    websocket.py      an upgrade: the handshake forwarded, then a byte tunnel
    forward_auth.py   the same checks for nginx, Traefik and Envoy, answered without forwarding

Errors end the path as GatewayError exceptions; http/response.py renders them, in one place.
"""
from __future__ import annotations

from .stages import Admission, Pipeline

__all__ = ["Admission", "Pipeline"]
