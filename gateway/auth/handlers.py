"""The endpoints the gateway serves itself: SMS code, login, refresh."""
from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any

from aiohttp import web

from .. import keys
from ..errors import BadRequest, Forbidden
from .tokens import InvalidToken, bearer_token

MOBILE = re.compile(r"1[3-9]\d{9}")
CODE = re.compile(r"\d{6}")
MAX_JSON_BODY = 16 * 1024


def reply(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def send_code(request: web.Request) -> web.Response:
    mobile = request.match_info["mobile"]
    if not MOBILE.fullmatch(mobile):
        raise BadRequest("mobile is not a valid mobile number.")
    app = request.app
    code = f"{secrets.randbelow(1_000_000):06d}"
    await app[keys.CODES].put(mobile, code, app[keys.CONFIG].sms.code_ttl)
    await app[keys.SMS].send(mobile, code)
    return reply({"mobile": mobile})


async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    mobile = field(body, "mobile", MOBILE, "a valid mobile number")
    code = field(body, "code", CODE, "6 digits")
    app = request.app
    real_code = await app[keys.CODES].take(mobile)
    if real_code is None or not hmac.compare_digest(real_code.encode(), code.encode()):
        raise BadRequest("Invalid code.")
    users = app[keys.USERS]
    user = await users.get_by_mobile(mobile)
    if user is None:
        user = await users.register(app[keys.IDS].next_id(), mobile)
    elif not user.enabled:
        raise Forbidden("Invalid user.")
    else:
        await users.touch_login(user.user_id)
    pair = app[keys.TOKENS].issue_pair(user.user_id)
    return reply({"token": pair.token, "refresh_token": pair.refresh_token}, status=201)


async def refresh(request: web.Request) -> web.Response:
    tokens = request.app[keys.TOKENS]
    token = bearer_token(request.headers.get("Authorization"))
    try:
        if token is None:
            raise InvalidToken("no Bearer token")
        claims = tokens.verify(token)
    except InvalidToken:
        raise Forbidden("Wrong refresh token.") from None
    if not claims.refresh:
        raise Forbidden("Wrong refresh token.")
    user = await request.app[keys.USERS].get_by_id(claims.user_id)
    if user is None or not user.enabled:
        raise Forbidden("User denied.")
    return reply({"token": tokens.issue(user.user_id, refresh=False)}, status=201)


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise BadRequest("Request body is too large.")
    raw = await request.content.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise BadRequest("Request body is too large.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
    return body


def field(body: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"{name} is required.")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadRequest(f"{name} must be {what}.")
    return value
