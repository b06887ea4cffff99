"""The gateway as an operator runs it: SIGHUP reloads, SIGTERM drains, workers are supervised."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.processes import Running, gateway_raw
from tests.servers import child_pids, established


async def status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def wait_for_status(session: aiohttp.ClientSession, url: str, expected: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await status(session, url) == expected:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_sighup_reloads_and_a_bad_file_keeps_the_old_config(tmp_path: Path, stub: str) -> None:
    raw = gateway_raw(stub, tmp_path)
    gateway = Running(tmp_path, raw)
    try:
        async with aiohttp.ClientSession() as session:
            assert await status(session, f"{gateway.url}/v1_0/channels") == 200
            gateway.write(gateway_raw(stub, tmp_path, channels="required") | {"server": raw["server"]})
            gateway.signal(signal.SIGHUP)
            assert await wait_for_status(session, f"{gateway.url}/v1_0/channels", 401)
            broken = gateway_raw(stub, tmp_path) | {"server": raw["server"]}
            broken["routes"][0]["upstream"] = "nwes"
            gateway.write(broken)
            gateway.signal(signal.SIGHUP)
            await asyncio.sleep(1)
            assert await status(session, f"{gateway.url}/v1_0/channels") == 401  # the old config still serves
        assert gateway.stop() == 0
    finally:
        gateway.stop()
    log = gateway.log.read_text()
    assert "reload refused" in log and "routes[0].upstream: unknown upstream 'nwes'" in log


async def test_reload_drops_no_connection_and_in_flight_requests_finish(tmp_path: Path, stub: str) -> None:
    raw = gateway_raw(stub, tmp_path)
    gateway = Running(tmp_path, raw)
    try:
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(status(session, f"{gateway.url}/_stub/slow?seconds=1.5"))
            await asyncio.sleep(0.3)
            changed = gateway_raw(stub, tmp_path, channels="required") | {"server": raw["server"]}
            changed["routes"][1]["auth"] = "required"  # /_stub now needs a token: the slow one started before

            async def load() -> list[int]:
                return [await status(session, f"{gateway.url}/v1_0/channels") for _ in range(150)]

            loads = [asyncio.create_task(load()) for _ in range(4)]
            for _ in range(3):
                await asyncio.sleep(0.1)
                gateway.write(changed)
                gateway.signal(signal.SIGHUP)
            results = await asyncio.gather(*loads)  # an exception here is a dropped connection
            assert await slow == 200  # finished on the configuration it started with
            assert {s for r in results for s in r} <= {200, 401}
            assert await wait_for_status(session, f"{gateway.url}/_stub/slow?seconds=0", 401)
    finally:
        gateway.stop()


async def test_sigterm_drains_requests_in_flight(tmp_path: Path, stub: str) -> None:
    gateway = Running(tmp_path, gateway_raw(stub, tmp_path))
    async with aiohttp.ClientSession() as session:
        slow = asyncio.create_task(status(session, f"{gateway.url}/_stub/slow?seconds=1"))
        await asyncio.sleep(0.3)
        gateway.signal(signal.SIGTERM)
        assert await slow == 200
        code = await asyncio.to_thread(gateway.proc.wait, 20)
        assert code == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            await status(session, f"{gateway.url}/v1_0/channels")
    assert "draining requests in flight" in gateway.log.read_text()


async def test_workers_share_a_port_restart_and_reload(tmp_path: Path, stub: str, real_redis_url: str) -> None:
    raw = gateway_raw(stub, tmp_path, workers=2)
    raw["redis"] = {"url": real_redis_url}
    gateway = Running(tmp_path, raw)
    try:
        # A new connection per request, so that the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=20)) as session:
            deadline = time.monotonic() + 20
            while len(child_pids(gateway.proc.pid)) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            workers = child_pids(gateway.proc.pid)
            assert len(workers) == 2
            victim = sorted(workers)[0]
            subprocess.run(["kill", "-KILL", str(victim)], check=True)
            deadline = time.monotonic() + 20
            while (victim in child_pids(gateway.proc.pid) or len(child_pids(gateway.proc.pid)) < 2) \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert len(child_pids(gateway.proc.pid)) == 2 and victim not in child_pids(gateway.proc.pid)
            await asyncio.sleep(1.5)  # the new worker binds
            assert {await status(session, f"{gateway.url}/v1_0/channels") for _ in range(40)} == {200}
            gateway.write(gateway_raw(stub, tmp_path, channels="required", workers=2)
                          | {"server": raw["server"], "redis": raw["redis"]})
            gateway.signal(signal.SIGHUP)
            await asyncio.sleep(2)
            assert {await status(session, f"{gateway.url}/v1_0/channels") for _ in range(40)} == {401}
        assert gateway.stop() == 0
        assert child_pids(gateway.proc.pid) == set()
    finally:
        gateway.stop()


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"s3cret" * 4000 + b"\r\n\r\n", 431),
    (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
])
def test_unparseable_requests_get_json_and_no_versions(tmp_path: Path, stub: str, request_bytes: bytes,
                                                       status: int) -> None:
    import socket

    gateway = Running(tmp_path, gateway_raw(stub, tmp_path))
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(request_bytes)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    finally:
        gateway.stop()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == str(status).encode()
    assert b"Server: toutiao-gateway\r\n" in head + b"\r\n" and b"aiohttp" not in head and b"Python" not in head
    assert b"application/json" in head and b'"message"' in body
    assert b"s3cret" not in gateway.log.read_bytes()


async def test_clients_that_go_away_leave_no_error_in_the_log(stub: str, tmp_path: Path) -> None:
    """Under uvloop, as in production: resets before any answer (as wrk leaves its connections at the end
    of a run) and in the middle of a streamed body."""
    import socket
    import struct

    gateway = Running(tmp_path, gateway_raw(stub, tmp_path))
    loop = asyncio.get_running_loop()

    async def reset_after(target: str, read_head: bool) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", gateway.port))
        await loop.sock_sendall(sock, f"GET {target} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        if read_head:
            await loop.sock_recv(sock, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    try:
        await asyncio.gather(*(reset_after("/_stub/slow?seconds=0.2", False) for _ in range(20)),
                             *(reset_after("/_stub/slow-body?chunks=4&interval=0.1", True) for _ in range(5)),
                             *(reset_after("/v1_0/channels", False) for _ in range(50)))
        await asyncio.sleep(1.0)  # the answers come back and are written meanwhile
        async with aiohttp.ClientSession() as session:
            async with session.get(gateway.url + "/v1_0/channels") as resp:
                assert resp.status == 200
    finally:
        assert gateway.stop() == 0
    log = gateway.log.read_text()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


async def test_workers_share_connections_evenly(tmp_path: Path, stub: str, real_redis_url: str) -> None:
    """Keep-alive connections opened together are spread one for one, not as the kernel's hash falls."""
    raw = gateway_raw(stub, tmp_path, workers=2)
    raw["redis"] = {"url": real_redis_url}
    gateway = Running(tmp_path, raw)
    try:
        deadline = time.monotonic() + 20
        while len(child_pids(gateway.proc.pid)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # both workers serve
        opened = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(20)]
        for _, writer in opened:
            writer.write(b"GET /v1_0/channels HTTP/1.1\r\nHost: t\r\n\r\n")
        for reader, _ in opened:
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
        held = sorted(established(gateway.port, pid) for pid in child_pids(gateway.proc.pid))
        assert sum(held) == 20 and held[1] - held[0] <= 2  # the kernel's hash gives 0 and 20 as readily as 10 and 10
        for _, writer in opened:
            writer.close()
    finally:
        gateway.stop()


async def test_a_new_connection_may_still_send_its_first_request_while_draining(tmp_path: Path, stub: str) -> None:
    """Closing it at once would fail a request already on its way; an idle kept-alive one is closed at once."""
    gateway = Running(tmp_path, gateway_raw(stub, tmp_path))
    try:
        used_reader, used_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        used_writer.write(b"GET /v1_0/channels HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await used_reader.readline()).startswith(b"HTTP/1.1 200")
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        await asyncio.sleep(0.3)  # accepted, and quiet
        gateway.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        writer.write(b"GET /v1_0/channels HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
        assert await asyncio.to_thread(gateway.proc.wait, 20) == 0
    finally:
        gateway.stop()


async def test_a_reload_keeps_the_embedded_stores(tmp_path: Path, stub: str) -> None:
    """memory:// lives in the process, not in one configuration: a logout, a code sent and a spent refresh
    token are still known after SIGHUP."""
    import re

    raw = gateway_raw(stub, tmp_path)
    raw["jwt"]["rotate_refresh_tokens"] = True
    gateway = Running(tmp_path, raw)
    mobile, other = "13911112222", "13911113333"

    def code_for(number: str) -> str:
        return re.findall(rf"code for {number} is (\d{{6}})", gateway.log.read_text())[-1]

    try:
        async with aiohttp.ClientSession() as session:
            for number in (mobile, other):
                assert await status(session, f"{gateway.url}/v1_0/sms/codes/{number}") == 200
            async with session.post(f"{gateway.url}/v1_0/authorizations",
                                    json={"mobile": mobile, "code": code_for(mobile)}) as resp:
                assert resp.status == 201
                tokens = await resp.json()
            bearer = {"Authorization": f"Bearer {tokens['token']}"}
            refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
            async with session.put(f"{gateway.url}/v1_0/authorizations", headers=refresh) as resp:
                assert resp.status == 201  # the refresh token is now spent (rotation)
            async with session.delete(f"{gateway.url}/v1_0/authorizations", headers=bearer) as resp:
                assert resp.status == 204
            gateway.write(raw | {"routes": [*raw["routes"][:1], {"path": "/_stub", "upstream": "news",
                                                                  "auth": "public"}, raw["routes"][2]]})
            gateway.signal(signal.SIGHUP)
            await asyncio.sleep(1.5)
            assert "reloaded" in gateway.log.read_text()
            async with session.get(f"{gateway.url}/v1_0/echo/x", headers=bearer) as resp:
                assert resp.status == 401  # logged out before the reload: still out
            async with session.put(f"{gateway.url}/v1_0/authorizations", headers=refresh) as resp:
                assert resp.status == 403
            async with session.post(f"{gateway.url}/v1_0/authorizations",
                                    json={"mobile": other, "code": code_for(other)}) as resp:
                assert resp.status == 201  # the code sent before the reload still works
    finally:
        gateway.stop()


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_log_lines_are_json_with_the_request_id_or_text(tmp_path: Path, log_format: str) -> None:
    """A record made while a proxied request is served carries the id the client got in X-Request-Id."""
    import json

    from tests.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the forward fails, and says so in the log
    raw = gateway_raw(dead, tmp_path, **({} if log_format == "json" else {"log_format": "text"}))
    gateway = Running(tmp_path, raw)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/v1_0/channels") as resp:
                assert resp.status == 502
                request_id = resp.headers["X-Request-Id"]
        assert gateway.stop() == 0
    finally:
        gateway.stop()
    lines = [line for line in gateway.log.read_text().splitlines() if line.strip()]
    if log_format == "text":
        assert not lines[0].startswith("{")
        assert any("upstream news failed" in line and f"[request {request_id}]" in line for line in lines)
        return
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert all(r["time"].endswith("Z") for r in records)
    failed = [r for r in records if r["message"].startswith("upstream news failed")]
    assert failed and failed[0]["request_id"] == request_id and failed[0]["level"] == "WARNING"
    assert not any("request_id" in r for r in records if r["message"].startswith("listening on"))


async def test_the_access_log_and_the_reason_for_a_refusal(tmp_path: Path, stub: str) -> None:
    """One access record per request with its route, user, upstream and target; at DEBUG, why a request
    was refused; never a token, a query string or a code."""
    from tests.factories import make_token

    raw = gateway_raw(stub, tmp_path, access_log=True, log_level="DEBUG")
    gateway = Running(tmp_path, raw)
    expired = make_token(4242, ttl=-60)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/v1_0/channels?secret=s3cret-query") as resp:
                assert resp.status == 200
                ok_id = resp.headers["X-Request-Id"]
            async with session.get(f"{gateway.url}/v1_0/user/profile",
                                   headers={"Authorization": f"Bearer {expired}"}) as resp:
                assert resp.status == 401
                refused_id = resp.headers["X-Request-Id"]
        assert gateway.stop() == 0
    finally:
        gateway.stop()
    records = gateway.records()
    access = {r["request_id"]: r for r in records if r["logger"] == "gateway.access"}
    ok = access[ok_id]
    assert (ok["method"], ok["path"], ok["route"], ok["status"], ok["user_id"], ok["upstream"], ok["target"]) == \
        ("GET", "/v1_0/channels", "/v1_0/channels", 200, None, "news", stub)
    assert ok["client"] == "127.0.0.1" and ok["bytes_sent"] > 0 and ok["duration_ms"] >= 0
    refused = access[refused_id]
    assert (refused["route"], refused["status"], refused["target"]) == ("/", 401, None)
    why = [r["message"] for r in records if r.get("request_id") == refused_id and r["level"] == "DEBUG"]
    assert "answered 401: User must be authorized. (expired)" in why, why
    text = gateway.log.read_text()
    assert "s3cret-query" not in text and expired not in text and expired.split(".")[2] not in text
