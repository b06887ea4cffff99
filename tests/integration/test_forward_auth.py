"""Forward-auth mode, asked directly and through a real nginx `auth_request`."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.factories import bearer, make_config, make_token
from tests.servers import free_port, nginx_private_files, require_binary, wait_for_port
from upstream_stub.app import RECEIVED

USER = 4242


pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


@pytest.fixture
async def gateway(make_gateway: Any, upstream: TestServer) -> TestClient:
    config = make_config(str(upstream.make_url("")).rstrip("/"), server={"trusted_proxies": ["127.0.0.1"]})
    client = await make_gateway(config)
    await client.server.gateway.users.register(USER, "13900004242")
    return client


def ask(uri: str, method: str = "GET", token: str | None = None, style: str = "traefik") -> dict[str, str]:
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri} if style == "traefik" else {
        "X-Original-URI": uri}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@pytest.mark.parametrize("style", ["traefik", "nginx"])
async def test_forward_auth_answers(gateway: TestClient, upstream: TestServer, style: str) -> None:
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/user/profile", token=make_token(USER), style=style))
    assert resp.status == 200 and resp.headers["X-User-Id"] == str(USER)
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/user/profile", style=style))
    assert resp.status == 401 and await resp.json() == {"message": "User must be authorized."}
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/user/profile", token=make_token(USER, refresh=True),
                                                           style=style))
    assert resp.status == 403 and await resp.json() == {"message": "Do not use refresh token."}
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/channels", style=style))
    assert resp.status == 200 and "X-User-Id" not in resp.headers
    assert upstream.app[RECEIVED] == []  # forward-auth never proxies


async def test_forward_auth_uses_the_forwarded_method(gateway: TestClient) -> None:
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/user/channels", "GET"))
    assert resp.status == 200
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/user/channels", "PUT"))
    assert resp.status == 401


async def test_forward_auth_envoy_style_path_prefix(gateway: TestClient) -> None:
    resp = await gateway.post("/_gateway/auth/v1_0/user/channels/3", headers=bearer(make_token(USER)))
    assert resp.status == 200 and resp.headers["X-User-Id"] == str(USER)
    resp = await gateway.post("/_gateway/auth/v1_0/user/channels/3")
    assert resp.status == 401


async def test_forward_auth_normalizes_the_uri(gateway: TestClient) -> None:
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/channels/../user/profile"))
    assert resp.status == 401
    resp = await gateway.get("/_gateway/auth", headers=ask("/v1_0/channels%2F..%2Fuser"))
    assert resp.status == 400


async def test_forward_auth_is_for_trusted_proxies_only(make_gateway: Any) -> None:
    client = await make_gateway()  # no trusted_proxies
    resp = await client.get("/_gateway/auth", headers=ask("/v1_0/channels"))
    assert resp.status == 403 and await resp.json() == {"message": "Forward-auth answers trusted proxies only."}


# After tests.servers.nginx_private_files: the http block it opens.
NGINX_SERVER = """
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_gateway_auth;
      auth_request_set $user_id $upstream_http_x_user_id;
      proxy_set_header X-User-Id $user_id;
      proxy_pass http://127.0.0.1:{upstream_port};
    }}
    location = /_gateway_auth {{
      internal;
      proxy_pass http://127.0.0.1:{gateway_port}/_gateway/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Method $request_method;
    }}
  }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path, gateway: TestClient, upstream: TestServer) -> Any:
    binary = require_binary("nginx", "nginx-light")
    port = free_port()
    (tmp_path / "nginx").mkdir()
    conf = tmp_path / "nginx" / "nginx.conf"
    conf.write_text(nginx_private_files(tmp_path / "nginx") + NGINX_SERVER.format(
        port=port, gateway_port=gateway.server.port, upstream_port=upstream.port))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp_path / "nginx"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_nginx_auth_request_end_to_end(nginx: str, upstream: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{nginx}/v1_0/user/profile", headers=bearer(make_token(USER))) as resp:
            assert resp.status == 200 and (await resp.json())["user_id"] == str(USER)
        async with session.get(f"{nginx}/v1_0/user/profile") as resp:
            assert resp.status == 401
        async with session.get(f"{nginx}/v1_0/user/profile", headers=bearer(make_token(USER, refresh=True))) as resp:
            assert resp.status == 403
        async with session.get(f"{nginx}/v1_0/articles", headers={"X-User-Id": "1"}) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["personalised"] is False  # the client's X-User-Id was replaced
    assert [path for _, path in upstream.app[RECEIVED]] == ["/v1_0/user/profile", "/v1_0/articles"]
