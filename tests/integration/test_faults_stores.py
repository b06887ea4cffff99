"""Real Redis, Sentinel, Redis Cluster and MariaDB going away and coming back, while gateways serve.

What a client sees while a store is down: 503 `Service unavailable.` (JSON) for what needs it, never a 500;
what needs no store goes on. When the store is back everything works again by itself, with no restart.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from redis.cluster import key_slot

from gateway.auth.passwords import Passwords
from gateway.config import parse_config
from gateway.stores.codes import code_key
from tests.factories import MOBILE, Heard, bearer, config_dict, make_config, make_token, payload_of
from tests.servers import GatewayServer, MariaDBProcess, RedisClusterProcesses, RedisProcess, SentinelProcess

pytestmark = pytest.mark.stores("embedded")  # each test makes the stores it breaks

UNAVAILABLE = {"message": "Service unavailable."}


async def wait_for_key(url: str, key: str) -> None:
    client = aioredis.from_url(url)
    try:
        for _ in range(200):
            if await client.get(key) is not None:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{key} never reached {url}")
    finally:
        await client.aclose()


async def answer(resp: Any) -> tuple[int, Any]:
    """The status and the JSON body (None when there is none); a gateway's own answer is always JSON."""
    body = await resp.read()
    return resp.status, (await resp.json() if body else None)


async def sms_login(client: TestClient, sms_codes: Callable[[str], str], mobile: str = MOBILE) -> tuple[int, Any]:
    resp = await client.get(f"/v1_0/sms/codes/{mobile}")
    if resp.status != 200:
        return await answer(resp)
    return await answer(await client.post("/v1_0/authorizations", json={"mobile": mobile, "code": sms_codes(mobile)}))


async def eventually(call: Callable[[], Awaitable[tuple[int, Any]]], expected: int, within: float
                     ) -> tuple[int, Any]:
    """Call until the status is `expected` (at most `within` seconds); the last answer."""
    deadline = time.monotonic() + within
    got = await call()
    while got[0] != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        got = await call()
    return got


def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> None:
    """A store going away is logged as an ERROR by the store (an operator must hear of it); what may never
    appear is an error the gateway did not handle (a 500 with its traceback)."""
    unhandled = [r.getMessage() for r in caplog.records if r.exc_info or "unhandled" in r.getMessage()]
    assert not unhandled, unhandled


def profile(client: TestClient, token: str) -> Callable[[], Awaitable[tuple[int, Any]]]:
    async def call() -> tuple[int, Any]:
        return await answer(await client.get("/v1_0/user/profile", headers=bearer(token)))
    return call


async def refresh(client: TestClient, token: str) -> tuple[int, Any]:
    return await answer(await client.put("/v1_0/authorizations", headers=bearer(token)))


async def logout(client: TestClient, token: str) -> tuple[int, Any]:
    return await answer(await client.delete("/v1_0/authorizations", headers=bearer(token)))


async def public_routes_answer(client: TestClient) -> None:
    assert (await client.get("/v1_0/channels")).status == 200  # public
    assert (await client.get("/v1_0/articles")).status == 200  # optional, anonymous


# -- Redis primary stopped: the replica ------------------------------------------------------------------------


async def test_login_reads_the_code_from_the_replica_when_the_primary_refuses(
    make_gateway: Any, upstream: TestServer, redis_pair: Any, tmp_path: Path, sms_codes: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, replica = redis_pair
    config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=primary.url,
                         database_url=f"sqlite:///{tmp_path}/gw.db", redis={"replica_url": replica.url})
    client = await make_gateway(config)
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200
    await wait_for_key(replica.url, f"app:code:{MOBILE}")
    primary.stop()
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)})
    assert resp.status == 201
    user_id = int(payload_of((await resp.json())["token"])["user_id"])
    await client.server.gateway.users.set_password(user_id, Passwords().hash("correct horse battery"))
    # with a replica a password login goes on too, its failures counted by this instance meanwhile
    wrong = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "wrong horse battery"})
    assert wrong.status == 400
    right = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "correct horse battery"})
    assert right.status == 201
    assert any("primary unavailable" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    replica.stop()  # Redis gone entirely: the password login fails closed too
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "correct horse battery"})
    assert await answer(resp) == (503, UNAVAILABLE)


# -- Redis primary stopped: Sentinel fails over ----------------------------------------------------------------


@pytest.fixture
def redis_with_sentinel(tmp_path: Path, redis_pair: tuple[RedisProcess, RedisProcess]) -> Any:
    primary, replica = redis_pair
    sentinel = SentinelProcess(tmp_path / "sentinel", primary.port)
    sentinel.start()
    yield primary, replica, sentinel
    sentinel.stop()


async def test_logins_refreshes_and_proxied_calls_work_again_after_a_sentinel_failover(
        make_gateway: Any, upstream: TestServer, tmp_path: Path, redis_with_sentinel: Any, sms_codes: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    primary, replica, sentinel = redis_with_sentinel
    config = make_config(str(upstream.make_url("")).rstrip("/"), database_url=f"sqlite:///{tmp_path}/gw.db",
                         redis={"sentinel": {"hosts": [f"127.0.0.1:{sentinel.port}"], "service": "mymaster"}})
    client = await make_gateway(config)
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200
    assert sync_redis.Redis(port=primary.port).exists(f"app:code:{MOBILE}") == 1  # Sentinel led us to the primary
    status, before = await sms_login(client, sms_codes)
    assert status == 201
    primary.stop()
    status, after = await eventually(lambda: sms_login(client, sms_codes), 201, within=30)
    assert status == 201, after
    role = sync_redis.Redis(port=replica.port).role()
    assert role[0] in (b"master", "master")  # the replica was promoted, and the gateway followed it
    # the revocation list subscribes again on the new primary: tokens from before and after the failover serve
    for tokens in (before, after):
        status, body = await eventually(profile(client, tokens["token"]), 200, within=10)
        assert (status, body["user_id"]) == (200, str(payload_of(tokens["token"])["user_id"]))
        assert (await refresh(client, tokens["refresh_token"]))[0] == 201
    assert await logout(client, before["token"]) == (204, None)  # written to the new primary
    assert (await profile(client, before["token"])())[0] == 401
    no_unhandled_errors(caplog)


# -- Redis slow: more requests at once than connections ---------------------------------------------------------


@pytest.mark.parametrize("through", ["redis.url", "redis.sentinel"])
async def test_more_requests_at_once_than_redis_connections_wait_for_one(
        make_gateway: Any, upstream: TestServer, tmp_path: Path, redis_with_sentinel: Any, through: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Found by the soak: redis-py's pool refused a command at once when its 100 connections were in use ("Too
    many connections"): a 503 and an ERROR line for a burst of requests while Redis was well. CLIENT PAUSE holds
    every command for a second, so 150 code requests at once need 150 connections: they wait for one."""
    primary, _, sentinel = redis_with_sentinel
    redis: dict[str, Any] = ({"url": primary.url} if through == "redis.url" else
                             {"sentinel": {"hosts": [f"127.0.0.1:{sentinel.port}"], "service": "mymaster"}})
    client = await make_gateway(make_config(str(upstream.make_url("")).rstrip("/"), redis=redis,
                                            database_url=f"sqlite:///{tmp_path}/gw.db"))
    caplog.set_level(logging.WARNING)
    url = str(client.make_url("/v1_0/sms/codes/"))
    admin = sync_redis.Redis(port=primary.port)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def status(mobile: str) -> int:
            async with session.get(url + mobile) as resp:
                await resp.read()
                return resp.status

        admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        try:
            statuses = await asyncio.gather(*(status(f"139{i:08d}") for i in range(150)))
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
    assert statuses == [200] * 150
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- Redis gone entirely ---------------------------------------------------------------------------------------


async def test_redis_down_fails_closed_with_503(make_gateway: Any, redis_server: RedisProcess,
                                                real_redis_url: str, tmp_path: Path, upstream: TestServer) -> None:
    config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=real_redis_url,
                         database_url=f"sqlite:///{tmp_path}/gw.db")
    client = await make_gateway(config)
    redis_server.stop()
    try:
        resp = await client.get(f"/v1_0/sms/codes/{MOBILE}")
        assert resp.status == 503 and await resp.json() == UNAVAILABLE
        resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": "123456"})
        assert resp.status == 503 and await resp.json() == UNAVAILABLE
    finally:
        redis_server.start()
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200  # and it recovers


async def until_fresh(fresh: bool, *clients: TestClient, within: float = 10) -> None:
    """Until every instance's revocation list is in sync (`fresh`), or knows that it may be stale."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(c.server.gateway.authenticator.revocations.fresh == fresh for c in clients):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the revocation lists did not become {'fresh' if fresh else 'stale'}")


@pytest.mark.parametrize("on_redis_down, proxied", [
    pytest.param("reject", 503, id="reject-fail-closed-OWASP-A07"),
    pytest.param("allow", 200, id="allow-fail-open-by-choice"),
])
async def test_redis_gone_and_back(aiohttp_client: Any, upstream: TestServer, tmp_path: Path, sms_codes: Any,
                                   on_redis_down: str, proxied: int, caplog: pytest.LogCaptureFixture) -> None:
    """Two instances on one Redis. While it is gone: the SMS code, the login, the refresh and the logout are
    503, whatever on_redis_down says (a refresh mints tokens; a logout that is not stored would be a lie);
    proxied calls with a token follow on_redis_down; public and anonymous calls are served. When Redis is back
    (empty: it keeps nothing on disk here), all of it works again without a restart, and a logout at one
    instance reaches the other."""
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=redis.url,
                             database_url=f"sqlite:///{tmp_path}/gw.db", revocation={"on_redis_down": on_redis_down})
        one, two = [await aiohttp_client(GatewayServer(config)) for _ in range(2)]
        status, tokens = await sms_login(one, sms_codes)
        assert status == 201
        user_id = payload_of(tokens["token"])["user_id"]
        await one.server.gateway.users.set_password(user_id, Passwords().hash("correct horse battery"))
        for client in (one, two):
            assert (await profile(client, tokens["token"])())[0] == 200  # the user's status is now cached

        redis.stop()
        await until_fresh(False, one, two)
        for client in (one, two):
            assert await answer(await client.get(f"/v1_0/sms/codes/{MOBILE}")) == (503, UNAVAILABLE)
            assert await answer(await client.post("/v1_0/authorizations",
                                                  json={"mobile": MOBILE, "code": "123456"})) == (503, UNAVAILABLE)
            assert await refresh(client, tokens["refresh_token"]) == (503, UNAVAILABLE)
            assert await logout(client, tokens["token"]) == (503, UNAVAILABLE)
            status, body = await profile(client, tokens["token"])()
            assert status == proxied and (body == UNAVAILABLE) == (proxied == 503)
            await public_routes_answer(client)
        # a password login fails closed too: with no Redis its failures could be counted per instance only
        resp = await one.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "correct horse battery"})
        assert await answer(resp) == (503, UNAVAILABLE)

        redis.start()
        status, fresh = await eventually(lambda: sms_login(one, sms_codes), 201, within=15)
        assert status == 201, fresh
        await until_fresh(True, one, two)  # subscribed again and the list reloaded (a refresh is 503 until then)
        for client in (one, two):
            for token in (tokens["token"], fresh["token"]):
                assert (await eventually(profile(client, token), 200, within=10))[0] == 200
            assert (await refresh(client, fresh["refresh_token"]))[0] == 201
        assert await logout(one, fresh["token"]) == (204, None)
        status, body = await eventually(profile(two, fresh["token"]), 401, within=5)  # heard through pub/sub
        assert (status, body) == (401, {"message": "User must be authorized."})
        assert await refresh(two, fresh["refresh_token"]) == (403, {"message": "Wrong refresh token."})
        assert (await profile(two, tokens["token"])())[0] == 200  # the other session lives on
    finally:
        redis.stop()
    no_unhandled_errors(caplog)
    secrets = ["correct horse battery", *(t.split(".")[2] for t in (*tokens.values(), *fresh.values()))]
    assert not [secret for secret in secrets if secret in caplog.text]  # no password or token signature logged


async def test_route_limits_hold_per_instance_while_redis_is_down(make_gateway: Any, upstream: TestServer,
                                                                  tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        routes = [{"path": "/v1_0/channels", "upstream": "news", "auth": "public",
                   "limits": [{"rate": "3/minute", "key": "ip"}]}]
        client = await make_gateway(make_config(str(upstream.make_url("")).rstrip("/"), redis_url=redis.url,
                                                database_url=f"sqlite:///{tmp_path}/gw.db", routes=routes))
        assert (await client.get("/v1_0/channels")).status == 200
        redis.stop()
        statuses = [(await client.get("/v1_0/channels")).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # this instance's own window, not no limit at all
    finally:
        redis.stop()


async def test_a_revocation_list_loaded_from_redis_tells_listeners_to_forget_every_status(
        real_redis_url: str) -> None:
    """What was cached about users may be older than the list just loaded (after a lost subscription)."""
    from gateway.stores.revocation import RedisRevocations

    listener = Heard()
    heard = listener.heard

    client = aioredis.from_url(real_redis_url, decode_responses=True)
    await client.publish("gw:events", "status:nope")  # nobody listens yet
    revocations = RedisRevocations(client, 3600)
    revocations.on_status_change(listener)
    listening = asyncio.create_task(revocations.listen())
    try:
        assert await revocations.wait_until_fresh(timeout=5)
        assert heard == ["all"]
        await client.publish("gw:events", "status:nope")  # unreadable: ignored, the subscription lives on
        await client.publish("gw:events", "status:42")
        for _ in range(50):
            if heard[-1] == 42:
                break
            await asyncio.sleep(0.05)
        assert heard == ["all", 42] and revocations.fresh
    finally:
        revocations.stop()
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await client.aclose()


# -- Redis Cluster: a node killed --------------------------------------------------------------------------------


async def test_a_cluster_node_killed_and_started_again(make_gateway: Any, upstream: TestServer, tmp_path: Path,
                                                       sms_codes: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Three primaries and no replicas: with one killed the cluster is down (cluster_state:fail, as
    cluster-require-full-coverage says). Logins are 503, never 500; a proxied call is 200 while this
    instance's revocation subscription lives, else 503. The node started again (its nodes.conf kept) rejoins,
    and logins, refreshes and proxied calls work with no restart of the gateway."""
    cluster = RedisClusterProcesses(tmp_path / "cluster")
    cluster.start()
    try:
        raw = config_dict(str(upstream.make_url("")).rstrip("/"), database_url=f"sqlite:///{tmp_path}/gw.db")
        raw["redis"] = {"cluster": {"nodes": cluster.nodes}}
        client = await make_gateway(parse_config(raw, env={}))
        status, before = await sms_login(client, sms_codes)
        assert status == 201
        victim = cluster.owner(key_slot(code_key(MOBILE).encode()))  # the node that holds this mobile's code
        cluster.procs.pop(victim).kill()

        deadline = time.monotonic() + 6  # past the node timeout (1 s): degraded, then down
        seen: set[tuple[str, int]] = set()
        while time.monotonic() < deadline:
            seen.add(("code", (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status))
            status, body = await answer(await client.post("/v1_0/authorizations",
                                                          json={"mobile": MOBILE, "code": "123456"}))
            assert status != 503 or body == UNAVAILABLE
            seen.add(("login", status))
            status, body = await profile(client, before["token"])()
            assert status == 200 or body == UNAVAILABLE
            seen.add(("proxied", status))
            await public_routes_answer(client)
            await asyncio.sleep(0.2)
        survivor = next(port for port in cluster.ports if port != victim)
        assert "cluster_state:fail" in cluster.command(survivor, "CLUSTER", "INFO")  # down, not just degraded
        assert {status for _, status in seen} <= {200, 503}, seen  # never a 500, nor a 400 for a code not checked
        assert ("code", 503) in seen and ("login", 503) in seen

        cluster.start_node(victim)
        cluster.wait_ok()
        status, after = await eventually(lambda: sms_login(client, sms_codes), 201, within=20)
        assert status == 201, after
        for tokens in (before, after):
            assert (await eventually(profile(client, tokens["token"]), 200, within=10))[0] == 200
            assert (await refresh(client, tokens["refresh_token"]))[0] == 201
        assert await logout(client, after["token"]) == (204, None)
        assert (await profile(client, after["token"])())[0] == 401
    finally:
        cluster.stop()
    no_unhandled_errors(caplog)


# -- the database stopped ----------------------------------------------------------------------------------------


async def test_database_down_fails_closed_and_recovers(make_gateway: Any, mysql_server: MariaDBProcess,
                                                       real_mysql_url: str, upstream: TestServer, sms_codes: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Logins and refreshes need the database: 503. Proxied calls with the tokens of users whose status this
    instance has cached (for revocation.user_status_cache_ttl) go on, as do public ones; a user whose status
    it must look up is 503 (fail closed), never let through unchecked. When the database is back, the pool
    connects again by itself."""
    config = make_config(str(upstream.make_url("")).rstrip("/"), database_url=real_mysql_url)
    client = await make_gateway(config)
    status, tokens = await sms_login(client, sms_codes)
    assert status == 201
    assert (await profile(client, tokens["token"])())[0] == 200  # cached from here on
    unseen = make_token(4242, sid="s-4242")  # valid, but of a user this instance knows nothing about
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    mysql_server.stop()
    try:
        resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)})
        assert await answer(resp) == (503, UNAVAILABLE)
        assert await refresh(client, tokens["refresh_token"]) == (503, UNAVAILABLE)
        for _ in range(5):
            assert (await profile(client, tokens["token"])())[0] == 200
            await public_routes_answer(client)
        assert await profile(client, unseen)() == (503, UNAVAILABLE)
    finally:
        mysql_server.start()
    status, again = await eventually(lambda: sms_login(client, sms_codes), 201, within=20)
    assert status == 201, again  # the pool reconnects once the database is back
    assert (await refresh(client, tokens["refresh_token"]))[0] == 201
    assert await profile(client, unseen)() == (403, {"message": "User denied."})  # looked up now: no such user
    no_unhandled_errors(caplog)
