from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.pipeline.mutate import RequestIds, client_response_fields, upstream_request_fields


def as_text(lines: bytes) -> CIMultiDict[str]:
    fields = [line.split(": ", 1) for line in lines.decode().split("\r\n") if line]
    return CIMultiDict((name, value) for name, value in fields)


def proxy(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def mutate(headers: CIMultiDictProxy[str], user_id: int | None = 7, forward_authorization: bool = False) -> CIMultiDict[str]:
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    return as_text(upstream_request_fields(raw, user_id=user_id, forward_authorization=forward_authorization,
                                           peer="10.0.0.9", scheme="http", req_id="rid"))


def test_identity_headers_in_any_spelling_are_replaced() -> None:
    out = mutate(proxy(("X-User-Id", "1"), ("x-user-id", "2"), ("X_User_Id", "3"), ("x_USER-id", "4")))
    assert out.getall("X-User-Id") == ["7"]
    assert not [k for k in out if k.lower().replace("_", "-") == "x-user-id" and k != "X-User-Id"]


def test_anonymous_requests_carry_no_identity() -> None:
    out = mutate(proxy(("X-User-Id", "1")), user_id=None)
    assert "X-User-Id" not in out


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    out = mutate(proxy(("Connection", "keep-alive, X-Secret"), ("Keep-Alive", "5"), ("X-Secret", "s"),
                       ("TE", "trailers"), ("Upgrade", "h2c"), ("Proxy-Authorization", "p"),
                       ("Transfer-Encoding", "chunked"), ("Accept", "*/*")))
    for name in ("Connection", "Keep-Alive", "X-Secret", "TE", "Upgrade", "Proxy-Authorization", "Transfer-Encoding"):
        assert name not in out
    assert out["Accept"] == "*/*"


def test_authorization_is_forwarded_only_when_the_route_says_so() -> None:
    headers = proxy(("Authorization", "Bearer t"))
    assert "Authorization" not in mutate(headers)
    assert mutate(headers, forward_authorization=True)["Authorization"] == "Bearer t"


def test_forwarded_headers() -> None:
    out = mutate(proxy(("Host", "gw.example"), ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "gopher"),
                       ("X-Forwarded-Host", "evil")))
    assert out["X-Forwarded-For"] == "1.2.3.4, 10.0.0.9"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "gw.example"
    assert "Host" not in out
    assert out["X-Request-Id"] == "rid"


def test_request_id_is_kept_when_sane_and_made_otherwise() -> None:
    request_id = RequestIds()
    assert request_id("abc-123") == "abc-123"
    made = request_id("bad id\"<>")
    assert made != "bad id\"<>" and len(made) == 32
    assert len({request_id(None) for _ in range(1000)}) == 1000
    assert request_id(None)[:16] != RequestIds()(None)[:16]  # each process has its own prefix


def response_lines(*pairs: tuple[str, str]) -> tuple[list[str], bool]:
    lines, framed = client_response_fields([(n.encode(), v.encode()) for n, v in pairs], "rid", b"DATE")
    return lines.decode().split("\r\n")[:-1], framed


def test_response_headers() -> None:
    out, framed = response_lines(("Server", "nginx/1.2"), ("Connection", "close, X-Hop"), ("X-Hop", "1"),
                                 ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Location", "/x"),
                                 ("Transfer-Encoding", "chunked"))
    assert out == ["Set-Cookie: a=1", "Set-Cookie: b=2", "Location: /x", "X-Request-Id: rid", "Date: DATE"]
    assert not framed
    kept, framed = response_lines(("x-request-id", "upstream-id"), ("date", "then"), ("Content-Length", "5"))
    assert kept == ["x-request-id: upstream-id", "date: then", "Content-Length: 5"] and framed


def test_a_length_that_connection_names_is_dropped() -> None:
    out, framed = response_lines(("Connection", "content-length"), ("Content-Length", "5"))
    assert out == ["X-Request-Id: rid", "Date: DATE"] and not framed


def test_the_clients_framing_never_reaches_the_upstream() -> None:
    out = mutate(proxy(("Content-Length", "05"), ("Transfer-Encoding", "chunked"), ("Content_Length", "9")))
    assert "Content-Length" not in out and "Transfer-Encoding" not in out and "Content_Length" not in out


def test_connection_named_fields_go_even_when_named_after_them() -> None:
    out = mutate(proxy(("X-Secret", "s"), ("Connection", "x-secret"), ("X-Other", "o")))
    assert "X-Secret" not in out and out["X-Other"] == "o"
