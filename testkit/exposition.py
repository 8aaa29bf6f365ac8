"""The Prometheus text exposition (what /metrics serves), parsed into samples.

One parser for the tests and the benchmarks: prometheus_client's own, so a page that
it cannot parse fails loudly instead of being half read. A page becomes
``{(sample name, labels): value}``: a histogram's ``_bucket``, ``_sum`` and ``_count``
lines and a counter's ``_total`` line keep their own names.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

#: (sample name, its labels as a frozenset of (name, value) pairs).
SampleKey = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[SampleKey, float]

#: The six statuses `celery_queue_jobs` reports for every queue.
QUEUE_STATUSES = ("waiting", "active", "delayed", "paused", "completed", "failed")


def parse_metrics(text: str) -> Samples:
    """Exposition text → {(sample name, labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample_key(sample.name, **sample.labels)] = sample.value
    return samples


def sample_key(name: str, **labels: str) -> SampleKey:
    """The key of one sample in `Samples`."""
    return (name, frozenset(labels.items()))


def value(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float:
    """One sample's value, its labels exactly these; KeyError naming it when it is missing."""
    key = sample_key(name, **labels)
    if key not in samples:
        raise KeyError(f"no sample {name}{labels}")
    return samples[key]


def total(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def queue_counts(samples: Mapping[SampleKey, float], queue: str) -> dict[str, int]:
    """The six status counts of one queue."""
    return {
        status: int(value(samples, "celery_queue_jobs", queue=queue, status=status))
        for status in QUEUE_STATUSES
    }
