"""bench.soak: a one-minute soak (30 s on each store kind) passes every check, and its figures say so; each
check fails when its figure is wrong; the 10-minute soak (marked `long`). (The Redis-pool defect the soak
found is proven in test_faults_stores.py, the token cache's in tests/unit/test_tokens.py.)"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from bench.soak import GatewayLog, KindResult, Mix, Sample, Tally, Timing, joined, judge, key_bound
from tests.servers import require_binary

ROOT = Path(__file__).parents[2]
KINDS = ("embedded", "real")
REQUESTS = ("sms", "login", "refresh", "logout", "after logout", "required", "optional", "public", "anonymous")
KEY_PREFIXES = {"gw:spent", "gw:successor", "gw:limits", "gw:code-attempts", "app", "gw:revocations"}


def run_soak(folder: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    for binary, package in (("redis-server", "redis-server"), ("mariadbd", "mariadb-server")):
        require_binary(binary, package)
    summary = folder / "soak.json"
    result = subprocess.run([sys.executable, "-m", "bench.soak", *args, "--json", str(summary)], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert summary.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads(summary.read_text())


@pytest.fixture(scope="module")
def one_minute(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return run_soak(tmp_path_factory.mktemp("soak"), "--seconds", "30", "--stores", "both", timeout=300)


def steady(samples: list[list[float]], warm_up: float) -> list[list[float]]:
    return [s for s in samples if s[0] >= warm_up]


def test_the_one_minute_soak_passes_every_check_on_both_store_kinds(one_minute: Any) -> None:
    result, report = one_minute
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert report["ok"] and report["failed"] == []
    assert report["seconds_per_kind"] == 30 and sorted(report["kinds"]) == sorted(KINDS)
    for kind in KINDS:
        checks = {c["name"]: c["ok"] for c in report["kinds"][kind]["checks"]}
        assert checks == dict.fromkeys(("no_5xx", "no_lost_requests", "answers_as_expected",
                                        "gateway_counted_every_answer", "rss_growth", "fds_flat", "keys_bounded",
                                        "clean_log"), True), kind
    assert "every check passed" in result.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_every_request_started_got_the_answer_the_mix_expects(one_minute: Any, kind: str) -> None:
    data = one_minute[1]["kinds"][kind]
    assert data["sent"] == data["answered"] > 1000
    assert data["connection_errors"] == data["timeouts"] == data["not_started"] == 0
    assert data["unexpected"] == {}
    assert not [s for s in data["statuses"] if int(s) >= 500] and data["gateway_5xx"] == 0
    assert data["counted_by_gateway"] == data["answered"]  # the gateway's own count of what it answered
    assert all(data["kinds"].get(name, 0) > 0 for name in REQUESTS), data["kinds"]
    assert data["target_rps"] == pytest.approx(data["capacity_rps"] / 2, abs=0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_memory_and_descriptors_hold_steady(one_minute: Any, kind: str) -> None:
    data = one_minute[1]["kinds"][kind]
    rss = steady(data["rss_mib"], data["timing"]["warm_up"])
    assert rss and (rss[-1][1] - rss[0][1]) / rss[0][1] < 0.10, data["rss_mib"]
    start, end = data["fds"]["start"], data["fds"]["end"]
    assert abs(end["other"] - start["other"]) <= 2 and end.get("client", 0) == 0, (start, end)
    assert end.get("upstream", 0) <= 64
    # expired tokens leave the cache (the defect the soak found): it holds about the live ones, far below
    # one entry per token issued
    issued = data["kinds"]["login"] + data["kinds"]["refresh"]
    assert max(size for _, size in data["token_cache"]) < issued / 2


def test_redis_keys_stay_under_their_bound_and_stop_growing(one_minute: Any) -> None:
    data = one_minute[1]["kinds"]["real"]
    keys = data["keys"]
    assert max(n for _, n in keys["samples"]) <= keys["bound"]
    counts = [n for _, n in steady(keys["samples"], data["timing"]["warm_up"])]
    half = len(counts) // 2
    assert half >= 3 and max(counts[half:]) <= max(counts[:half]) * 1.1 + 20, keys["samples"]
    assert set(keys["by_prefix"]) <= KEY_PREFIXES, keys["by_prefix"]
    assert one_minute[1]["kinds"]["embedded"]["keys"] is None  # memory://: no honest handle, said so


@pytest.mark.parametrize("kind", KINDS)
def test_codes_came_from_the_log_alone_and_the_log_is_clean(one_minute: Any, kind: str) -> None:
    data = one_minute[1]["kinds"][kind]
    assert data["log"]["error_lines"] == 0 and data["log"]["token_lines"] == 0
    assert data["log"]["codes_seen"] >= data["kinds"]["login"]  # every login used a code read from the log


@pytest.mark.long
def test_the_ten_minute_soak_passes_every_check_on_both_store_kinds(tmp_path: Path) -> None:
    result, report = run_soak(tmp_path, "--minutes", "10", "--stores", "both", timeout=2 * 600 + 300)
    assert result.returncode == 0 and report["ok"], result.stdout[-6000:]
    for kind in KINDS:
        data = report["kinds"][kind]
        assert data["timing"]["horizon"] == 120 and data["open_seconds"] == 590
        assert data["sent"] == data["answered"] and data["unexpected"] == {}


# Each check of the soak, fed a run that is healthy but for one figure. The source of each: the soak's brief
# (bench/soak.py's docstring) or the promise the gateway makes (README).
def healthy() -> KindResult:
    timing = Timing.for_run(26)
    r = KindResult("real", timing, capacity_rps=200, target_rps=100, achieved_rps=100, open_seconds=26, users=50,
                   devices=40, tally=Tally(sent=1000, answered=1000), counted_by_gateway=1000)
    r.tally.statuses.update({200: 900, 201: 100})
    r.samples = [Sample(float(at), 70 * 2**20, 40, 300, 5, 100.0) for at in range(27)]
    r.fds_start = {"total": 40, "other": 18, "upstream": 20, "redis": 2}
    r.fds_end = dict(r.fds_start)
    return r


def _lose_one(r: KindResult) -> None:
    r.tally.answered -= 1
    r.counted_by_gateway -= 1  # what the client never got, the gateway never answered


def _grow_keys(r: KindResult) -> None:
    r.samples = [Sample(s.at, s.rss, s.fds, 300 + 40 * int(s.at), 5, 100.0) for s in r.samples]


FAULTS: list[tuple[str, Callable[[KindResult], None], str, str]] = [
    ("a 502 the client saw", lambda r: r.tally.statuses.update({502: 1}), "no_5xx", "README: 5xx only when broken"),
    ("a 503 only /metrics counted", lambda r: setattr(r, "gateway_5xx", 1.0), "no_5xx", "README: /metrics"),
    ("a request with no answer", _lose_one, "no_lost_requests", "brief: lost"),
    ("a scheduled request not sent", lambda r: setattr(r.tally, "not_started", 1), "no_lost_requests",
     "brief: open loop"),
    ("a 401 where 200 was due", lambda r: r.tally.wrong("required answered 401", "{}"), "answers_as_expected",
     "README: X-User-Id from a valid token"),
    ("the gateway counted fewer", lambda r: setattr(r, "counted_by_gateway", 998.0), "gateway_counted_every_answer",
     "README: gateway_requests_total"),
    ("RSS up 12%", lambda r: setattr(r.samples[-1], "rss", int(70 * 2**20 * 1.12)), "rss_growth", "brief: RSS 10%"),
    ("3 more files open", lambda r: r.fds_end.update(other=21), "fds_flat", "brief: fds flat"),
    ("a client connection left", lambda r: r.fds_end.update(client=1), "fds_flat", "brief: fds flat"),
    ("more upstream connections than allowed", lambda r: r.fds_end.update(upstream=65), "fds_flat",
     "README: upstreams.NAME.max_connections"),
    ("keys over the bound", lambda r: setattr(r.samples[3], "keys", key_bound(r) + 1), "keys_bounded",
     "brief: keys bounded"),
    ("keys growing", _grow_keys, "keys_bounded", "brief: keys stop growing"),
    ("an ERROR line", lambda r: r.log_errors.append('{"level": "ERROR"}'), "clean_log",
     "standards: no client behaviour logs an ERROR"),
    ("a token in the log", lambda r: setattr(r, "token_lines", 1), "clean_log", "OWASP ASVS 7.1.1: no tokens in logs"),
]


def test_a_healthy_run_passes_every_check() -> None:
    assert [c.name for c in judge(healthy()) if not c.ok] == []


@pytest.mark.parametrize("fault, spoil, check, source", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_check_fails_on_its_fault_alone(fault: str, spoil: Callable[[KindResult], None], check: str,
                                             source: str) -> None:
    run = healthy()
    spoil(run)
    assert [c.name for c in judge(run) if not c.ok] == [check]


@pytest.mark.parametrize("line, codes, errors, tokens", [
    pytest.param(b'{"level": "WARNING", "logger": "gateway.sms", "message": "[development sms sender] code for '
                 b'13900000001 is 012345"}', {"13900000001": "012345"}, 0, 0, id="README sms.sender log: a code"),
    pytest.param(b'{"level": "ERROR", "logger": "gateway", "message": "boom"}', {}, 1, 0, id="an ERROR line"),
    pytest.param(b"Traceback (most recent call last):", {}, 1, 0, id="a traceback on stderr"),
    pytest.param(b'{"level": "INFO", "message": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"}', {}, 0, 1,
                 id="OWASP ASVS 7.1.1 a token in the log"),
    pytest.param(b'{"level": "WARNING", "message": "code for 1390000 is 1"}', {}, 0, 0, id="not a code line"),
])
def test_the_log_reader_finds_codes_errors_and_tokens(tmp_path: Path, line: bytes, codes: dict[str, str],
                                                      errors: int, tokens: int) -> None:
    path = tmp_path / "gateway.log"
    path.write_bytes(line + b"\n" + line[:10])  # and the start of a line still being written
    log = GatewayLog(path)
    log.poll()
    assert (log.codes, len(log.errors), log.token_lines) == (codes, errors, tokens)
    with path.open("ab") as file:
        file.write(line[10:] + b"\n")
    log.poll()  # the rest of the line, once it is whole: read once
    assert (len(log.errors), log.token_lines) == (2 * errors, 2 * tokens)


def test_devices_join_the_open_loop_at_an_even_pace_not_as_a_crowd() -> None:
    # 1,805 req/s for a 590 s open loop (the ten-minute soak's figures): a second's worth of devices at the
    # start, then about 150 new ones a second (each asks for a code and logs in) until 10,830 at 60 s
    counts = [joined(10_830, 1_805, 60.0, at / 10) for at in range(0, 900)]
    assert counts[0] == 1_805 and counts[600] == counts[-1] == 10_830
    steps = [b - a for a, b in itertools.pairwise(counts)]
    assert min(steps) >= 0 and max(steps) <= 16  # at most 16 new devices in a tenth of a second
    assert joined(100, 500, 60.0, 0.0) == 100  # never more than asked for


def test_devices_waiting_for_an_answer_stay_when_the_count_shrinks() -> None:
    mix = Mix(None, Timing.for_run(26), None, Tally())  # type: ignore[arg-type]
    mix.devices(10)
    waiting = [mix.pick() for _ in range(4)]
    mix.devices(2)  # six are idle: they leave, the four waiting stay
    assert mix.device_count == 4 and mix.pick() is None
    mix.devices(6)
    assert mix.device_count == 6 and mix.most_devices == 10
    assert all(d is not None for d in waiting)
