"""A snapshot of the metrics in the Prometheus text format, made by prometheus-client."""
from __future__ import annotations

import itertools
from typing import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..metrics import BUCKETS, DEFINITIONS, Snapshot

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BOUNDS = [floatToGoString(bound) for bound in BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        for definition in DEFINITIONS:
            labels = list(definition.labels)
            family: Metric
            if definition.kind == "counter":
                family = CounterMetricFamily(definition.name, definition.help, labels=labels)
                values = snapshot.counters.get(definition.name, {})
                if not labels and not values:
                    values = {(): 0.0}
                for key, value in sorted(values.items()):
                    family.add_metric(list(key), value)
            elif definition.kind == "histogram":
                family = HistogramMetricFamily(definition.name, definition.help, labels=labels)
                for key, counts in sorted(snapshot.histograms.get(definition.name, {}).items()):
                    cumulative = list(itertools.accumulate(counts[:-1]))
                    family.add_metric(list(key), list(zip(_BOUNDS, cumulative, strict=True)), sum_value=counts[-1])
            else:
                family = GaugeMetricFamily(definition.name, definition.help, labels=labels)
                for key, value in sorted(snapshot.gauges.get(definition.name, [])):
                    family.add_metric(list(key), value)
            yield family


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
