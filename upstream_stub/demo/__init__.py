"""The demo page (`/demo/`): the browser half of the token scheme, served as a news service would serve it,
through the gateway on a public route. It uses clients/js/toutiao-gateway.js, served beside it."""
from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).parent
CLIENT = HERE.parents[1] / "clients" / "js" / "toutiao-gateway.js"  # the repository's, as published
DEMO_LOG = web.AppKey("demo_log", Path)


async def page(request: web.Request) -> web.StreamResponse:
    if request.path == "/demo":
        raise web.HTTPFound("/demo/")
    return web.FileResponse(HERE / "index.html", headers={"Cache-Control": "no-store"})


async def script(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(HERE / "demo.js", headers={"Content-Type": "text/javascript", "Cache-Control": "no-store"})


async def client(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(CLIENT, headers={"Content-Type": "text/javascript", "Cache-Control": "no-store"})


async def code(request: web.Request) -> web.Response:
    """Demo mode only (`--demo-log`): the code the gateway's development sender wrote to its log."""
    log = request.app.get(DEMO_LOG)
    if log is None:
        return web.json_response({"message": "Codes are shown in demo mode only."}, status=404)
    mobile = request.match_info["mobile"]
    found = re.findall(rf"code for {re.escape(mobile)} is (\d{{6}})", log.read_text(errors="replace"))
    if not found:
        return web.json_response({"message": "No code in the gateway's log yet."}, status=404)
    return web.json_response({"mobile": mobile, "code": found[-1]})


def add_demo_routes(app: web.Application, log: Path | None = None) -> None:
    if log is not None:
        app[DEMO_LOG] = log
    app.router.add_get("/demo", page)
    app.router.add_get("/demo/", page)
    app.router.add_get("/demo/demo.js", script)
    app.router.add_get("/demo/toutiao-gateway.js", client)
    app.router.add_get("/demo/code/{mobile}", code)
