"""The endpoints the gateway serves itself: SMS code, login, refresh, logout, JWKS."""
from __future__ import annotations

import json
import re
import secrets
from typing import Any

from aiohttp import web

from .. import keys
from .. import client_ip
from ..errors import BadRequest, Forbidden, Unauthorized
from .mobile import normalize_mobile
from .passwords import MAX_PASSWORD_BYTES
from .sessions import wrong_refresh_token
from .tokens import Claims, InvalidToken, bearer_token

CODE = re.compile(r"\d{6}")
MAX_JSON_BODY = 16 * 1024


def reply(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def request_ip(request: web.Request) -> str:
    return client_ip.request_ip(request, request.app[keys.CONFIG].server.trusted_proxies)


async def send_code(request: web.Request) -> web.Response:
    mobile = normalize_mobile(request.match_info["mobile"])
    if mobile is None:
        raise BadRequest("mobile is not a valid mobile number.")
    app = request.app
    await app[keys.RATE_LIMITS].sms(request_ip(request), mobile)
    code = f"{secrets.randbelow(1_000_000):06d}"
    await app[keys.CODES].put(mobile, code, app[keys.CONFIG].sms.code_ttl)
    await app[keys.SMS].send(mobile, code)
    return reply({"mobile": mobile})


async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    logins, ip = request.app[keys.LOGINS], request_ip(request)
    if "password" in body:
        password = text_field(body, "password", MAX_PASSWORD_BYTES)
        user = await logins.with_password(ip, login_subject(body), password)
    else:
        mobile = mobile_field(body)
        code = body.get("code")
        if code is None:
            raise BadRequest("code is required.")
        if not isinstance(code, str) or not CODE.fullmatch(code):
            raise BadRequest("code must be 6 digits.")
        user = await logins.with_code(ip, mobile, code)
    pair = request.app[keys.TOKENS].issue_pair(user.user_id)
    return reply({"token": pair.token, "refresh_token": pair.refresh_token}, status=201)


async def refresh(request: web.Request) -> web.Response:
    app = request.app
    claims = _claims_or(request, wrong_refresh_token)
    if not claims.refresh or app[keys.AUTHENTICATOR].revoked(claims):
        raise wrong_refresh_token()
    user = await app[keys.USERS].get_by_id(claims.user_id)
    if user is None or not user.enabled:
        raise Forbidden("User denied.")
    await app[keys.RATE_LIMITS].refresh(request_ip(request), claims.user_id)
    return reply(await app[keys.SESSIONS].refresh(claims), status=201)


async def logout(request: web.Request) -> web.Response:
    """Ends the session of the refresh or access token presented; ending an ended one is not an error."""
    claims = _claims_or(request, _must_authorize)
    await request.app[keys.SESSIONS].end(claims)
    return web.Response(status=204)


async def jwks(request: web.Request) -> web.Response:
    config = request.app[keys.CONFIG].jwt
    keyset = [dict(key.public_jwk) for key in config.keys if key.public_jwk is not None]
    response = reply({"keys": keyset})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def _must_authorize() -> Unauthorized:
    return Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="toutiao-gateway"'})


def _claims_or(request: web.Request, error: Any) -> Claims:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise error()
    try:
        return request.app[keys.TOKENS].verify(token)
    except InvalidToken:
        raise error() from None


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise BadRequest("Request body is too large.")
    raw = await request.content.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise BadRequest("Request body is too large.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest("Request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
    return body


def mobile_field(body: dict[str, Any]) -> str:
    value = body.get("mobile")
    if value is None:
        raise BadRequest("mobile is required.")
    mobile = normalize_mobile(value) if isinstance(value, str) else None
    if mobile is None:
        raise BadRequest("mobile must be a valid mobile number.")
    return mobile


def text_field(body: dict[str, Any], name: str, max_bytes: int) -> str:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"{name} is required.")
    if not isinstance(value, str) or not value or len(value.encode()) > max_bytes:
        raise BadRequest(f"{name} must be a non-empty string of at most {max_bytes} bytes.")
    return value


def login_subject(body: dict[str, Any]) -> str:
    """What a password login names: a normalized mobile, or `account:<name>`."""
    if ("account" in body) == ("mobile" in body):
        raise BadRequest("Give either account or mobile with password.")
    if "mobile" in body:
        return mobile_field(body)
    return "account:" + text_field(body, "account", 64)
