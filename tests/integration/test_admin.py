"""The admin listener, as an operator's Prometheus and Kubernetes see it: /metrics, /healthz, /readyz.

Every gateway here is its own process with real stores; the numbers read
from /metrics are those of requests the test made, counted one by one.
"""
from __future__ import annotations

import asyncio
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import SECRET, make_token
from tests.processes import Running, gateway_raw, users_command
from tests.servers import MariaDBProcess, RedisProcess, free_port, wait_for_port

pytestmark = pytest.mark.stores("embedded")  # each test picks its own stores

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, admin: str) -> Samples:
    async with session.get(f"{admin}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def answer(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.json(content_type=None) if resp.content_type == "application/json" else await resp.read()
        return resp.status, body


def with_admin(raw: dict[str, Any], **admin: Any) -> tuple[dict[str, Any], str]:
    port = free_port()
    raw["admin"] = {"port": port, **admin}
    return raw, f"http://127.0.0.1:{port}"


def code_in(gateway: Running, mobile: str) -> str:
    return re.findall(rf"code for {mobile} is (\d{{6}})", gateway.log.read_text())[-1]


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused."""
    return free_port()


async def test_metrics_count_each_decision_login_limit_and_upstream_outcome(tmp_path: Path, stub: str) -> None:
    raw = gateway_raw(stub, tmp_path)
    raw["upstreams"]["dead"] = {"targets": [f"http://127.0.0.1:{closed_port()}"],
                                "passive": {"consecutive_failures": 1, "cooldown": "60s"}}
    # one target down: the first request sent to it is retried on the other, and ejects it
    raw["upstreams"]["pair"] = {"targets": [f"http://127.0.0.1:{closed_port()}", stub],
                                "passive": {"consecutive_failures": 1, "cooldown": "60s"}}
    raw["upstreams"]["slow"] = {"targets": [stub], "timeouts": {"connect": "2s", "read": "300ms"}}
    raw["routes"] = [
        {"path": "/dead", "upstream": "dead", "auth": "public"},
        {"path": "/v1_0/channels", "upstream": "pair", "auth": "public"},
        {"path": "/_stub/slow", "upstream": "slow", "auth": "public"},
        {"path": "/limited", "upstream": "news", "auth": "public", "limits": [{"rate": "1/minute", "key": "ip"}]},
        {"path": "/v1_0/articles", "upstream": "news", "auth": "optional"},
        {"path": "/", "upstream": "news", "auth": "required"},
    ]
    raw["limits"] = {"sms": [], "login_failures": "2/hour"}
    raw, admin = with_admin(raw)
    gateway = Running(tmp_path, raw)
    mobile, disabled = "13911110000", "13911110001"
    try:
        async with aiohttp.ClientSession() as session:
            url = gateway.url
            # SMS codes: two sent, one refused (not a mobile)
            for number in (mobile, disabled):
                assert (await answer(session, "GET", f"{url}/v1_0/sms/codes/{number}"))[0] == 200
            assert (await answer(session, "GET", f"{url}/v1_0/sms/codes/12"))[0] == 400
            # logins: a wrong code, then the right one; a password login with no password set, twice (then
            # the failures limit is spent)
            assert (await answer(session, "POST", f"{url}/v1_0/authorizations",
                                 json={"mobile": mobile, "code": "000000"}))[0] == 400
            status, pair = await answer(session, "POST", f"{url}/v1_0/authorizations",
                                        json={"mobile": mobile, "code": code_in(gateway, mobile)})
            assert status == 201
            status, other = await answer(session, "POST", f"{url}/v1_0/authorizations",
                                         json={"mobile": disabled, "code": code_in(gateway, disabled)})
            assert status == 201
            for expected in (400, 400, 429):
                assert (await answer(session, "POST", f"{url}/v1_0/authorizations",
                                     json={"account": "nobody", "password": "wrong"}))[0] == expected
            access, refresh = ({"Authorization": f"Bearer {pair[name]}"} for name in ("token", "refresh_token"))
            # refreshes: one ok, one with the access token (refused)
            status, fresh = await answer(session, "PUT", f"{url}/v1_0/authorizations", headers=refresh)
            assert status == 201
            assert (await answer(session, "PUT", f"{url}/v1_0/authorizations", headers=access))[0] == 403
            # auth decisions on proxied requests
            expired = make_token(42, ttl=-10)
            badly_signed = make_token(42, secret=SECRET + "x")
            decisions = [
                ({}, "/v1_0/user/profile", 401),  # missing
                ({"Authorization": "Bearer not-a-token"}, "/v1_0/user/profile", 401),  # malformed
                ({"Authorization": f"Bearer {badly_signed}"}, "/v1_0/user/profile", 401),  # bad_signature
                ({"Authorization": f"Bearer {expired}"}, "/v1_0/user/profile", 401),  # expired
                (refresh, "/v1_0/user/profile", 403),  # refresh_token
                ({"Authorization": f"Bearer {fresh['token']}"}, "/v1_0/user/profile", 200),  # ok
                ({}, "/v1_0/articles", 200),  # anonymous (optional, no token)
            ]
            for headers, path, expected in decisions:
                assert (await answer(session, "GET", f"{url}{path}", headers=headers))[0] == expected, path
            assert (await answer(session, "DELETE", f"{url}/v1_0/authorizations", headers=access))[0] == 204
            assert (await answer(session, "GET", f"{url}/v1_0/user/profile", headers=access))[0] == 401  # revoked
            # another user is disabled: a valid token of theirs is refused (their status was never cached)
            assert users_command(gateway.path, "disable", disabled).returncode == 0
            assert (await answer(session, "GET", f"{url}/v1_0/user/profile",
                                 headers={"Authorization": f"Bearer {other['token']}"}))[0] == 403
            # ...and their next login, with the right code, too
            assert (await answer(session, "GET", f"{url}/v1_0/sms/codes/{disabled}"))[0] == 200
            status, body = await answer(session, "POST", f"{url}/v1_0/authorizations",
                                        json={"mobile": disabled, "code": code_in(gateway, disabled)})
            assert (status, body) == (403, {"message": "Invalid user."})
            # limits, and upstream outcomes
            assert [(await answer(session, "GET", f"{url}/limited"))[0] for _ in range(2)] == [404, 429]
            assert (await answer(session, "GET", f"{url}/dead"))[0] == 502  # refused: its one target is down
            assert (await answer(session, "GET", f"{url}/dead"))[0] == 503  # no_healthy: now ejected
            assert (await answer(session, "GET", f"{url}/_stub/slow?seconds=2"))[0] == 504  # timeout
            pair_statuses = [(await answer(session, "GET", f"{url}/v1_0/channels"))[0] for _ in range(4)]
            assert pair_statuses == [200] * 4
            assert (await answer(session, "GET", f"{url}/nowhere/at/all", headers=access))[0] == 401

            samples = await scrape(session, admin)
            # a reload keeps the counts (the new configuration's targets start healthy: its gauges are new)
            gateway.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "reloaded" not in gateway.log.read_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            reloaded = await scrape(session, admin)
    finally:
        gateway.stop()
    assert {k: v for k, v in reloaded.items() if k[0].endswith(("_total", "_bucket", "_count", "_sum"))} == \
        {k: v for k, v in samples.items() if k[0].endswith(("_total", "_bucket", "_count", "_sum"))}

    def decision(result: str) -> float:
        return value(samples, "gateway_auth_decisions_total", result=result)

    # revoked: the logged-out token, on /v1_0/user/profile and on /nowhere/at/all
    assert {r: decision(r) for r in ("missing", "malformed", "bad_signature", "expired", "refresh_token",
                                     "ok", "revoked", "disabled")} == {
        "missing": 1, "malformed": 1, "bad_signature": 1, "expired": 1, "refresh_token": 1, "ok": 1,
        "revoked": 2, "disabled": 1}
    # anonymous: /v1_0/articles once, /limited twice, /dead twice, /_stub/slow once, /v1_0/channels 4 times
    assert decision("anonymous") == 10
    assert value(samples, "gateway_sms_codes_total", result="ok") == 3
    assert value(samples, "gateway_sms_codes_total", result="invalid") == 1
    assert value(samples, "gateway_logins_total", method="sms", result="invalid") == 1
    assert value(samples, "gateway_logins_total", method="sms", result="ok") == 2
    assert value(samples, "gateway_logins_total", method="sms", result="disabled") == 1
    assert value(samples, "gateway_logins_total", method="password", result="invalid") == 2
    assert value(samples, "gateway_logins_total", method="password", result="limited") == 1
    assert value(samples, "gateway_refreshes_total", result="ok") == 1
    assert value(samples, "gateway_refreshes_total", result="invalid") == 1
    assert value(samples, "gateway_rate_limited_total", limit="route:/limited") == 1
    assert value(samples, "gateway_rate_limited_total", limit="login_failures") == 1
    assert value(samples, "gateway_upstream_requests_total", upstream="dead", outcome="refused") == 1
    assert value(samples, "gateway_upstream_requests_total", upstream="dead", outcome="no_healthy") == 1
    assert value(samples, "gateway_upstream_requests_total", upstream="slow", outcome="timeout") == 1
    # the first request round robin sent to the closed port was retried on the other target, which
    # answered every request
    assert value(samples, "gateway_upstream_requests_total", upstream="pair", outcome="ok") == 4
    assert value(samples, "gateway_upstream_requests_total", upstream="pair", outcome="retried") == 1
    assert value(samples, "gateway_upstream_target_healthy", upstream="pair",
                 target=raw["upstreams"]["pair"]["targets"][0]) == 0
    assert value(samples, "gateway_upstream_target_healthy", upstream="dead",
                 target=raw["upstreams"]["dead"]["targets"][0]) == 0
    assert value(samples, "gateway_upstream_target_healthy", upstream="news", target=stub) == 1
    # requests: labelled by the configured route (never the request's path) and the gateway's own paths
    # missing, malformed, bad_signature, expired and the two revoked
    assert value(samples, "gateway_requests_total", route="/", method="GET", status="401") == 6
    assert value(samples, "gateway_requests_total", route="/v1_0/sms/codes/{mobile}", method="GET",
                 status="200") == 3
    assert value(samples, "gateway_requests_total", route="/v1_0/authorizations", method="POST",
                 status="201") == 2
    assert value(samples, "gateway_requests_total", route="/limited", method="GET", status="429") == 1
    assert not [labels for (name, labels) in samples if name == "gateway_requests_total"
                and ("route", "/nowhere/at/all") in labels]
    assert value(samples, "gateway_request_duration_seconds_count", route="/v1_0/channels") == 4
    assert value(samples, "gateway_request_duration_seconds_bucket", route="/_stub/slow", le="0.1") == 0
    assert value(samples, "gateway_request_duration_seconds_bucket", route="/_stub/slow", le="+Inf") == 1
    assert value(samples, "gateway_revocation_in_sync") == 1
    assert value(samples, "gateway_token_cache_size") >= 1
    assert value(samples, "gateway_build_info", version="0.1.0") == 1
    assert value(samples, "gateway_client_disconnects_total") == 0
    for secret in (pair["token"], pair["refresh_token"], fresh["token"], other["token"]):
        assert secret not in gateway.log.read_text()


async def test_admin_paths_live_only_on_the_admin_port(tmp_path: Path, stub: str) -> None:
    raw, admin = with_admin(gateway_raw(stub, tmp_path))
    raw["routes"].insert(0, {"path": "/metrics", "upstream": "news", "auth": "public"})
    gateway = Running(tmp_path, raw)
    try:
        async with aiohttp.ClientSession() as session:
            assert await answer(session, "GET", f"{admin}/healthz") == (200, {"status": "ok"})
            assert await answer(session, "GET", f"{admin}/readyz") == (200, {"status": "ready"})
            assert await answer(session, "GET", f"{admin}/admin") == (404, {"message": "Not found."})
            status, body = await answer(session, "POST", f"{admin}/metrics")
            assert status == 405 and body == {"message": "Method not allowed."}
            # on the public port these are paths like any other: a route for /metrics sends it upstream (the
            # stub has no such path: aiohttp's own 404), and the catch-all route wants a token for the others
            status, body = await answer(session, "GET", f"{gateway.url}/metrics")
            assert status == 404 and body == b"404: Not Found"
            for path in ("/healthz", "/readyz"):
                status, body = await answer(session, "GET", f"{gateway.url}{path}")
                assert status == 401 and body == {"message": "User must be authorized."}
    finally:
        gateway.stop()


class BlackHole:
    """Accepts connections on a port and never answers: a store that hangs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)

    def close(self) -> None:
        self.sock.close()


async def test_readyz_names_each_failing_store_never_hangs_and_recovers(tmp_path: Path, stub: str) -> None:
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    mariadb = MariaDBProcess(tmp_path / "mariadb")
    mariadb.start()
    mariadb.execute("CREATE DATABASE gw")
    raw = gateway_raw(stub, tmp_path)
    raw["redis"] = {"url": redis.url}
    raw["database"] = {"url": mariadb.url("gw")}
    raw["upstreams"]["dead"] = {"targets": [f"http://127.0.0.1:{closed_port()}"],
                                "health_check": {"path": "/", "interval": "200ms", "timeout": "200ms",
                                                 "unhealthy_threshold": 1}}
    raw, admin = with_admin(raw, probe_timeout="500ms")
    gateway = Running(tmp_path, raw)
    hole: BlackHole | None = None
    timeout = aiohttp.ClientTimeout(total=10)  # /readyz answers long before this, or the test fails
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async def failing() -> list[str]:
                status, body = await answer(session, "GET", f"{admin}/readyz")
                assert (status == 200) == (body["status"] == "ready")
                return body.get("failing", [])

            async def until(expected: list[str]) -> list[str]:
                deadline = time.monotonic() + 15
                seen = await failing()
                while seen != expected and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    seen = await failing()
                return seen

            assert await until(["upstream dead"]) == ["upstream dead"]
            redis.stop()
            assert await until(["redis", "upstream dead"]) == ["redis", "upstream dead"]
            # what a user sees meanwhile is counted as unavailable
            assert (await answer(session, "GET", f"{gateway.url}/v1_0/sms/codes/13911110002"))[0] == 503
            assert (await answer(session, "POST", f"{gateway.url}/v1_0/authorizations",
                                 json={"mobile": "13911110002", "code": "123456"}))[0] == 503
            samples = await scrape(session, admin)
            assert value(samples, "gateway_revocation_in_sync") == 0
            assert value(samples, "gateway_sms_codes_total", result="unavailable") == 1
            assert value(samples, "gateway_logins_total", method="sms", result="unavailable") == 1
            hole = BlackHole(redis.port)  # Redis that accepts and never answers: the probe times out
            assert await until(["redis", "upstream dead"]) == ["redis", "upstream dead"]
            hole.close()
            hole = None
            redis.start()
            assert await until(["upstream dead"]) == ["upstream dead"]
            mariadb.stop()
            assert await until(["database", "upstream dead"]) == ["database", "upstream dead"]
            mariadb.start()
            assert await until(["upstream dead"]) == ["upstream dead"]
            assert await answer(session, "GET", f"{admin}/healthz") == (200, {"status": "ok"})
    finally:
        if hole is not None:
            hole.close()
        gateway.stop()
        redis.stop()
        mariadb.stop()
    assert not [r for r in gateway.records() if r["level"] == "ERROR" and "exception" in r]


async def test_readyz_says_draining_once_sigterm_arrives(tmp_path: Path, stub: str) -> None:
    raw, admin = with_admin(gateway_raw(stub, tmp_path))
    gateway = Running(tmp_path, raw)
    try:
        async with aiohttp.ClientSession() as session:
            assert (await answer(session, "GET", f"{admin}/readyz"))[0] == 200
            slow = asyncio.ensure_future(answer(session, "GET", f"{gateway.url}/_stub/slow?seconds=2"))
            await asyncio.sleep(0.5)
            gateway.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            assert await answer(session, "GET", f"{admin}/readyz") == (503, {"status": "not ready",
                                                                          "failing": ["draining"]})
            assert await answer(session, "GET", f"{admin}/healthz") == (200, {"status": "ok"})
            assert (await slow)[0] == 200  # the request in flight is still served
        assert gateway.proc.wait(30) == 0
    finally:
        gateway.stop()


async def test_a_client_that_goes_away_is_counted_and_not_an_error(tmp_path: Path, stub: str) -> None:
    raw, admin = with_admin(gateway_raw(stub, tmp_path))
    gateway = Running(tmp_path, raw)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /_stub/slow?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        # gone before the answer, with a reset (as wrk leaves at the end of a run): a FIN alone would be
        # a client that may still read its answer
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await asyncio.sleep(1.5)
        async with aiohttp.ClientSession() as session:
            samples = await scrape(session, admin)
    finally:
        gateway.stop()
    assert value(samples, "gateway_client_disconnects_total") == 1
    assert value(samples, "gateway_requests_total", route="/_stub", method="GET", status="499") == 1
    assert not [r for r in gateway.records() if r["level"] == "ERROR"]


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(line) for line in out.split())


async def test_with_workers_the_supervisor_adds_up_their_metrics(tmp_path: Path, stub: str,
                                                                 real_redis_url: str) -> None:
    raw = gateway_raw(stub, tmp_path, workers=2)
    raw["redis"] = {"url": real_redis_url}
    raw, admin = with_admin(raw)
    gateway = Running(tmp_path, raw)
    per_connection = 25
    try:
        deadline = time.monotonic() + 20
        while gateway.log.read_text().count("listening on") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        wait_for_port(int(admin.rsplit(":", 1)[1]))

        async def one_connection() -> list[int]:
            # held open: with the workers' balance each of two connections goes to a worker of its own
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
                statuses = []
                for _ in range(per_connection):
                    statuses.append((await answer(session, "GET", f"{gateway.url}/v1_0/channels"))[0])
                    await asyncio.sleep(0.01)
                return statuses

        async def counted(session: aiohttp.ClientSession, expected: float) -> float:
            deadline = time.monotonic() + 10
            seen = -1.0
            while time.monotonic() < deadline:
                samples = await scrape(session, admin)
                seen = value(samples, "gateway_requests_total", route="/v1_0/channels", method="GET", status="200")
                if seen == expected:
                    break
                await asyncio.sleep(0.2)
            return seen

        results = await asyncio.gather(one_connection(), one_connection())
        assert results == [[200] * per_connection] * 2
        async with aiohttp.ClientSession() as session:
            assert await counted(session, 2 * per_connection) == 2 * per_connection
            samples = await scrape(session, admin)
            assert value(samples, "gateway_build_info", version="0.1.0") == 1  # combined: one, not one per worker
            assert value(samples, "gateway_revocation_in_sync") == 1
            assert value(samples, "gateway_upstream_target_healthy", upstream="news", target=stub) == 1
            assert await answer(session, "GET", f"{admin}/readyz") == (200, {"status": "ready"})
            # each worker counted its own part: the files the supervisor adds up hold both
            workers = children(gateway.proc.pid)
            assert len(workers) == 2
            # a worker killed outright: what it counted stays counted, and its replacement counts on
            subprocess.run(["kill", "-KILL", str(workers[0])], check=True)
            deadline = time.monotonic() + 20
            while (workers[0] in children(gateway.proc.pid) or len(children(gateway.proc.pid)) < 2) \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            assert await counted(session, 2 * per_connection) == 2 * per_connection
            results = await asyncio.gather(one_connection(), one_connection())
            assert results == [[200] * per_connection] * 2
            assert await counted(session, 4 * per_connection) == 4 * per_connection
            # SIGHUP reloads the supervisor's probes with the workers: an upstream renamed is probed by its
            # new name (the old one would fail for good)
            renamed = {**raw, "upstreams": {"feed": raw["upstreams"]["news"]},
                       "routes": [{**r, "upstream": "feed"} for r in raw["routes"]]}
            gateway.write(renamed)
            gateway.signal(signal.SIGHUP)
            deadline = time.monotonic() + 15
            ready: tuple[int, Any] = (0, None)
            while ready != (200, {"status": "ready"}) and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                ready = await answer(session, "GET", f"{admin}/readyz")
                samples = await scrape(session, admin)
            assert ready == (200, {"status": "ready"})
            assert value(samples, "gateway_upstream_target_healthy", upstream="feed", target=stub) == 1
            # SIGTERM: the supervisor's /readyz says draining while the workers finish what they serve
            slow = asyncio.ensure_future(answer(session, "GET", f"{gateway.url}/_stub/slow?seconds=2"))
            await asyncio.sleep(0.5)
            gateway.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            assert await answer(session, "GET", f"{admin}/readyz") == (503, {"status": "not ready",
                                                                          "failing": ["draining"]})
            assert (await slow)[0] == 200
            before = value(samples, "gateway_requests_total", route="/v1_0/channels", method="GET", status="200")
            while gateway.proc.poll() is None:  # while the workers stop, no sum goes down
                try:
                    now = await scrape(session, admin)
                except aiohttp.ClientError:
                    break
                assert value(now, "gateway_requests_total", route="/v1_0/channels", method="GET",
                             status="200") >= before
                await asyncio.sleep(0.05)
        assert gateway.proc.wait(30) == 0
    finally:
        gateway.stop()
