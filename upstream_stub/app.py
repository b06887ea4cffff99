"""upstream_stub: channels, articles, a profile that needs X-User-Id, and an echo."""
from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from pathlib import Path

from .demo import add_demo_routes
from .testing import add_test_routes

# Every request the stub received, as (method, raw path): tests use it to prove
# that a refused request never reached an upstream.
RECEIVED = web.AppKey("received", list)

CHANNELS = [{"id": 0, "name": "推荐"}, {"id": 1, "name": "html"}, {"id": 2, "name": "python"}]
ARTICLES = [
    {"art_id": 1, "channel_id": 1, "title": "HTML5 in practice"},
    {"art_id": 2, "channel_id": 2, "title": "asyncio from the ground up"},
    {"art_id": 3, "channel_id": 2, "title": "JWT refresh tokens"},
]


async def channels(request: web.Request) -> web.Response:
    return web.json_response({"channels": CHANNELS})


async def articles(request: web.Request) -> web.Response:
    channel = request.query.get("channel_id")
    results = [a for a in ARTICLES if channel is None or str(a["channel_id"]) == channel]
    user_id = request.headers.get("X-User-Id")
    return web.json_response({"results": results, "personalised": user_id is not None, "user_id": user_id})


async def profile(request: web.Request) -> web.Response:
    user_id = request.headers.get("X-User-Id")
    if user_id is None:
        return web.json_response({"message": "User must be authorized."}, status=401)
    return web.json_response({"user_id": user_id, "name": f"user {user_id}"})


async def echo(request: web.Request) -> web.Response:
    length = 0
    async for chunk in request.content.iter_any():
        length += len(chunk)
    headers = [[name, value] for name, value in request.headers.items()]
    return web.json_response({
        "method": request.method,
        "path": request.raw_path,
        "headers": headers,
        "body_length": length,
        "tls": _tls(request),
    })


def _tls(request: web.Request) -> dict[str, str | bool | None] | None:
    """Over HTTPS: the TLS version, whether the session was resumed, and the client certificate's name."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
    if ssl_object is None:
        return None
    peer = ssl_object.getpeercert() or {}
    names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
    return {"version": ssl_object.version(), "resumed": ssl_object.session_reused,
            "client_cert": names[0] if names else None}


@web.middleware
async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[RECEIVED].append((request.method, request.raw_path))
    return await handler(request)


def create_app(demo_log: Path | None = None) -> web.Application:
    """`demo_log`: the gateway's log, from which /demo/code/{mobile} reads the development sender's codes."""
    app = web.Application(middlewares=[record])
    app[RECEIVED] = []
    app.router.add_get("/v1_0/channels", channels)
    app.router.add_get("/v1_0/articles", articles)
    app.router.add_get("/v1_0/user/profile", profile)
    app.router.add_route("*", "/v1_0/echo{tail:.*}", echo)
    add_test_routes(app)
    add_demo_routes(app, demo_log)
    return app
