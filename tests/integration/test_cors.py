"""CORS through a real listening gateway: preflights answered before authentication and never forwarded,
Access-Control-Allow-Origin on every answer to an allowed origin (errors included), none for the others."""
from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.config import ConfigError, parse_config
from tests.factories import MOBILE, bearer, config_dict, make_token
from upstream_stub.app import RECEIVED

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
ADMIN_APP = "https://admin.example.com"
CORS = {"allow_origins": [APP, ADMIN_APP]}


def routes_with_cors() -> list[dict[str, Any]]:
    return [
        {"path": "/v1_0/articles", "upstream": "news", "auth": "optional"},
        {"path": "/limited", "upstream": "news", "auth": "public", "limits": [{"rate": "1/minute", "key": "ip"}]},
        {"path": "/admin-only", "upstream": "news", "auth": "required", "cors": {"allow_origins": [ADMIN_APP]}},
        {"path": "/_stub/cors", "upstream": "news", "auth": "public", "cors": False},
        {"path": "/_stub", "upstream": "news", "auth": "public"},
        {"path": "/", "upstream": "news", "auth": "required"},
    ]


@pytest.fixture
async def client(make_gateway: Any) -> Any:
    return await make_gateway(cors=CORS, routes=routes_with_cors())


def preflight(method: str = "GET", origin: str = APP, headers: str | None = "authorization") -> dict[str, str]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    return asked


def aca(resp: Any) -> dict[str, str]:
    return {name: value for name, value in resp.headers.items() if name.lower().startswith("access-control-")}


async def test_a_preflight_from_an_allowed_origin_is_answered_here(client: Any, upstream: TestServer) -> None:
    resp = await client.options("/v1_0/user/profile", headers=preflight("DELETE", headers="Authorization, Content-Type"))
    assert resp.status == 204 and await resp.read() == b""
    assert aca(resp) == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
    }
    assert resp.headers["Vary"] == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert upstream.app[RECEIVED] == []  # before authentication, never forwarded


@pytest.mark.parametrize("asked, reason", [
    (preflight(origin=OTHER), "origin"),
    (preflight(origin="null"), "origin"),
    (preflight(origin=APP + ":8443"), "origin"),  # another port is another origin
    (preflight("TRACE"), "method"),
    (preflight(headers="authorization, x-user-id"), "header"),
])
async def test_a_preflight_that_is_not_allowed_gets_403_and_no_cors_fields(client: Any, upstream: TestServer,
                                                                          asked: dict[str, str], reason: str) -> None:
    resp = await client.options("/v1_0/user/profile", headers=asked)
    assert resp.status == 403 and reason in (await resp.json())["message"]
    assert aca(resp) == {}
    assert upstream.app[RECEIVED] == []


async def test_gateway_errors_and_upstream_answers_carry_the_origin(client: Any, upstream: TestServer) -> None:
    resp = await client.get("/v1_0/user/profile", headers={"Origin": APP})
    assert resp.status == 401 and await resp.json() == {"message": "User must be authorized."}
    assert aca(resp) == {"Access-Control-Allow-Origin": APP, "Access-Control-Expose-Headers": "X-Request-Id"}
    assert resp.headers["Vary"] == "Origin"
    resp = await client.get("/v1_0/user/channels", headers={"Origin": APP, **bearer(make_token(1, refresh=True))})
    assert resp.status == 403 and aca(resp)["Access-Control-Allow-Origin"] == APP
    for expected in (404, 429):  # the stub has no /limited; the second is the gateway's 429
        resp = await client.get("/limited", headers={"Origin": APP})
        assert resp.status == expected and aca(resp)["Access-Control-Allow-Origin"] == APP
    resp = await client.get("/v1_0/articles", headers={"Origin": APP})
    assert resp.status == 200 and aca(resp)["Access-Control-Allow-Origin"] == APP
    assert "X-Request-Id" in resp.headers  # exposed, so the page can quote it
    resp = await client.get("/_stub/nothing-here", headers={"Origin": APP})  # the upstream's own 404
    assert resp.status == 404 and aca(resp)["Access-Control-Allow-Origin"] == APP


async def test_an_origin_not_allowed_gets_the_answer_without_cors_fields(client: Any) -> None:
    resp = await client.get("/v1_0/user/profile", headers={"Origin": OTHER})
    assert resp.status == 401 and aca(resp) == {} and resp.headers["Vary"] == "Origin"
    resp = await client.get("/v1_0/articles", headers={"Origin": OTHER})
    assert resp.status == 200 and aca(resp) == {}
    resp = await client.get("/v1_0/articles")  # no Origin: nothing for CORS, but a cache must know it matters
    assert resp.status == 200 and aca(resp) == {} and resp.headers["Vary"] == "Origin"


async def test_the_gateways_own_endpoints_follow_the_top_level_policy(client: Any, sms_codes: Any) -> None:
    resp = await client.options("/v1_0/authorizations", headers=preflight("POST", headers="content-type"))
    assert resp.status == 204 and aca(resp)["Access-Control-Allow-Origin"] == APP
    resp = await client.get(f"/v1_0/sms/codes/{MOBILE}", headers={"Origin": APP})
    assert resp.status == 200 and aca(resp)["Access-Control-Allow-Origin"] == APP
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)},
                             headers={"Origin": APP})
    assert resp.status == 201 and aca(resp)["Access-Control-Allow-Origin"] == APP
    tokens = await resp.json()
    resp = await client.put("/v1_0/authorizations", headers={"Origin": APP, **bearer(tokens["token"])})
    assert resp.status == 403 and aca(resp)["Access-Control-Allow-Origin"] == APP  # readable: back to login


async def test_a_route_narrows_the_policy_or_turns_it_off(client: Any, upstream: TestServer) -> None:
    resp = await client.options("/admin-only", headers=preflight(origin=APP))
    assert resp.status == 403 and aca(resp) == {}
    resp = await client.options("/admin-only", headers=preflight(origin=ADMIN_APP))
    assert resp.status == 204 and aca(resp)["Access-Control-Allow-Origin"] == ADMIN_APP
    resp = await client.get("/admin-only", headers={"Origin": APP})
    assert resp.status == 401 and aca(resp) == {}
    # CORS off: it is the upstream's. Its own fields pass through, and a preflight is a request like any other
    upstream_fields = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
                       "Access-Control-Expose-Headers": "X-Upstream-Secret"}
    resp = await client.get("/_stub/cors", headers={"Origin": OTHER})
    assert resp.status == 200 and aca(resp) == upstream_fields and "Vary" not in resp.headers
    resp = await client.options("/_stub/cors", headers=preflight(origin=APP))
    assert resp.status == 200 and aca(resp) == upstream_fields
    assert upstream.app[RECEIVED] == [("GET", "/_stub/cors"), ("OPTIONS", "/_stub/cors")]


async def test_the_upstreams_own_cors_fields_are_replaced_where_the_gateway_answers_cors(
        make_gateway: Any) -> None:
    client = await make_gateway(cors=CORS, routes=[{"path": "/_stub", "upstream": "news", "auth": "public"}])
    resp = await client.get("/_stub/cors", headers={"Origin": APP})
    assert resp.status == 200 and await resp.json() == {"cors": "upstream"}
    assert aca(resp) == {"Access-Control-Allow-Origin": APP, "Access-Control-Expose-Headers": "X-Request-Id"}
    resp = await client.get("/_stub/cors", headers={"Origin": OTHER})
    assert aca(resp) == {}  # not the upstream's "*" with credentials


async def test_any_origin_and_credentials(make_gateway: Any) -> None:
    client = await make_gateway(cors={"allow_origins": ["*"], "max_age": 60, "expose_headers": []})
    resp = await client.options("/v1_0/articles", headers=preflight(origin=OTHER))
    assert resp.status == 204 and aca(resp)["Access-Control-Allow-Origin"] == "*"
    assert aca(resp)["Access-Control-Max-Age"] == "60"
    resp = await client.get("/v1_0/articles", headers={"Origin": OTHER})
    assert aca(resp) == {"Access-Control-Allow-Origin": "*"} and "Vary" not in resp.headers
    resp = await client.get("/v1_0/articles")  # the same answer without Origin: a cache may share it
    assert aca(resp) == {"Access-Control-Allow-Origin": "*"} and "Vary" not in resp.headers
    client = await make_gateway(cors={"allow_origins": [APP], "allow_credentials": True})
    resp = await client.get("/v1_0/articles", headers={"Origin": APP})
    assert aca(resp)["Access-Control-Allow-Credentials"] == "true"


async def test_without_cors_a_preflight_is_a_request_like_any_other(gateway: Any, upstream: TestServer) -> None:
    resp = await gateway.options("/v1_0/user/profile", headers=preflight())
    assert resp.status == 401 and aca(resp) == {}  # the route's auth, as before CORS existed
    resp = await gateway.options("/v1_0/echo/public", headers=preflight())
    assert resp.status == 200 and aca(resp) == {}  # forwarded


async def test_forward_auth_is_left_to_the_proxy_in_front(client: Any, upstream: TestServer) -> None:
    """The check request is the proxy's, not a browser's: CORS does not answer it (an Envoy passing a
    browser's preflight through ext_authz must not read a 204 as "allowed")."""
    resp = await client.options("/_gateway/auth/v1_0/user/profile", headers=preflight())
    assert resp.status == 403 and await resp.json() == {"message": "Forward-auth answers trusted proxies only."}
    assert aca(resp) == {} and "Vary" not in resp.headers


async def test_an_options_request_that_is_no_preflight_is_routed(client: Any) -> None:
    resp = await client.options("/v1_0/user/profile", headers={"Origin": APP})  # no Access-Control-Request-Method
    assert resp.status == 401 and aca(resp)["Access-Control-Allow-Origin"] == APP


@pytest.mark.parametrize("cors, routes, problems", [
    ({"allow_origins": ["*"], "allow_credentials": True}, None,
     {'cors.allow_origins: "*" is refused with allow_credentials: name the origins (browsers refuse credentials '
      'for any origin)'}),
    ({"allow_methods": ["GET"]}, None,
     {"cors.allow_origins: is required: the origins whose pages may call the gateway"}),
    ({"allow_origins": ["app.example.com", "https://ok.example.com/"], "bogus": 1}, None,
     {"cors.bogus: unknown key",
      "cors.allow_origins[0]: must be an origin such as https://app.example.com, or \"*\"; got 'app.example.com'"}),
    (CORS, [{"path": "/", "upstream": "news", "cors": {"allow_origins": [OTHER], "allow_methods": ["GET", "TRACE"]}}],
     {f"routes[0].cors.allow_origins: may only narrow the top-level list; not there: {OTHER}",
      "routes[0].cors.allow_methods: may only narrow the top-level list"}),
    (None, [{"path": "/", "upstream": "news", "cors": {"allow_origins": [APP]}}],
     {"routes[0].cors: narrows the top-level cors section, which is missing"}),
    ({"allow_origins": ["https://app.example.com:443", "http://x.example.com:80"], "allow_methods": ["*"]}, None,
     {"cors.allow_origins[0]: names its scheme's default port, which browsers leave out of Origin: "
      "https://app.example.com",
      "cors.allow_origins[1]: names its scheme's default port, which browsers leave out of Origin: "
      "http://x.example.com",
      "cors.allow_methods[0]: must be a method or field name (no wildcard), got '*'"}),
    (CORS, [{"path": "/", "upstream": "news", "cors": {"expose_headers": ["X-Request-Id", "X-Secret"],
                                                       "max_age": 3600}}],
     {"routes[0].cors.expose_headers: may only narrow the top-level list",
      "routes[0].cors.max_age: may only narrow the top level's (600)"}),
])
def test_a_bad_cors_section_is_refused_with_every_problem(cors: Any, routes: Any, problems: set[str]) -> None:
    raw = config_dict()
    if cors is not None:
        raw["cors"] = cors
    if routes is not None:
        raw["routes"] = routes
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    assert set(caught.value.problems) == problems
