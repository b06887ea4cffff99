"""The authenticate and authorize stages of the proxy pipeline.

`authenticate` turns the Authorization header into Claims (or None for an
anonymous request) under the route's mode; `authorize` refuses what the mode
does not allow. Both raise; neither touches the request body.
"""
from __future__ import annotations

from ..errors import Forbidden, Unauthorized
from .tokens import Claims, InvalidToken, TokenService, bearer_token

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="toutiao-gateway"'}
_INVALID_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="toutiao-gateway", error="invalid_token"'}


def authenticate(tokens: TokenService, header: str | None, mode: str) -> Claims | None:
    if mode == "public":
        return None
    if header is None:
        if mode == "optional":
            return None
        raise Unauthorized(headers=_CHALLENGE)
    token = bearer_token(header)
    try:
        if token is None:
            raise InvalidToken("not a Bearer token")
        claims = tokens.verify(token)
    except InvalidToken:
        message = "Token has some errors." if mode == "optional" else "User must be authorized."
        raise Unauthorized(message, headers=_INVALID_CHALLENGE) from None
    authorize(claims)
    return claims


def authorize(claims: Claims) -> None:
    if claims.refresh:
        raise Forbidden("Do not use refresh token.")
