"""The fast exposition writers give prometheus_client's own bytes, in both formats."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest as library_text
from prometheus_client.openmetrics.exposition import generate_latest as library_openmetrics

from exporter.model.stats import HistogramData
from exporter.prometheus.exposition import (
    Family,
    Histograms,
    library_families,
    takes_fast_path,
    write_both,
)

AWKWARD = ['plain', 'with "quotes"', "back\\slash", "new\nline", "ünïcødé ✓", "", "a=b,c"]
VALUES = [0, 1, -1, 0.5, 1e-9, 123456789.0, 1e21, math.inf, -math.inf, math.nan, 2**53]


def histograms() -> list[Histograms]:
    """Histogram families as the renderer builds them: labels on both sides of `le`."""
    around = Histograms("celery_task_runtime_seconds", "Runtime\\ by\nhost.",
                        labels=("task", "hostname", "queue"))
    for index, value in enumerate(AWKWARD):
        counts = tuple((index + j) % 4 for j in range(4))
        around.add((value, AWKWARD[-index], "q"), HistogramData((0.005, 0.25, 1e21), counts, 1.5))
    around.add(("empty", "h", "q"), HistogramData((), (0,), 0.0))
    bare = Histograms("celery_task_queue_wait_seconds", "Wait.", labels=())
    bare.add((), HistogramData((1.0, 2.5), (1, 0, 2), math.inf))
    return [around, bare]


def families() -> list[Metric]:
    gauge = GaugeMetricFamily("celery_queue_jobs", 'Jobs "per" queue\\status\nsecond line',
                              labels=["queue", "status"])
    for index, queue in enumerate(AWKWARD):
        gauge.add_metric([queue, "waiting"], VALUES[index % len(VALUES)])
    counter = CounterMetricFamily("celery_tasks", "Tasks.", labels=["task", "outcome"])
    for index, value in enumerate(VALUES):
        counter.add_metric([AWKWARD[index % len(AWKWARD)], "failed"], value)
    histogram = HistogramMetricFamily("celery_task_runtime_seconds", "Runtime.",
                                      labels=["queue"])
    histogram.add_metric(["q"], [("0.005", 1), ("0.25", 3), ("+Inf", 4)], 1.25)
    histogram.add_metric(['"odd"'], [("0.005", 0), ("+Inf", 0)], 0)
    plain = GaugeMetricFamily("celery_exporter_up", "Up.", value=1)
    counter_plain = CounterMetricFamily("celery_exporter_events_received", "Events.", value=7)
    return [gauge, counter, histogram, plain, counter_plain]


def library(found: list[Metric]) -> tuple[bytes, bytes]:
    class Fixed:
        def collect(self) -> list[Metric]:
            return found

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return library_text(registry), library_openmetrics(registry)  # type: ignore[no-untyped-call]


def test_the_fast_path_writes_the_library_bytes() -> None:
    built: list[Family] = [*families(), *histograms()]
    assert takes_fast_path(built)
    assert write_both(built) == library(library_families([*families(), *histograms()]))


def test_histograms_with_negative_bounds_go_to_the_library() -> None:
    """The library leaves out _count and _sum there; the fast path does not guess."""
    negative = Histograms("celery_offsets", "Offsets.", labels=("queue",))
    negative.add(("q",), HistogramData((-1.0, 1.0), (1, 2, 3), 0.5))
    assert not takes_fast_path([negative])
    assert write_both([negative]) == library(library_families([negative]))


@pytest.mark.parametrize(
    "odd",
    [
        InfoMetricFamily("build", "Build.", value={"version": "1"}),
        GaugeMetricFamily("with_unit", "Unit.", value=1, unit="seconds"),
        CounterMetricFamily("created", "Created.", value=1, created=12.0),
    ],
    ids=["info", "unit", "created"],
)
def test_what_the_fast_path_does_not_cover_goes_to_the_library(odd: Metric) -> None:
    built = [*families(), odd]
    assert not takes_fast_path(built)
    assert write_both(built) == library([*families(), odd])
