"""Faults on the upstream side, with real processes that the tests stop, kill and start: a target killed
under load, a target that hangs, a target that closes its keep-alive connections after a few requests, and a
gateway worker killed under load.

The promise: a client never sees a fault that the gateway could hide safely (an idempotent request whose
connection broke before any byte of an answer came goes again elsewhere), and what it cannot hide it answers
itself as JSON (502, 504), never a 500, never an ERROR line or a traceback.
"""
from __future__ import annotations

import asyncio
import os
import logging
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.pipeline.forward import SMALL_BODY
from tests.factories import Conn, config_dict
from tests.processes import Running, gateway_raw
from tests.servers import HungUpstream, KeepAliveRequests, RawUpstream, Stub, StubProcess, child_pids, established

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough

PUBLIC = [{"path": "/", "upstream": "news", "auth": "public"}]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


async def make_public_gateway(make_gateway: Any, upstreams: dict[str, Any], routes: list[dict[str, Any]]) -> Any:
    raw = config_dict()
    raw["upstreams"] = upstreams
    raw["routes"] = routes
    return await make_gateway(parse_config(raw, env={}))


# -- a target killed under load ------------------------------------------------------------------------------


@pytest.fixture
def two_stub_processes() -> Any:
    made = [StubProcess(), StubProcess()]
    for stub in made:
        stub.start()
    yield made
    for stub in made:
        stub.kill()


async def load(client: Any, path: str, *, workers: int, each: int, started: asyncio.Event | None = None
               ) -> Counter[int | str]:
    """`workers` clients, each sending up to `each` GETs in turn: how many got which status (or which error)."""
    outcomes: Counter[int | str] = Counter()

    async def one() -> None:
        for _ in range(each):
            try:
                resp = await client.get(path)
                await resp.read()
                outcomes[resp.status] += 1
            except aiohttp.ClientError as exc:
                outcomes[type(exc).__name__] += 1
            if started is not None and sum(outcomes.values()) >= workers * 5:
                started.set()

    await asyncio.gather(*(one() for _ in range(workers)))
    return outcomes


@pytest.mark.parametrize("how", ["SIGKILL", "graceful stop"])
async def test_a_target_killed_under_load_fails_no_idempotent_request(
        make_gateway: Any, two_stub_processes: list[StubProcess], stubs: list[Stub], how: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """RFC 9110 §9.2.2: a GET whose connection broke before any byte of an answer came may go again, and
    does, on the other target. SIGKILL resets the connections in flight; a graceful stop (aiohttp's runner
    cleanup) closes the idle ones and refuses new ones."""
    if how == "SIGKILL":
        urls = [stub.url for stub in two_stub_processes]
    else:
        urls = [stubs[0].url, stubs[1].url]
    upstreams = {"news": {"targets": urls, "timeouts": {"connect": "1s", "read": "5s"},
                          "passive": {"consecutive_failures": 3, "cooldown": "30s"}}}
    client = await make_public_gateway(make_gateway, upstreams, PUBLIC)
    started = asyncio.Event()
    running = asyncio.create_task(load(client, "/_stub/slow?seconds=0.1", workers=8, each=40, started=started))
    await asyncio.wait_for(started.wait(), 20)
    # A burst on top: the pooled connections are busy, so these go on new ones, and are in flight at the kill.
    burst = asyncio.create_task(load(client, "/_stub/slow?seconds=0.5", workers=8, each=1))
    await asyncio.sleep(0.25)
    if how == "SIGKILL":
        two_stub_processes[0].kill()
    else:
        await stubs[0].stop()
    outcomes = await asyncio.wait_for(running, 60)
    assert outcomes == {200: 8 * 40}, outcomes
    assert await burst == {200: 8}
    after = await load(client, "/v1_0/channels", workers=2, each=10)
    assert after == {200: 20}  # the dead target is ejected or skipped; the other serves
    no_errors_logged(caplog)


# -- a hung target -------------------------------------------------------------------------------------------


async def test_a_hung_target_is_504_at_the_read_timeout_and_other_routes_answer(
        make_gateway: Any, stubs: list[Stub], caplog: pytest.LogCaptureFixture) -> None:
    hung = HungUpstream()
    hung_url = await hung.start()
    upstreams = {"hung": {"targets": [hung_url], "timeouts": {"connect": "1s", "read": "800ms"}},
                 "news": {"targets": [stubs[0].url], "timeouts": {"connect": "1s", "read": "5s"}}}
    routes = [{"path": "/hung", "upstream": "hung", "auth": "public"}, *PUBLIC]
    client = await make_public_gateway(make_gateway, upstreams, routes)
    try:
        async def hung_call() -> tuple[int, Any, float]:
            began = time.monotonic()
            resp = await client.get("/hung/x")
            return resp.status, await resp.json(), time.monotonic() - began

        waiting = [asyncio.create_task(hung_call()) for _ in range(3)]
        await asyncio.sleep(0.1)
        others = await load(client, "/v1_0/channels", workers=3, each=10)  # meanwhile, on another upstream
        assert not any(task.done() for task in waiting)  # the healthy route did not wait for the hung one
        assert others == {200: 30}
        for status, body, took in await asyncio.gather(*waiting):
            assert (status, body) == (504, {"message": "Upstream hung timed out.", "upstream": "hung"})
            assert 0.8 <= took < 3.0  # at the configured read timeout (the upper bound allows for a busy machine)
        assert hung.accepted >= 1
    finally:
        await hung.stop()
    no_errors_logged(caplog)


# -- a target that closes every keep-alive connection after N requests ----------------------------------------


@pytest.mark.parametrize("announce, methods", [
    pytest.param(True, ("GET", "POST"), id="nginx-keepalive_requests-Connection-close-RFC9112-9.6"),
    pytest.param(False, ("GET", "HEAD", "DELETE"), id="unannounced-close-idempotent-RFC9110-9.2.2"),
])
async def test_a_target_that_closes_its_connections_after_three_requests(
        make_gateway: Any, announce: bool, methods: tuple[str, ...], caplog: pytest.LogCaptureFixture) -> None:
    """nginx closes a connection after `keepalive_requests`, saying `Connection: close` on the last answer:
    the gateway must not send another request on it, so even a POST with a body is safe. A target that
    closes without saying so meets a request already on its way: one that may be sent again is, on a new
    connection, and none fails (a POST with a body is not safe there: it may have been acted on, and is 502,
    as test_transport.py shows)."""
    upstream = KeepAliveRequests(3, announce=announce)
    url = await upstream.start()
    upstreams = {"news": {"targets": [url], "timeouts": {"connect": "1s", "read": "5s"}}}
    client = await make_public_gateway(make_gateway, upstreams, PUBLIC)
    outcomes: Counter[Any] = Counter()
    sent: Counter[str] = Counter()

    async def one(worker: int) -> None:
        for i in range(75):
            method = methods[i % len(methods)]
            path = f"/w{worker}/{i}"
            body = b"x" * (100 + i) if method == "POST" else None
            sent[method] += 1
            try:
                resp = await client.request(method, path, data=body)
                got = await resp.read()
                ok = resp.status == 200 and (method == "HEAD" or got == str(len(body or b"")).encode())
                outcomes[ok] += 1
            except aiohttp.ClientError as exc:
                outcomes[type(exc).__name__] += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(one(w) for w in range(4))), 60)
    finally:
        await upstream.stop()
    assert outcomes == {True: 300}, outcomes
    assert len(upstream.connections) >= 100  # three answers a connection, at most
    assert all(len(c) <= 3 for c in upstream.connections)
    lines = Counter(r.split(b"\r\n", 1)[0] for r in upstream.requests)
    assert len(lines) == 300  # every request reached the target
    if announce:
        assert set(lines.values()) == {1} and not upstream.unanswered  # none was sent on a closing connection
    else:
        assert upstream.unanswered  # the race was met: requests were sent on connections as they closed
        assert all(lines[r.split(b"\r\n", 1)[0]] == 2 for r in upstream.unanswered)  # and went again, once
    no_errors_logged(caplog)



@pytest.mark.parametrize("method, status", [
    pytest.param("PUT", 200, id="PUT-idempotent-sent-again-whole-RFC9110-9.2.2"),
    pytest.param("POST", 502, id="POST-may-have-been-acted-on-RFC9110-9.2.2"),
])
async def test_a_streamed_upload_that_meets_a_stale_connection_with_its_first_piece_sent(
        make_gateway: Any, method: str, status: int, caplog: pytest.LogCaptureFixture) -> None:
    """The upstream closes a kept-alive connection as a streamed upload's head and first piece reach it (the
    keep-alive race). The gateway holds that first piece until it reads the next, so a method that may be
    retried is sent again whole on a new connection, and the client never sees the race."""
    heads: list[bytes] = []
    answered_on: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                if served == 1:
                    return  # the second request on a connection: closed under it, unanswered
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]) \
                    if b"content-length:" in head.lower() else 0
                body = await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(len(body))), len(body)))
                await writer.drain()
                served += 1
                answered_on.append(len(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    upstreams = {"news": {"targets": [url], "timeouts": {"connect": "1s", "read": "5s"}}}
    client = await make_public_gateway(make_gateway, upstreams, PUBLIC)
    try:
        assert (await client.get("/warm")).status == 200  # leaves one kept-alive connection in the pool
        size = SMALL_BODY + 40_000
        conn = await Conn.open(client)
        conn.send(b"%s /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % (method.encode(), size)
                  + b"a" * 1000)
        await asyncio.sleep(0.5)  # the head and the first piece have gone out on the pooled connection
        conn.send(b"a" * (size - 1000))
        got, _, body = await conn.answer()
        conn.close()
    finally:
        server.close()
    assert got == status
    assert len(heads) == (3 if status == 200 else 2)  # the warm-up, the stale attempt, and the one sent again
    if status == 200:
        assert body == str(size).encode() and answered_on[-1] == size  # whole, first piece included
    no_errors_logged(caplog)


@pytest.mark.parametrize("method, route, status, reached_other", [
    pytest.param("GET", {}, 200, True, id="GET-idempotent-retried-RFC9110-9.2.2"),
    pytest.param("DELETE", {}, 200, True, id="DELETE-idempotent-retried-RFC9110-9.2.2"),
    pytest.param("POST", {}, 502, False, id="POST-may-have-been-acted-on-RFC9110-9.2.2"),
    pytest.param("POST", {"retry_non_idempotent": True}, 200, True, id="POST-route-retry_non_idempotent"),
])
async def test_a_target_that_dies_with_a_request_in_flight_on_a_new_connection(
        make_gateway: Any, method: str, route: dict[str, Any], status: int, reached_other: bool) -> None:
    """The dying target reads the request on a connection of its own and closes it without a byte of an
    answer, as a process killed mid-request does. (Before the fix a GET was retried only on a pooled
    connection, and got 502 on a new one.)"""
    dying, alive = RawUpstream(lambda request: None), RawUpstream(lambda request: OK)
    urls = [await dying.start(), await alive.start()]
    upstreams = {"news": {"targets": urls, "timeouts": {"connect": "1s", "read": "5s"}}}
    client = await make_public_gateway(make_gateway, upstreams, [{"path": "/", "upstream": "news",
                                                                  "auth": "public", **route}])
    try:
        resp = await client.request(method, "/x", data=b"body" if method == "POST" else None)
        assert resp.status == status
        if status == 502:
            assert await resp.json() == {"message": "Upstream news is unavailable.", "upstream": "news"}
        assert len(dying.requests) == 1  # round robin: the dying target first, and it read the request
        assert len(alive.requests) == (1 if reached_other else 0)
    finally:
        await dying.stop()
        await alive.stop()


# -- a worker killed under load ------------------------------------------------------------------------------


class Tally:
    """A bounded load of GETs, each on a connection of its own (so that the shared queue spreads them over
    the workers), sent by hand: an HTTP client library would send a GET again on a broken connection
    (aiohttp does) and hide the very failures counted here. How many were sent, answered (by status) and
    failed (by error)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self.answered: Counter[int] = Counter()
        self.failed: list[BaseException] = []
        self.stop = asyncio.Event()

    async def run(self, clients: int, each: int) -> None:
        await asyncio.gather(*(self._client(each) for _ in range(clients)))

    async def _client(self, each: int) -> None:
        for _ in range(each):
            if self.stop.is_set():
                return
            self.sent += 1
            try:
                self.answered[await asyncio.wait_for(self._get(), 15)] += 1
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                self.failed.append(exc)

    async def _get(self) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET /_stub/slow?seconds=0.05 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            answer = await reader.read()  # to the end: the gateway closes after its answer
        finally:
            writer.close()
        if not answer:
            raise EOFError("the connection closed with no answer")
        head, _, body = answer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise EOFError(f"not an answer: {answer[:40]!r}")
        if b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) != length:
                raise EOFError("an answer cut short")
        return int(head.split(b" ")[1])


async def wait_until(check: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_worker_killed_under_load_loses_only_what_it_held(tmp_path: Path, stub: str,
                                                                  real_redis_url: str) -> None:
    """SIGKILL one of two workers while GETs run. The worker is stopped first (SIGSTOP), so that the client
    connections it holds can be counted before it dies: those are the requests in flight on it, and only
    they may fail, as reset connections (never a 5xx). Connections not yet accepted wait in the shared
    queue for the other worker; the supervisor starts a new worker, which serves."""
    raw = gateway_raw(stub, tmp_path, workers=2)
    raw["redis"] = {"url": real_redis_url}
    gateway = Running(tmp_path, raw)
    tally = Tally(gateway.port)
    try:
        assert await wait_until(lambda: len(child_pids(gateway.proc.pid)) == 2, 20)
        await asyncio.sleep(1.5)  # both workers serve
        workers = child_pids(gateway.proc.pid)
        running = asyncio.create_task(tally.run(clients=6, each=400))
        assert await wait_until(lambda: sum(tally.answered.values()) >= 30, 20)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGSTOP)
        held = established(gateway.port, victim)  # frozen: it accepts no more, and answers none of these
        os.kill(victim, signal.SIGKILL)
        answered_at_kill = sum(tally.answered.values())
        assert await wait_until(lambda: len(child_pids(gateway.proc.pid) - workers) == 1, 20)
        (new,) = child_pids(gateway.proc.pid) - workers
        assert await wait_until(lambda: established(gateway.port, new) > 0, 20)  # the new worker serves
        await asyncio.sleep(0.5)
        tally.stop.set()
        await asyncio.wait_for(running, 30)
        assert gateway.stop() == 0
    finally:
        tally.stop.set()
        gateway.stop()
    answered = sum(tally.answered.values())
    assert tally.sent == answered + len(tally.failed)
    assert set(tally.answered) == {200}, tally.answered  # never a 5xx from the gateway
    assert answered > answered_at_kill  # the load went on after the kill
    assert all(isinstance(exc, (ConnectionError, EOFError)) for exc in tally.failed), tally.failed
    assert len(tally.failed) <= held, (tally.failed, held)
    records = gateway.records()
    errors = [r["message"] for r in records if r["level"] == "ERROR"]
    assert errors == ["worker 0 exited with -9; restarting it"] or \
        errors == ["worker 1 exited with -9; restarting it"], errors
    assert "Traceback" not in gateway.log.read_text()
