"""Properties that must hold for any input (hypothesis, derandomized so that a run is repeatable)."""
from __future__ import annotations

import string
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.auth.tokens import InvalidToken, TokenService
from gateway.config import ConfigError, parse_config
from gateway.errors import BadRequest
from gateway.paths import normalize_path
from gateway.pipeline.match import RouteTable
from tests.factories import config_dict, jwt_config, property_settings

pytestmark = pytest.mark.properties
SETTINGS = settings(**property_settings(300),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

SEGMENT_CHARS = string.ascii_letters + string.digits + "-._~%;:@!$&'()*+,=" + "/"
paths = st.text(alphabet=SEGMENT_CHARS + "\\\x00 é", max_size=40).map(lambda s: "/" + s)
escapes = st.sampled_from(["%2e", "%2E", "%2f", "%5c", "%00", "%41", "%7e", "%zz", "%", "%e9"])
tricky_paths = st.lists(st.one_of(st.sampled_from(["/", "..", ".", "a", "b", "//"]), escapes),
                        max_size=12).map(lambda parts: "/" + "/".join(parts))


def normalized(raw: str) -> str | None:
    try:
        return normalize_path(raw)
    except BadRequest:
        return None


@SETTINGS
@given(st.one_of(paths, tricky_paths))
def test_normalization_is_idempotent_and_never_climbs_above_the_root(raw: str) -> None:
    path = normalized(raw)
    if path is None:
        return  # refused with 400: nothing is authorized or forwarded
    assert normalize_path(path) == path
    assert path.startswith("/") and "//" not in path
    segments = path.split("/")[1:]
    assert "." not in segments and ".." not in segments
    assert not any(c in path for c in "\\\x00") and "%2f" not in path.lower()


@SETTINGS
@given(st.lists(st.text(alphabet="ab", min_size=1, max_size=3), max_size=6))
def test_climbing_above_the_root_is_refused(segments: list[str]) -> None:
    depth = len(segments)
    raw = "/" + "/".join(segments + [".."] * (depth + 1))
    assert normalized(raw) is None


class _R:
    def __init__(self, path: str) -> None:
        self.path = path


def _linear(routes: list[str], path: str) -> str | None:
    """The reference: the longest route path that is a whole-segment prefix of the path."""
    best = None
    for route in routes:
        if route == "/" or path == route or path.startswith(route + "/") or path.rstrip("/") == route:
            if best is None or len(route) > len(best):
                best = route
    return best


route_paths = st.lists(st.text(alphabet="abc", min_size=1, max_size=2), min_size=0, max_size=3).map(
    lambda parts: "/" + "/".join(parts))


@SETTINGS
@given(st.lists(route_paths, max_size=8, unique=True), route_paths, st.booleans())
def test_the_route_table_agrees_with_a_linear_search(routes: list[str], path: str, slash: bool) -> None:
    request = path + "/" if slash and path != "/" else path
    table = RouteTable([_R(route) for route in routes])
    found = table.match(request)
    assert (found.path if found else None) == _linear(routes, request)


SERVICE = TokenService(jwt_config())
TOKEN = SERVICE.issue(42, refresh=False, sid="property")


@SETTINGS
@given(st.integers(min_value=0, max_value=len(TOKEN) - 1),
       st.sampled_from(string.ascii_letters + string.digits + "-_.=+/ "))
def test_a_token_changed_anywhere_never_verifies(at: int, replacement: str) -> None:
    mutated = TOKEN[:at] + replacement + TOKEN[at + 1:]
    assume(mutated != TOKEN)
    service = TokenService(jwt_config())  # no cache shared with the original
    with pytest.raises(InvalidToken):
        service.verify(mutated)


@SETTINGS
@given(st.integers(min_value=1, max_value=len(TOKEN) - 1))
def test_a_token_cut_short_or_lengthened_never_verifies(at: int) -> None:
    service = TokenService(jwt_config())
    for changed in (TOKEN[:at], TOKEN + TOKEN[at:], TOKEN[:at] + TOKEN[at + 1:]):
        with pytest.raises(InvalidToken):
            service.verify(changed)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                         st.text(max_size=20), st.sampled_from(["${HOME}", "${NOPE}", "${X:-1}", "10m", "2s",
                                                                "memory://", "sqlite:///x.db", "*", "/"]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
KEYS = list(config_dict())


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS + ["admin", "cors", "bogus"]), yaml_values, max_size=5))
def test_the_config_loader_answers_any_yaml_with_a_config_or_its_problems(sections: dict[str, Any]) -> None:
    raw = config_dict()
    raw.update(sections)
    try:
        parse_config(raw, env={"HOME": "/root"})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(problem, str) for problem in exc.problems)


@SETTINGS
@given(st.text(max_size=200))
def test_the_config_loader_answers_any_text(text: str) -> None:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # load_config turns this into a ConfigError of its own
    try:
        parse_config(raw, env={})
    except ConfigError as exc:
        assert exc.problems
