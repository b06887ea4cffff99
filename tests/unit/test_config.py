from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from tests.factories import SECRET, config_dict


def problems(raw: object, env: dict[str, str] | None = None, dev: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env=env or {}, dev=dev)
    return info.value.problems


def test_the_shipped_gateway_yaml_is_valid() -> None:
    config = load_config(str(Path(__file__).parents[2] / "gateway.yaml"), env={"GATEWAY_JWT_SECRET": SECRET})
    assert config.jwt.access_ttl == 7200 and config.jwt.refresh_ttl == 14 * 86400
    assert [r.path for r in config.routes] == ["/v1_0/channels", "/v1_0/articles", "/v1_0/user/channels", "/"]
    assert config.routes[2].auth == {"GET": "optional", "*": "required"}
    assert [t.url for t in config.upstreams["news"].targets] == ["http://127.0.0.1:9000"]
    assert config.jwt.accept_legacy_tokens is True


def test_environment_references_expand_with_defaults() -> None:
    raw = config_dict()
    raw["jwt"]["secret"] = "${MY_SECRET}"
    raw["database"]["url"] = "${DB_URL:-sqlite:///fallback.db}"
    config = parse_config(raw, env={"MY_SECRET": SECRET})
    assert config.jwt.signing_key.signing == SECRET
    assert config.database.url == "sqlite:///fallback.db"


def test_an_unset_variable_without_default_is_an_error_at_its_place() -> None:
    raw = config_dict()
    raw["jwt"]["secret"] = "${NOT_SET_ANYWHERE}"
    assert "jwt.secret: environment variable NOT_SET_ANYWHERE is not set" in problems(raw)


def test_environment_overrides_the_file() -> None:
    env = {
        "GATEWAY_HOST": "0.0.0.0", "GATEWAY_PORT": "9100", "GATEWAY_JWT_SECRET": "y" * 40,
        "GATEWAY_REDIS_URL": "redis://127.0.0.1:6380/1", "GATEWAY_DATABASE_URL": "mysql://u:p@db:3306/toutiao",
    }
    config = parse_config(config_dict(), env=env)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9100)
    assert config.jwt.signing_key.signing == "y" * 40
    assert config.redis.url == "redis://127.0.0.1:6380/1"
    assert config.database.url == "mysql://u:p@db:3306/toutiao"


def test_every_problem_is_reported_at_once_with_its_place() -> None:
    raw = config_dict()
    raw["jwt"]["secret"] = "short"
    raw["jwt"]["access_ttl"] = "forever"
    raw["server"]["port"] = 70000
    raw["server"]["prot"] = 1
    raw["routes"][2]["upstream"] = "nwes"
    raw["routes"][3]["auth"] = "sometimes"
    raw["upstreams"]["news"]["targets"] = ["ftp://x"]
    found = problems(raw)
    assert "routes[2].upstream: unknown upstream 'nwes'" in found
    assert "jwt.secret: must be at least 32 bytes for HS256" in found
    assert any(p.startswith("jwt.access_ttl: must be a duration") for p in found)
    assert "server.port: must be between 0 and 65535" in found
    assert "server.prot: unknown key" in found
    assert any(p.startswith("routes[3].auth.*: must be one of public, optional, required") for p in found)
    assert any(p.startswith("upstreams.news.targets[0]: must be http://host:port or https://") for p in found)
    assert len(found) == 7


@pytest.mark.parametrize("value, accepted", [(True, True), (False, False), ("false", False), ("maybe", None), (0, None)])
def test_accept_legacy_tokens_is_a_boolean(value: object, accepted: bool | None) -> None:
    raw = config_dict()
    raw["jwt"]["accept_legacy_tokens"] = value
    if accepted is None:
        assert problems(raw) == ["jwt.accept_legacy_tokens: must be true or false"]
    else:
        assert parse_config(raw, env={}).jwt.accept_legacy_tokens is accepted


def test_a_missing_secret_is_refused_unless_dev_mode_makes_one_up() -> None:
    raw = config_dict()
    del raw["jwt"]["secret"]
    assert problems(raw) == ["jwt.secret: is required (set GATEWAY_JWT_SECRET, or run with --dev)"]
    config = parse_config(raw, env={}, dev=True)
    assert config.jwt.generated and len(config.jwt.signing_key.signing.encode()) >= 64


def test_dev_mode_keeps_a_configured_secret() -> None:
    config = parse_config(config_dict(), env={}, dev=True)
    assert config.jwt.signing_key.signing == SECRET and not config.jwt.generated


@pytest.mark.parametrize(
    "path, message",
    [
        (["routes"], "routes: must be a list"),
        (["upstreams"], "upstreams: must be a mapping of name to upstream"),
        (["jwt"], "jwt: must be a mapping"),
    ],
)
def test_sections_of_the_wrong_shape(path: list[str], message: str) -> None:
    raw = config_dict()
    raw[path[0]] = "oops"
    assert message in problems(raw)


def test_duplicate_route_paths_and_bad_algorithm() -> None:
    raw = config_dict()
    raw["routes"].append({"path": "/v1_0/channels/", "upstream": "news", "auth": "public"})
    raw["jwt"]["algorithm"] = "none"
    found = problems(raw)
    assert "routes[9].path: duplicates routes[0].path" in found
    assert "jwt.algorithm: must be one of HS256, HS384, HS512" in found


def test_auth_defaults_to_required_for_unnamed_methods() -> None:
    raw = config_dict()
    raw["routes"] = [{"path": "/x", "upstream": "news", "auth": {"GET": "public"}}, {"path": "/y", "upstream": "news"}]
    config = parse_config(raw, env={})
    assert config.routes[0].auth == {"GET": "public", "*": "required"}
    assert config.routes[1].auth == {"*": "required"}


def test_load_config_reports_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.yaml"), env={})
    assert "cannot read" in info.value.problems[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad), env={})
    assert "not valid YAML" in info.value.problems[0]


def test_replica_needs_a_real_primary_and_urls_need_known_schemes() -> None:
    raw = config_dict(redis_url="memory://", database_url="postgres://x")
    raw["redis"]["replica_url"] = "redis://127.0.0.1:6380/0"
    found = problems(raw)
    assert "redis.replica_url: needs a real Redis in redis.url" in found
    assert "database.url: must start with one of sqlite://, mysql://" in found


def test_refresh_ttl_must_outlive_access_ttl() -> None:
    raw = config_dict()
    raw["jwt"]["refresh_ttl"] = "1h"
    assert "jwt.refresh_ttl: must be longer than jwt.access_ttl" in problems(raw)


def test_sms_code_ttl_is_capped_at_ten_minutes() -> None:
    raw = config_dict()
    raw["sms"]["code_ttl"] = 601
    assert "sms.code_ttl: must be at most 600 seconds (NIST SP 800-63B)" in problems(raw)
    raw["sms"]["code_ttl"] = "10m"
    assert parse_config(raw, env={}).sms.code_ttl == 600


def test_limits_and_trusted_proxies() -> None:
    raw = config_dict(server={"trusted_proxies": ["10.0.0.0/8", "::1", "bogus"]},
                      limits={"sms": [{"rate": "often", "key": "ip"}, {"rate": "1/minute", "key": "user"}],
                              "login_failures": "3/day"},
                      revocation={"on_redis_down": "maybe"})
    raw["routes"][0]["limits"] = [{"rate": "5/second", "key": "mobile"}]
    found = problems(raw)
    assert "server.trusted_proxies[2]: must be an IP address or CIDR block, got 'bogus'" in found
    assert "limits.sms[0].rate: must be a rate such as 10/minute or 100 per hour, got 'often'" in found
    assert "limits.sms[1].key: must be one of mobile, ip" in found
    assert "routes[0].limits[0].key: must be one of ip, user" in found
    assert "revocation.on_redis_down: must be one of reject, allow" in found
    good = config_dict(server={"trusted_proxies": ["10.0.0.0/8"]}, limits={"login_failures": "3/day"})
    config = parse_config(good, env={})
    assert str(config.server.trusted_proxies[0]) == "10.0.0.0/8"
    assert config.limits.login_failures is not None and config.limits.login_failures.amount == 3
    assert [str(limit) for limit in parse_config(config_dict() | {"limits": None}, env={}).limits.sms] == [
        "1 per 1 minute by mobile", "100 per 1 hour by ip"]


def test_upstream_keys() -> None:
    raw = config_dict()
    raw["upstreams"]["news"] = {
        "targets": ["http://a:1", {"url": "http://b:2", "weight": 3}],
        "balance": "least_connections",
        "timeouts": {"connect": "1s", "read": "10s", "first_byte": "2s", "total": "1m"},
        "health_check": {"path": "/health", "interval": "2s"},
        "passive": {"consecutive_failures": 5, "cooldown": "10s"},
        "retry_methods": ["get", "HEAD"],
        "max_body_size": "10m",
    }
    raw["routes"][0].update({"timeouts": {"total": "5s"}, "max_body_size": "1k", "retry_non_idempotent": True})
    config = parse_config(raw, env={})
    news = config.upstreams["news"]
    assert [(t.url, t.weight) for t in news.targets] == [("http://a:1", 1), ("http://b:2", 3)]
    assert news.balance == "least_connections" and news.max_body_size == 10 * 1024**2
    assert (news.timeouts.connect, news.timeouts.first_byte, news.timeouts.total) == (1.0, 2.0, 60.0)
    assert news.health_check is not None and news.health_check.path == "/health"
    assert news.health_check.unhealthy_threshold == 3
    assert news.retry_methods == {"GET", "HEAD"}
    route = config.routes[0]
    assert route.timeouts is not None and route.timeouts.total == 5.0 and route.timeouts.connect == 1.0
    assert route.max_body_size == 1024 and route.retry_non_idempotent


def test_upstream_and_server_errors() -> None:
    raw = config_dict(server={"workers": 4})
    raw["upstreams"]["news"].update({"balance": "fastest", "max_body_size": "lots",
                                     "targets": [{"url": "http://a:1", "weight": 0}],
                                     "health_check": {"path": "health"}, "retry_methods": ["GET", "NOT A METHOD"]})
    raw["redis"] = {"sentinel": {"hosts": ["nohost"]}, "url": "redis://x:1/0"}
    found = problems(raw)
    assert "upstreams.news.balance: must be one of round_robin, least_connections, random_two_choices" in found
    assert "upstreams.news.max_body_size: must be a size such as 512k, 10m or 1g, got 'lots'" in found
    assert "upstreams.news.targets[0].weight: must be between 1 and 1000" in found
    assert "upstreams.news.health_check.path: must start with /" in found
    assert "upstreams.news.retry_methods[1]: is not an HTTP method" in found
    assert "redis.sentinel.hosts[0]: must be host:port, got 'nohost'" in found
    assert "redis.sentinel: replaces redis.url and redis.replica_url: give one or the other" in found


def test_workers_need_a_shared_redis_and_free_worker_ids() -> None:
    found = problems(config_dict(server={"workers": 2}))
    assert "server.workers: more than 1 needs a shared Redis: memory:// lives inside one process" in found
    raw = config_dict(server={"workers": 4}, redis_url="redis://127.0.0.1:6379/0", ids={"worker_id": 30})
    assert any(p.startswith("server.workers: worker i uses snowflake worker id") for p in problems(raw))
    config = parse_config(config_dict(server={"workers": 4}, redis_url="redis://127.0.0.1:6379/0"), env={})
    assert config.server.workers == 4
