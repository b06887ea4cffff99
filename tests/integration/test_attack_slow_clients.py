"""Slow clients (slowloris, CVE-2007-6750; RFC 9112 §9.3's note on idle connections): a header-read
timeout and a connection limit, both configurable, and a normal request still answered beside them."""
from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from tests.factories import Conn, config_dict
from tests.processes import Running, gateway_raw

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough

SLOW_CLIENTS = 1000
HEAD = b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\nX-Padding: " + b"a" * 64 + b"\r\n\r\n"


class Address:
    def __init__(self, port: int) -> None:
        self.server = self
        self.host, self.port = "127.0.0.1", port


async def drip(conn: Conn, seconds: int) -> None:
    """One byte of a request head a second, for `seconds` (never the whole head)."""
    for i in range(seconds):
        if conn.writer.is_closing():
            return
        conn.send(HEAD[i:i + 1])
        await asyncio.sleep(1.0)


async def timed_request(port: int) -> tuple[int, float]:
    started = time.monotonic()
    conn = await Conn.open(Address(port))
    conn.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    status, _, _ = await conn.answer()
    conn.close()
    return status, time.monotonic() - started


def no_error_lines(gateway: Running) -> None:
    bad = [r for r in gateway.records() if r["level"] in ("ERROR", "CRITICAL") or "Traceback" in r["message"]]
    assert not bad, bad


async def test_a_thousand_slowloris_connections_leave_normal_requests_answered(stub: str, tmp_path: Path) -> None:
    """CVE-2007-6750 (slowloris): 1,000 connections sending their heads a byte a second. A normal request
    is answered within a second all the while, and each slow one gets 408 at server.header_timeout."""
    gateway = Running(tmp_path, gateway_raw(stub, tmp_path, header_timeout="4s"))
    try:
        conns = [await Conn.open(Address(gateway.port)) for _ in range(SLOW_CLIENTS)]
        drips = [asyncio.create_task(drip(conn, 8)) for conn in conns]
        await asyncio.sleep(1.5)  # every slow connection has sent a byte or two
        timings = []
        for _ in range(5):
            status, took = await timed_request(gateway.port)
            assert status == 200
            timings.append(took)
            await asyncio.sleep(0.3)
        assert max(timings) < 1.0, timings  # the promise: within a second
        answers = await asyncio.gather(*(conn.answer() for conn in conns))
        for status, headers, body in answers:
            assert status == 408 and headers["content-type"].startswith("application/json")
            assert json.loads(body) == {"message": "Request header timed out."}
        assert all(await asyncio.gather(*(conn.closed() for conn in conns)))
        for task in drips:
            task.cancel()
        await asyncio.gather(*drips, return_exceptions=True)
    finally:
        assert gateway.stop() == 0
    no_error_lines(gateway)


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(stub: str, tmp_path: Path) -> None:
    """nginx's client_header_timeout, HAProxy's timeout http-request: an accepted connection that sends
    no request is closed (with no answer: it asked nothing)."""
    gateway = Running(tmp_path, gateway_raw(stub, tmp_path, header_timeout="1s", keepalive_timeout="30s"))
    try:
        conn = await Conn.open(Address(gateway.port))
        started = time.monotonic()
        assert await asyncio.wait_for(conn.reader.read(), 10) == b""
        assert time.monotonic() - started >= 0.9  # closed by the header timeout, not at once
    finally:
        assert gateway.stop() == 0
    no_error_lines(gateway)


async def test_a_kept_alive_connection_waits_for_keepalive_timeout_not_header_timeout(
        stub: str, tmp_path: Path) -> None:
    """Idle between requests is keepalive_timeout; header_timeout only runs once a head has begun."""
    gateway = Running(tmp_path, gateway_raw(stub, tmp_path, header_timeout="1s", keepalive_timeout="30s"))
    try:
        conn = await Conn.open(Address(gateway.port))
        conn.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await conn.answer())[0] == 200
        await asyncio.sleep(2.0)  # twice the header timeout, idle
        conn.send(b"GET /v1_0/channels HTTP/1.1\r\n")  # half a head, then nothing
        status, _, body = await conn.answer()
        assert status == 408 and json.loads(body) == {"message": "Request header timed out."}
        assert await conn.closed()
    finally:
        assert gateway.stop() == 0
    no_error_lines(gateway)


async def trickle(conn: Conn, data: bytes, every: float) -> None:
    for i in range(len(data)):
        if conn.writer.is_closing():
            return
        conn.send(data[i:i + 1])
        await asyncio.sleep(every)


async def timed_408(conn: Conn, started: float) -> float:
    status, _, body = await asyncio.wait_for(conn.answer(), 20)
    assert status == 408 and json.loads(body) == {"message": "Request header timed out."}
    return time.monotonic() - started


async def test_a_new_connections_first_head_is_due_header_timeout_after_the_accept(make_gateway: Any) -> None:
    """Not after its first byte: a client that waits before it starts to drip gains nothing."""
    raw = config_dict("http://127.0.0.1:9")
    raw["server"].update(header_timeout="2s", keepalive_timeout="30s")
    client = await make_gateway(parse_config(raw, env={}))
    conn = await Conn.open(client)
    started = time.monotonic()
    await asyncio.sleep(1.5)
    drip = asyncio.create_task(trickle(conn, HEAD, 0.2))
    took = await timed_408(conn, started)
    drip.cancel()
    assert 1.9 <= took < 3.0, took  # 2 s after the accept; counting from the first byte would be 3.5 s


async def test_a_head_that_begins_while_a_request_is_served_is_due_header_timeout_after_it(
        make_gateway: Any) -> None:
    """A second head sent in part behind a slow pipelined request (the header timer runs out while that one
    is served) is due header_timeout after the first answer, not keepalive_timeout."""
    client = await make_gateway(server={"header_timeout": "1s", "keepalive_timeout": "30s"})
    conn = await Conn.open(client)
    started = time.monotonic()
    conn.send(b"GET /_stub/slow?seconds=1.5 HTTP/1.1\r\nHost: gw\r\n\r\nGET /v1_0/chan")
    assert (await conn.answer())[0] == 200
    drip = asyncio.create_task(trickle(conn, b"nels HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 60, 0.2))
    took = await timed_408(conn, started)
    drip.cancel()
    assert took < 5.0, took  # about 2.5 s; it was keepalive_timeout (30 s) after the first answer before


async def test_past_max_connections_new_connections_wait_to_be_accepted(stub: str, tmp_path: Path) -> None:
    """HAProxy's maxconn: at the limit the gateway stops accepting; a new connection waits in the accept
    queue and is served as soon as a held one closes."""
    gateway = Running(tmp_path, gateway_raw(stub, tmp_path, max_connections=3, header_timeout="30s"))
    try:
        held = [await Conn.open(Address(gateway.port)) for _ in range(3)]
        for conn in held:  # each is accepted and served: the limit counts them
            conn.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert (await conn.answer())[0] == 200
        waiting = await Conn.open(Address(gateway.port))  # the kernel completes the handshake; not accepted
        waiting.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
        answer = asyncio.create_task(waiting.answer())
        done, _ = await asyncio.wait({answer}, timeout=1.0)
        assert not done  # not accepted while three are held
        held[0].close()
        status, _, _ = await answer
        assert status == 200
        for conn in [*held[1:], waiting]:
            conn.close()
    finally:
        assert gateway.stop() == 0
    warnings = [r["message"] for r in gateway.records() if r["level"] == "WARNING"]
    assert any("server.max_connections" in message for message in warnings), warnings
    no_error_lines(gateway)


async def test_the_connection_limit_holds_across_a_reload(stub: str, tmp_path: Path) -> None:
    """server.max_connections is the process's: connections the old configuration still serves after a
    SIGHUP count against the new one's listener too."""
    gateway = Running(tmp_path, gateway_raw(stub, tmp_path, max_connections=3, header_timeout="30s"))
    try:
        held = [await Conn.open(Address(gateway.port)) for _ in range(3)]
        for conn in held:
            conn.send(b"GET /_stub/slow?seconds=4 HTTP/1.1\r\nHost: gw\r\n\r\n")
        await asyncio.sleep(0.5)
        gateway.signal(signal.SIGHUP)
        for _ in range(100):  # until the new configuration serves
            if any("reloaded" in r["message"] for r in gateway.records()):
                break
            await asyncio.sleep(0.05)
        waiting = await Conn.open(Address(gateway.port))
        waiting.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
        answer = asyncio.create_task(waiting.answer())
        done, _ = await asyncio.wait({answer}, timeout=1.5)
        assert not done  # three connections are still held, by the old configuration
        assert [(await conn.answer())[0] for conn in held] == [200, 200, 200]
        assert (await answer)[0] == 200  # served once they closed
        for conn in [*held, waiting]:
            conn.close()
    finally:
        assert gateway.stop() == 0
    no_error_lines(gateway)


@pytest.mark.parametrize("key, value, problem", [
    ("header_timeout", "0s", "server.header_timeout: must be positive"),
    ("header_timeout", "soon", "server.header_timeout"),
    ("max_connections", 0, "server.max_connections"),
    ("max_connections", "many", "server.max_connections"),
])
def test_the_limits_are_checked_with_the_config(key: str, value: object, problem: str) -> None:
    raw = config_dict()
    raw["server"][key] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    assert any(problem in str(p) for p in caught.value.problems), caught.value.problems


def test_the_defaults() -> None:
    server = parse_config(config_dict(), env={}).server
    assert (server.header_timeout, server.max_connections, server.keepalive_timeout) == (10.0, 10000, 75.0)
