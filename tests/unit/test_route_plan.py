"""Routes resolved once at load: modes per method, the route's settings over the upstream's."""
from __future__ import annotations

from gateway.config import parse_config
from gateway.metrics import Counter
from gateway.pipeline.match import resolve_all
from gateway.proxy.upstream import Upstream
from tests.factories import config_dict


def routes(**route: object) -> dict[str, object]:
    raw = config_dict()
    raw["upstreams"]["news"].update({"timeouts": {"connect": "2s", "read": "9s"}, "max_body_size": "1m",
                                     "retry_methods": ["GET"]})
    raw["routes"] = [{"path": "/a", "upstream": "news", **route}]
    config = parse_config(raw, env={})
    upstreams = {name: Upstream(cfg, Counter("outcomes")) for name, cfg in config.upstreams.items()}
    (resolved,) = resolve_all(config.routes, upstreams)
    return {"route": resolved, "upstream": upstreams["news"]}


def test_modes_per_method_are_worked_out_once() -> None:
    route = routes(auth={"GET": "optional", "POST": "public", "*": "required"})["route"]
    assert [route.mode(m) for m in ("GET", "HEAD", "POST", "DELETE", "BREW")] == \
        ["optional", "optional", "public", "required", "required"]


def test_the_upstreams_settings_unless_the_route_has_its_own() -> None:
    inherited = routes()
    route = inherited["route"]
    assert route.upstream is inherited["upstream"]
    assert (route.timeouts.connect, route.timeouts.read, route.body_limit) == (2, 9, 1024 * 1024)
    assert route.may_retry("GET") and not route.may_retry("PUT")
    own = routes(timeouts={"read": "1s"}, max_body_size="10k", retry_non_idempotent=True)["route"]
    assert (own.timeouts.read, own.body_limit) == (1, 10 * 1024)
    assert own.may_retry("POST") and own.may_retry("PUT")
