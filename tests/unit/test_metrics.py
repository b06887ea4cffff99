"""The metrics' parts: counting, snapshots, adding workers up, the text format, and readiness."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.admin.exposition import render
from gateway.admin.readiness import Readiness
from gateway.admin.shared import SnapshotWriter, WorkerSnapshots
from gateway.errors import BadRequest, ServiceUnavailable, TooManyRequests, Unauthorized, UserDisabled
from gateway.metrics import BUCKETS, DEFINITIONS, Metrics, Snapshot, merge, result_of


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_requests_are_counted_with_bounded_labels() -> None:
    metrics = Metrics()
    metrics.request_done("/v1_0/news", "GET", 200, 0.0007)
    metrics.request_done("/v1_0/news", "GET", 200, 0.3)
    metrics.request_done("/v1_0/news", "BREW", 400, 0.0001)  # a method nobody standardised: "other"
    metrics.request_done("unmatched", "GET", 429, 0.0001)
    metrics.rate_limited[("route:/x",)] += 1
    metrics.client_disconnects[()] += 1
    found = samples(render(metrics.snapshot()))
    assert found[("gateway_requests_total", frozenset({("route", "/v1_0/news"), ("method", "GET"),
                                                       ("status", "200")}))] == 2
    assert found[("gateway_requests_total", frozenset({("route", "/v1_0/news"), ("method", "other"),
                                                       ("status", "400")}))] == 1
    assert found[("gateway_rate_limited_total", frozenset({("limit", "route:/x")}))] == 1
    assert found[("gateway_client_disconnects_total", frozenset())] == 1
    news = frozenset({("route", "/v1_0/news")})
    bucket = {le: found[("gateway_request_duration_seconds_bucket", news | {("le", le)})]
              for le in ("0.0005", "0.001", "0.25", "0.5", "+Inf")}
    assert bucket == {"0.0005": 1, "0.001": 2, "0.25": 2, "0.5": 3, "+Inf": 3}  # cumulative, as Prometheus wants
    assert found[("gateway_request_duration_seconds_count", news)] == 3
    assert abs(found[("gateway_request_duration_seconds_sum", news)] - 0.3008) < 1e-9


def test_every_metric_is_exposed_even_before_it_counts() -> None:
    text = render(Metrics().snapshot()).decode()
    for definition in DEFINITIONS:
        assert f"# TYPE {definition.name} {definition.kind}" in text
    assert 'gateway_build_info{version="0.1.0"} 1.0' in text


def test_a_snapshot_survives_json_and_workers_add_up() -> None:
    one, two = Metrics(), Metrics()
    one.request_done("/a", "GET", 200, 0.002)
    two.request_done("/a", "GET", 200, 0.004)
    two.request_done("/b", "POST", 201, 0.004)
    one.gauges = lambda: {"gateway_revocation_in_sync": [((), 1.0)], "gateway_token_cache_size": [((), 3.0)],
                          "gateway_upstream_target_healthy": [(("news", "http://t"), 0.0)]}
    two.gauges = lambda: {"gateway_revocation_in_sync": [((), 0.0)], "gateway_token_cache_size": [((), 4.0)],
                          "gateway_upstream_target_healthy": [(("news", "http://t"), 1.0)]}
    snapshots = [Snapshot.from_json(json.loads(json.dumps(m.snapshot().to_json()))) for m in (one, two)]
    total = merge(snapshots)
    assert total.counters["gateway_requests_total"] == {("/a", "GET", "200"): 2, ("/b", "POST", "201"): 1}
    a = total.histograms["gateway_request_duration_seconds"][("/a",)]
    assert sum(a[:-1]) == 2 and abs(a[-1] - 0.006) < 1e-9
    gauges = {name: dict(values) for name, values in total.gauges.items()}
    assert gauges["gateway_revocation_in_sync"] == {(): 0.0}  # in sync only if every worker is
    assert gauges["gateway_token_cache_size"] == {(): 7.0}  # summed
    assert gauges["gateway_upstream_target_healthy"] == {("news", "http://t"): 1.0}  # any worker may pick it
    assert gauges["gateway_build_info"] == {("0.1.0",): 1.0}
    assert len(BUCKETS) + 2 == len(a)


def test_the_supervisor_keeps_an_exited_workers_counts_but_not_its_gauges(tmp_path: Path) -> None:
    worker = Metrics()
    worker.request_done("/a", "GET", 200, 0.001)
    worker.gauges = lambda: {"gateway_token_cache_size": [((), 5.0)]}
    SnapshotWriter(str(tmp_path), worker).write()
    pid = os.getpid()
    snapshots = WorkerSnapshots(str(tmp_path))
    assert snapshots.total([pid]).counters["gateway_requests_total"] == {("/a", "GET", "200"): 1}
    assert dict(snapshots.total([pid]).gauges["gateway_token_cache_size"]) == {(): 5.0}
    snapshots.exited(pid)
    assert not (tmp_path / f"{pid}.json").exists()
    after = snapshots.total([])
    assert after.counters["gateway_requests_total"] == {("/a", "GET", "200"): 1}
    assert "gateway_token_cache_size" not in after.gauges
    (tmp_path / "999999.json").write_text("{not json")  # a torn or foreign file is skipped, not fatal
    assert snapshots.total([999999]).counters["gateway_requests_total"] == {("/a", "GET", "200"): 1}


def test_results_of_logins_refreshes_and_codes() -> None:
    assert result_of(None) == "ok"
    assert result_of(TooManyRequests(3)) == "limited"
    assert result_of(ServiceUnavailable()) == "unavailable"
    assert result_of(UserDisabled("Invalid user.")) == "disabled"
    assert result_of(BadRequest("Invalid code.")) == "invalid"
    assert result_of(Unauthorized()) == "invalid"
    assert result_of(RuntimeError("a fault of the gateway's own")) == "unavailable"


async def test_readiness_answers_within_the_timeout_whatever_a_probe_does() -> None:
    async def ok() -> None:
        return None

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def raises() -> None:
        raise ConnectionRefusedError("refused")

    readiness = Readiness(lambda: {"redis": hangs, "database": raises, "upstream news": ok}, timeout=0.05)
    assert await asyncio.wait_for(readiness.failing(), 5) == ["redis", "database"]
    readiness.draining = True
    assert await readiness.failing() == ["draining"]
