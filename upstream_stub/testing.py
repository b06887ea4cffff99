"""Endpoints under /_stub/ that let tests observe how the gateway forwards.

Gated streams prove bodies are streamed: the stub holds the rest of a body
until the test has seen the first part pass through the gateway.
"""
from __future__ import annotations

import asyncio
import gzip

import aiohttp
from aiohttp import web

DOWNLOAD_GATE = web.AppKey("download_gate", asyncio.Event)
HEALTHY = web.AppKey("healthy", list)
WS_CLOSE_CODES = web.AppKey("ws_close_codes", list)  # the close codes clients sent the WebSocket echo  # [True] or [False]: what /_stub/health answers
UPLOAD_FIRST_CHUNK = web.AppKey("upload_first_chunk", asyncio.Event)
GZIP_BODY = gzip.compress(b"compressed news " * 100)


async def gated_download(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    await response.write(b"first-part;")
    await request.app[DOWNLOAD_GATE].wait()
    await response.write(b"second-part")
    await response.write_eof()
    return response


async def gated_upload(request: web.Request) -> web.Response:
    first = await request.content.readany()
    request.app[UPLOAD_FIRST_CHUNK].set()
    rest = await request.content.read()
    return web.json_response({"first": len(first), "total": len(first) + len(rest)})


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/v1_0/channels")


async def compressed(request: web.Request) -> web.Response:
    return web.Response(body=GZIP_BODY, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "2")))
    return web.json_response({"slow": True})


async def cookies(request: web.Request) -> web.Response:
    response = web.json_response({"cookie": request.headers.get("Cookie")})
    response.set_cookie("session", "stub-session")
    response.set_cookie("theme", "dark")
    return response


async def own_cors(request: web.Request) -> web.Response:
    """A service that answers CORS itself (any origin, with credentials): what a gateway in front must not
    let through as it is."""
    return web.json_response({"cors": "upstream"}, headers={
        "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Upstream-Secret"})


async def health(request: web.Request) -> web.Response:
    if request.app[HEALTHY][0]:
        return web.json_response({"healthy": True})
    return web.json_response({"healthy": False}, status=503)


async def slow_body(request: web.Request) -> web.StreamResponse:
    """Headers at once, then one chunk every `interval` seconds, `chunks` times."""
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(int(request.query.get("chunks", "5"))):
        await response.write(b"x" * 10)
        await asyncio.sleep(float(request.query.get("interval", "0.5")))
    await response.write_eof()
    return response


async def websocket_echo(request: web.Request) -> web.StreamResponse:
    """Says who it sees, then echoes; "close:<code>" closes with that code."""
    if request.query.get("refuse"):
        return web.json_response({"message": "no websockets here"}, status=403)
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    await ws.send_json({"user_id": request.headers.get("X-User-Id"), "protocol": ws.ws_protocol})
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT and message.data.startswith("close:"):
            await ws.close(code=int(message.data[len("close:"):]))
        elif message.type == aiohttp.WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.CLOSE:
            request.app[WS_CLOSE_CODES].append(message.data)
            break
        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            break
    return ws


async def many_bytes(request: web.Request) -> web.StreamResponse:
    """`n` bytes, streamed in 256 KiB chunks, with a Content-Length."""
    remaining = int(request.query.get("n", "0"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = remaining
    await response.prepare(request)
    chunk = b"\0" * 262144
    while remaining > 0:
        await response.write(chunk[:remaining])
        remaining -= len(chunk)
    await response.write_eof()
    return response


def add_test_routes(app: web.Application) -> None:
    app[DOWNLOAD_GATE] = asyncio.Event()
    app[UPLOAD_FIRST_CHUNK] = asyncio.Event()
    app.router.add_get("/_stub/download", gated_download)
    app.router.add_post("/_stub/upload", gated_upload)
    app.router.add_get("/_stub/redirect", redirect)
    app.router.add_get("/_stub/gzip", compressed)
    app.router.add_get("/_stub/slow", slow)
    app.router.add_get("/_stub/cookies", cookies)
    app.router.add_route("*", "/_stub/cors", own_cors)
    app[HEALTHY] = [True]
    app.router.add_get("/_stub/health", health)
    app.router.add_get("/_stub/slow-body", slow_body)
    app.router.add_get("/v1_0/ws/echo", websocket_echo)
    app.router.add_get("/_stub/bytes", many_bytes)
    app[WS_CLOSE_CODES] = []
