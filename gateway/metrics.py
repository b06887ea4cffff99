"""The gateway's metrics, counted in plain Python on the request path and exported by admin/.

Counting must cost next to nothing on a path of about fifty microseconds:
an increment here is a dict update on a tuple of label values, with no lock
(one event loop per process) and no label validation. prometheus-client
makes the text format from a snapshot when /metrics is asked (see
admin/exposition.py); with `server.workers: N` each worker writes its
snapshot to a file and the supervisor adds them up (admin/shared.py).

Gauges are not counted: they are read from the state they describe (the
token cache, the revocation list, the targets' health) when a snapshot is
taken, through the `gauges` function each generation sets.

Labels are bounded: a route is its configured path, a method outside the
standard ones is "other", a status is a number the gateway itself sent.
"""
from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import GatewayError, ServiceUnavailable, TooManyRequests, UserDisabled

VERSION = "0.1.0"
# Seconds. A gateway answers in well under a millisecond when it refuses, and in an upstream's time otherwise.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"))
UNMATCHED = "unmatched"  # the route label of a request that matched no route and no endpoint of the gateway

Key = tuple[str, ...]
GaugeValues = dict[str, list[tuple[Key, float]]]


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...] = ()
    combine: str = "sum"  # a gauge's value across workers: sum | min | max


DEFINITIONS = (
    Definition("gateway_requests_total", "counter", "Requests answered, by route, method and status.",
               ("route", "method", "status")),
    Definition("gateway_request_duration_seconds", "histogram",
               "Time from a request's head to the end of its answer, by route.", ("route",)),
    Definition("gateway_auth_decisions_total", "counter", "What authentication decided for proxied requests.",
               ("result",)),
    Definition("gateway_logins_total", "counter", "Logins by method (sms, password) and result.",
               ("method", "result")),
    Definition("gateway_refreshes_total", "counter", "Token refreshes by result.", ("result",)),
    Definition("gateway_sms_codes_total", "counter", "SMS code requests by result.", ("result",)),
    Definition("gateway_rate_limited_total", "counter", "Requests refused with 429, by the limit spent.",
               ("limit",)),
    Definition("gateway_upstream_requests_total", "counter",
               "Exchanges with upstreams by outcome (ok, refused, timeout, retried, no_healthy).",
               ("upstream", "outcome")),
    Definition("gateway_client_disconnects_total", "counter",
               "Clients that went away before their answer was written."),
    Definition("gateway_upstream_target_healthy", "gauge",
               "1 while a target may be picked (health check passing, not ejected), else 0.",
               ("upstream", "target"), combine="max"),
    Definition("gateway_revocation_in_sync", "gauge",
               "1 while the revocation list is in step with Redis (with workers: every worker), else 0.",
               combine="min"),
    Definition("gateway_token_cache_size", "gauge", "Verified tokens held in the cache (summed over workers)."),
    Definition("gateway_build_info", "gauge", "The gateway's version, as a label; the value is 1.", ("version",),
               combine="max"),
)
BY_NAME = {definition.name: definition for definition in DEFINITIONS}


class Counter(collections.defaultdict[Key, float]):
    """Counts by a tuple of label values. On the request path count with `counter[key] += 1`: a dict
    update in C, with no Python call."""

    def __init__(self, name: str) -> None:
        super().__init__(float)
        self.name = name


# A request's cell, by (route, method, status): its count, a count per bucket (not cumulative; the last is
# +Inf), and the sum of its durations. gateway_requests_total and the duration histogram are both read
# from the cells, so a request costs one dict look-up.
CELL = len(BUCKETS) + 3


def result_of(error: BaseException | None) -> str:
    """A login's, refresh's or SMS code request's result label, from the error that ended it (None: ok)."""
    if error is None:
        return "ok"
    if isinstance(error, TooManyRequests):
        return "limited"
    if isinstance(error, ServiceUnavailable):
        return "unavailable"
    if isinstance(error, UserDisabled):
        return "disabled"
    if isinstance(error, GatewayError):
        return "invalid"
    return "unavailable"  # a fault of the gateway's own (500): the user could not be served either


class Metrics:
    """One per process, kept across reloads: counters only grow. `enabled`: the process has an admin
    listener, or is a worker whose supervisor has one; without, requests are not observed at all (the few
    counters the stages keep are counted anyway: a dict update each)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.requests: dict[tuple[str, str, int], list[float]] = {}  # the cells, see CELL
        self.auth_decisions = Counter("gateway_auth_decisions_total")
        self.logins = Counter("gateway_logins_total")
        self.refreshes = Counter("gateway_refreshes_total")
        self.sms_codes = Counter("gateway_sms_codes_total")
        self.rate_limited = Counter("gateway_rate_limited_total")
        self.upstream_requests = Counter("gateway_upstream_requests_total")
        self.client_disconnects = Counter("gateway_client_disconnects_total")
        # the serving generation's gauges; a reload replaces the function
        self.gauges: Callable[[], GaugeValues] = lambda: {}

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request: its cell's count, its duration's bucket, and the sum of the durations.
        pipeline/observe.py does the same inline: a call here cost 2,400 instructions a request (1%)."""
        key = (route, method if method in METHODS else "other", status)
        cell = self.requests.get(key)
        if cell is None:
            cell = self.requests[key] = [0.0] * CELL
        cell[0] += 1
        cell[1 + bisect.bisect_left(BUCKETS, seconds)] += 1  # the first bucket holding this duration
        cell[-1] += seconds

    def counters(self) -> Iterable[Counter]:
        return (self.auth_decisions, self.logins, self.refreshes, self.sms_codes, self.rate_limited,
                self.upstream_requests, self.client_disconnects)

    def snapshot(self) -> Snapshot:
        requests: dict[Key, float] = {}
        durations: dict[Key, list[float]] = {}
        for (route, method, status), cell in self.requests.items():
            requests[(route, method, str(status))] = cell[0]
            into = durations.get((route,))
            durations[(route,)] = cell[1:] if into is None else [a + b for a, b in zip(into, cell[1:], strict=True)]
        gauges = self.gauges()
        gauges.setdefault("gateway_build_info", [((VERSION,), 1.0)])
        return Snapshot(
            counters={"gateway_requests_total": requests, **{c.name: dict(c) for c in self.counters()}},
            histograms={"gateway_request_duration_seconds": durations},
            gauges=gauges,
        )


@dataclass
class Snapshot:
    """The values of one process at one moment; snapshots of several workers add up with `merge`."""

    counters: dict[str, dict[Key, float]]
    histograms: dict[str, dict[Key, list[float]]]
    gauges: GaugeValues

    def to_json(self) -> dict[str, object]:
        return {
            "counters": {name: [[*key, value] for key, value in values.items()] for name, values in self.counters.items()},
            "histograms": {name: [[list(key), counts] for key, counts in values.items()]
                           for name, values in self.histograms.items()},
            "gauges": {name: [[list(key), value] for key, value in values] for name, values in self.gauges.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, dict[str, list[list[Any]]]]) -> Snapshot:
        """The inverse of `to_json`; raises ValueError, TypeError or KeyError on anything else."""
        def key(parts: list[Any]) -> Key:
            return tuple(str(part) for part in parts)

        return cls(
            counters={name: {key(row[:-1]): float(row[-1]) for row in rows}
                      for name, rows in data["counters"].items()},
            histograms={name: {key(row[0]): [float(n) for n in row[1]] for row in rows}
                        for name, rows in data["histograms"].items()},
            gauges={name: [(key(row[0]), float(row[1])) for row in rows] for name, rows in data["gauges"].items()},
        )


def merge(snapshots: Iterable[Snapshot], *, gauges_from: Iterable[Snapshot] | None = None) -> Snapshot:
    """Counters and histograms add up over `snapshots`; gauges combine (by each one's `combine`) over
    `gauges_from`, the snapshots of the workers alive now (all of `snapshots` when None)."""
    snapshots = list(snapshots)
    total = Snapshot({}, {}, {})
    for snapshot in snapshots:
        for name, values in snapshot.counters.items():
            into = total.counters.setdefault(name, {})
            for key, value in values.items():
                into[key] = into.get(key, 0) + value
        for name, buckets in snapshot.histograms.items():
            into_h = total.histograms.setdefault(name, {})
            for key, counts in buckets.items():
                have = into_h.get(key)
                into_h[key] = list(counts) if have is None else [a + b for a, b in zip(have, counts, strict=True)]
    combined: dict[str, dict[Key, float]] = {}
    for snapshot in snapshots if gauges_from is None else gauges_from:
        for name, readings in snapshot.gauges.items():
            rule = BY_NAME[name].combine if name in BY_NAME else "sum"
            into_g = combined.setdefault(name, {})
            for key, value in readings:
                have_g = into_g.get(key)
                if have_g is None:
                    into_g[key] = value
                elif rule == "min":
                    into_g[key] = min(have_g, value)
                elif rule == "max":
                    into_g[key] = max(have_g, value)
                else:
                    into_g[key] = have_g + value
    total.gauges = {name: list(values.items()) for name, values in combined.items()}
    return total
