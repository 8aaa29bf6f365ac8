"""The fast exposition writers against prometheus_client, for any label values and numbers.

The writers format label values and numbers themselves; prometheus_client's own
writers are the reference for the bytes, and its parsers for what a scraper reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    Sample,
)
from prometheus_client.exposition import generate_latest as library_text
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.openmetrics.exposition import generate_latest as library_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.model.stats import HistogramData
from exporter.prometheus.exposition import (
    Family,
    Histograms,
    library_families,
    takes_fast_path,
    write_both,
)

#: Any text a queue, task or worker name can hold (valid Unicode).
LABEL_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**64), max_value=2**64),
)
#: Label names on both sides of `le` in sort order.
LABEL_NAMES = ("alpha", "queue", "task", "zeta")
SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def library(families: Sequence[Metric]) -> tuple[bytes, bytes]:
    """prometheus_client's text and OpenMetrics bytes of these families."""

    class Fixed:
        def collect(self) -> Sequence[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return library_text(registry), library_openmetrics(registry)  # type: ignore[no-untyped-call]


@st.composite
def histogram_data(draw: st.DrawFn) -> HistogramData:
    bounds = draw(st.lists(st.floats(min_value=0.0, max_value=1e12), unique=True, max_size=5))
    counts = draw(st.lists(st.integers(0, 10**6), min_size=len(bounds) + 1,
                           max_size=len(bounds) + 1))
    total = draw(st.floats(min_value=0.0, allow_infinity=True, allow_nan=False))
    return HistogramData(tuple(sorted(bounds)), tuple(counts), total)


@st.composite
def families(draw: st.DrawFn) -> list[Family]:
    """A gauge, a counter and a histogram family with drawn label values and numbers."""
    gauge = GaugeMetricFamily("celery_queue_jobs", draw(LABEL_TEXT), labels=["queue", "status"])
    for _ in range(draw(st.integers(0, 4))):
        gauge.add_metric([draw(LABEL_TEXT), draw(LABEL_TEXT)], draw(NUMBERS))
    counter = CounterMetricFamily("celery_tasks", "Tasks.", labels=["queue", "task", "outcome"])
    for _ in range(draw(st.integers(0, 4))):
        counter.add_metric([draw(LABEL_TEXT) for _ in range(3)], draw(NUMBERS))
    names = draw(st.lists(st.sampled_from(LABEL_NAMES), unique=True, max_size=3))
    histogram = Histograms("celery_task_runtime_seconds", "Runtime.", labels=tuple(names))
    for _ in range(draw(st.integers(0, 3))):
        histogram.add(tuple(draw(LABEL_TEXT) for _ in names), draw(histogram_data()))
    return [gauge, counter, histogram]


@SETTINGS
@given(families())
def test_the_fast_path_writes_the_library_bytes_for_any_values(built: list[Family]) -> None:
    assert takes_fast_path(built)
    assert write_both(built) == library(library_families(built))


@SETTINGS
@given(st.lists(st.tuples(LABEL_TEXT, LABEL_TEXT), max_size=6))
def test_a_scraper_reads_back_every_label_value(pairs: list[tuple[str, str]]) -> None:
    """Quotes, backslashes, newlines and any Unicode survive the text format."""
    gauge = GaugeMetricFamily("celery_queue_jobs", "Jobs.", labels=["queue", "status"])
    for index, (queue, status) in enumerate(pairs):
        gauge.add_metric([queue, status], index)
    text, _openmetrics = write_both([gauge])
    [parsed] = text_string_to_metric_families(text.decode("utf-8"))
    assert [(s.labels["queue"], s.labels["status"], s.value) for s in parsed.samples] == [
        (queue, status, float(index)) for index, (queue, status) in enumerate(pairs)
    ]


def test_an_openmetrics_scraper_reads_every_family() -> None:
    gauge = GaugeMetricFamily("celery_queue_jobs", 'Jobs "by" status\\queue',
                              labels=["queue", "status"])
    gauge.add_metric(['we"ird\\q\nueue', "waiting"], 3)
    counter = CounterMetricFamily("celery_tasks", "Tasks.", labels=["outcome"])
    counter.add_metric(["succeeded"], 7)
    runtime = Histograms("celery_task_runtime_seconds", "Runtime.", labels=("queue",))
    runtime.add(("emails",), HistogramData((0.1, 1.0), (1, 2, 3), 4.5))
    _text, openmetrics = write_both([gauge, counter, runtime])
    parsed = {
        family.name: family
        for family in openmetrics_parser.text_string_to_metric_families(  # type: ignore[no-untyped-call]
            openmetrics.decode()
        )
    }
    assert parsed["celery_queue_jobs"].samples[0].labels["queue"] == 'we"ird\\q\nueue'
    assert parsed["celery_queue_jobs"].documentation == 'Jobs "by" status\\queue'
    assert parsed["celery_tasks"].samples[0].value == 7
    buckets = [(s.labels["le"], s.value) for s in parsed["celery_task_runtime_seconds"].samples
               if s.name.endswith("_bucket")]
    assert buckets == [("0.1", 1), ("1.0", 3), ("+Inf", 6)]


def test_histograms_count_cumulatively_up_to_inf() -> None:
    """Bucket counts are kept per bucket; the exposition's are cumulative."""
    runtime = Histograms("celery_task_runtime_seconds", "Runtime.", labels=("queue",))
    runtime.add(("emails",), HistogramData((0.1, 1.0, 10.0), (1, 0, 2, 3), 31.5))
    [sample_family] = library_families([runtime])
    samples = {(s.name, s.labels.get("le")): s.value for s in sample_family.samples}
    assert samples == {
        ("celery_task_runtime_seconds_bucket", "0.1"): 1,
        ("celery_task_runtime_seconds_bucket", "1.0"): 1,
        ("celery_task_runtime_seconds_bucket", "10.0"): 3,
        ("celery_task_runtime_seconds_bucket", "+Inf"): 6,
        ("celery_task_runtime_seconds_count", None): 6,
        ("celery_task_runtime_seconds_sum", None): 31.5,
    }
    text, _ = write_both([runtime])
    assert b'celery_task_runtime_seconds_bucket{le="+Inf",queue="emails"} 6.0\n' in text
    assert b'celery_task_runtime_seconds_count{queue="emails"} 6.0\n' in text


def test_nothing_to_write_is_an_empty_exposition() -> None:
    assert write_both([]) == library([]) == (b"", b"# EOF\n")


def test_families_without_samples_keep_their_help_and_type() -> None:
    empty: list[Family] = [
        GaugeMetricFamily("celery_queue_jobs", "Jobs.", labels=["queue"]),
        Histograms("celery_task_queue_wait_seconds", "Wait.", labels=("queue",)),
    ]
    assert takes_fast_path(empty)
    text, openmetrics = write_both(empty)
    assert (text, openmetrics) == library(library_families(empty))
    assert b"# TYPE celery_task_queue_wait_seconds histogram\n" in text


def _with_sample(family: Metric, sample: Sample) -> Metric:
    family.samples.append(sample)
    return family


def _odd_label_name() -> Metric:
    family = GaugeMetricFamily("celery_queue_jobs", "Jobs.", labels=["queue-name"])
    family.add_metric(["emails"], 1)
    return family


@pytest.mark.parametrize(
    "odd",
    [
        _odd_label_name(),
        _with_sample(GaugeMetricFamily("celery_up", "Up."), Sample("celery_up", {}, 1.0, 12.5)),
        _with_sample(GaugeMetricFamily("celery_up", "Up."), Sample("celery_other", {}, 1.0)),
        _with_sample(GaugeMetricFamily("celery.dotted", "Dotted."),
                     Sample("celery.dotted", {}, 1.0)),
    ],
    ids=["label-name-outside-the-classic-set", "timestamp", "foreign-sample-name",
         "metric-name-outside-the-classic-set"],
)
def test_what_the_fast_path_cannot_write_goes_to_the_library(odd: Metric) -> None:
    assert not takes_fast_path([odd])
    assert write_both([odd]) == library([odd])


def test_a_histogram_labelled_le_goes_to_the_library() -> None:
    """`le` is the bucket label: a family's own `le` label would be ambiguous."""
    clash = Histograms("celery_sizes", "Sizes.", labels=("le",))
    clash.add(("x",), HistogramData((1.0,), (1, 1), 2.0))
    assert not takes_fast_path([clash])


def test_one_odd_family_sends_them_all_to_the_library() -> None:
    plain = GaugeMetricFamily("celery_exporter_up", "Up.", value=1)
    odd = GaugeMetricFamily("celery_queue_jobs", "Jobs.", labels=["queue-name"])
    odd.add_metric(["emails"], math.inf)
    assert not takes_fast_path([plain, odd])
    assert write_both([plain, odd]) == library([plain, odd])
