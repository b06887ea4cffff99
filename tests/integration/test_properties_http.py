"""Properties through a running gateway (hypothesis, derandomized): the path that is authorized is the path
that is forwarded, and the gateway's own endpoints never answer 500, whatever arrives."""
from __future__ import annotations

import json
import socket
import string
import subprocess
import sys
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest
from gateway.paths import normalize_path
from tests.factories import property_settings
from tests.processes import ROOT, Running, gateway_raw
from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.stores("embedded"), pytest.mark.properties]
SETTINGS = settings(**property_settings(150),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("properties")
    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "upstream_stub", "--port", str(port)], cwd=ROOT)
    wait_for_port(port)
    raw = gateway_raw(f"http://127.0.0.1:{port}", folder)
    raw["routes"] = [{"path": "/v1_0/echo", "upstream": "news", "auth": "public"},
                     {"path": "/", "upstream": "news", "auth": "required"}]
    running = Running(folder, raw)
    yield running
    running.stop()
    stub.terminate()
    stub.wait(10)


def exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


PATH_CHARS = string.ascii_letters + string.digits + "-._~%;:@!$&'()*+,=/"
suffixes = st.text(alphabet=PATH_CHARS, max_size=30) | st.lists(
    st.sampled_from(["..", ".", "%2e%2e", "%2E", "a", "%41", "//", "%2f", "x;y", "%7e"]), max_size=8).map("/".join)


@SETTINGS
@given(suffixes, st.booleans())
def test_the_authorized_path_is_the_forwarded_path(gateway: Running, suffix: str, query: bool) -> None:
    sent = "/v1_0/echo/" + suffix
    target = sent + ("?next=/../admin" if query else "")
    status, body = exchange(gateway.port, b"GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n" % target.encode())
    try:
        expected = normalize_path(sent)
    except BadRequest:
        assert status == 400 and "message" in json.loads(body)  # refused: nothing was forwarded
        return
    if not (expected == "/v1_0/echo" or expected.startswith("/v1_0/echo/")):
        assert status == 401  # climbed out of the public route: the catch-all route wants a token
        return
    assert status == 200, body
    forwarded = json.loads(body)["path"]
    assert forwarded == expected + ("?next=/../admin" if query else "")


bodies = st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                   st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                                    st.sampled_from(["mobile", "code", "password", "account", "x"]), inner,
                                    max_size=4), max_leaves=8).map(lambda v: json.dumps(v).encode()))
headers = st.text(alphabet=string.printable.replace("\r", "").replace("\n", ""), max_size=80)


@SETTINGS
@given(bodies, st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
def test_login_never_answers_500(gateway: Running, body: bytes, content_type: str) -> None:
    head = (b"POST /v1_0/authorizations HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (content_type.encode(), len(body)))
    status, answer = exchange(gateway.port, head, body)
    assert status in (201, 400, 403, 429) and "message" in json.loads(answer) or status == 201


@SETTINGS
@given(headers, st.sampled_from(["PUT", "DELETE"]))
def test_refresh_and_logout_never_answer_500(gateway: Running, authorization: str, method: str) -> None:
    head = (b"%s /v1_0/authorizations HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: %s\r\n"
            b"Content-Length: 0\r\n\r\n" % (method.encode(), authorization.encode()))
    status, answer = exchange(gateway.port, head)
    assert status in (400, 401, 403) and "message" in json.loads(answer)


@SETTINGS
@given(st.text(alphabet=PATH_CHARS + "+ ０１２３", min_size=1, max_size=30))
def test_sms_codes_never_answer_500(gateway: Running, mobile: str) -> None:
    target = "/v1_0/sms/codes/" + mobile.replace(" ", "%20").replace("/", "%2F")
    status, answer = exchange(gateway.port, b"GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
                              % target.encode())
    result: Any = json.loads(answer)
    # 401: a mobile of "." or ".." normalizes the path out of the endpoint, onto the required route "/"
    assert status in (200, 400, 401, 404, 405, 429) and ("message" in result or "mobile" in result)
