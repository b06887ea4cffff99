from __future__ import annotations

import itertools

import pytest

from gateway.config import RouteConfig
from gateway.errors import BadRequest
from gateway.paths import _NORMAL, BadPath, _normalize, normalize_path, normalize_route_path
from gateway.pipeline.match import RouteTable


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("/", "/"),
        ("/v1_0/articles", "/v1_0/articles"),
        ("/v1_0/articles/", "/v1_0/articles/"),
        ("/v1_0//articles", "/v1_0/articles"),
        ("/v1_0/./articles", "/v1_0/articles"),
        ("/v1_0/user/../articles", "/v1_0/articles"),
        ("/v1_0/user/..", "/v1_0/"),
        ("/v1_0/%61rticles", "/v1_0/articles"),
        ("/v1_0/%7euser", "/v1_0/~user"),
        ("/v1_0/%2e%2e/x", "/x"),
        ("/v1_0/%2E/x", "/v1_0/x"),
        ("/v1_0/a%20b", "/v1_0/a%20b"),
        ("/v1_0/a%3fb", "/v1_0/a%3Fb"),
        ("/v1_0/%e4%b8%ad", "/v1_0/%E4%B8%AD"),
    ],
)
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    ["/v1_0%2farticles", "/v1_0%2Farticles", "/a%5cb", "/a\\b", "/a%00b", "/..", "/a/../..", "/%2e%2e/x",
     "/a%zz", "/a%4", "relative", "/a\x01b", "/a b"],
)
def test_normalize_path_rejects(raw: str) -> None:
    with pytest.raises(BadRequest):
        normalize_path(raw)


def route(path: str, auth: dict[str, str] | None = None) -> RouteConfig:
    return RouteConfig(path=path, upstream="news", auth=auth or {"*": "required"})


TABLE = RouteTable([route("/"), route("/v1_0/articles"), route("/v1_0/user/channels"), route("/v1_0/user")])


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/v1_0/articles", "/v1_0/articles"),
        ("/v1_0/articles/", "/v1_0/articles"),
        ("/v1_0/articles/1", "/v1_0/articles"),
        ("/v1_0/articlesX", "/"),
        ("/v1_0/user/channels/3", "/v1_0/user/channels"),
        ("/v1_0/user/channelsX", "/v1_0/user"),
        ("/v1_0/user", "/v1_0/user"),
        ("/other", "/"),
        ("/", "/"),
    ],
)
def test_longest_whole_segment_match_wins(path: str, expected: str) -> None:
    matched = TABLE.match(path)
    assert matched is not None and matched.path == expected


def test_no_route_matches_without_a_root_route() -> None:
    table = RouteTable([route("/v1_0/articles")])
    assert table.match("/v1_0/channels") is None
    assert table.match("/") is None


def test_auth_mode_per_method() -> None:
    r = route("/x", {"GET": "optional", "POST": "public", "*": "required"})
    assert r.mode("GET") == "optional"
    assert r.mode("HEAD") == "optional"
    assert r.mode("POST") == "public"
    assert r.mode("DELETE") == "required"


def test_route_paths_are_normalized_in_config() -> None:
    assert normalize_route_path("/v1_0/articles/") == "/v1_0/articles"
    assert normalize_route_path("/") == "/"
    with pytest.raises(ValueError):
        normalize_route_path("v1_0")


def test_the_fast_check_for_normal_paths_agrees_with_the_full_normalization() -> None:
    """Every path of up to three segments over tricky pieces: whatever the fast check passes untouched is
    exactly what the full normalization makes of it, and it passes nothing the full one refuses."""
    pieces = ["", ".", "..", "...", "a", ".a", "a.", "%2e", "%41", "%2F", "~", "a;b", "a:b", "@", "-", "a b", "\\"]
    checked = 0
    for n in range(1, 4):
        for segments in itertools.product(pieces, repeat=n):
            for tail in ("", "/"):
                raw = "/" + "/".join(segments) + tail
                if not _NORMAL.fullmatch(raw):
                    continue
                checked += 1
                try:
                    assert _normalize(raw) == raw, raw
                except BadPath:
                    raise AssertionError(f"{raw!r} passes the fast check but is refused") from None
    assert checked > 1000
    with pytest.raises(BadRequest):
        normalize_path("/a/../..")
