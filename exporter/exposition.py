"""Fast Prometheus text (0.0.4) and OpenMetrics writers for the families the exporter builds.

prometheus_client's writers check and escape every metric and label name of every
sample (they support UTF-8 names), about 15 to 25 µs a sample: at 200 queues x 200
task names that is 400 ms of the GIL per refresh, during which scrapes stall. The
exporter's names are fixed and valid, so here only label values are escaped, as the
library does it, and the bytes are the library's own (a test compares them). Anything
this fast path does not cover (units, exemplars, timestamps, names outside the
classic character set, OpenMetrics-only samples) is written by the library instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest as library_text
from prometheus_client.openmetrics.exposition import generate_latest as library_openmetrics
from prometheus_client.utils import floatToGoString

#: The library's number format (Go's: +Inf, NaN, exponents past 1e+06 for positive values).
_number = cast(Callable[[float], str], floatToGoString)
_CLASSIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_CLASSIC_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TYPES = frozenset({"counter", "gauge", "histogram"})
_OPENMETRICS_ONLY_SUFFIXES = ("_created", "_gsum", "_gcount")


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _fast_path_covers(families: Sequence[Metric]) -> bool:
    """Whether every family and sample is of the plain kind this writer handles."""
    label_names: set[str] = set()
    for family in families:
        if family.type not in _TYPES or family.unit or not _CLASSIC_NAME.match(family.name):
            return False
        for sample in family.samples:
            if (
                sample.timestamp is not None
                or sample.exemplar is not None
                or sample.native_histogram is not None
                or sample.name.endswith(_OPENMETRICS_ONLY_SUFFIXES)
                or not sample.name.startswith(family.name)
                or not _CLASSIC_NAME.match(sample.name)
            ):
                return False
            label_names.update(sample.labels)
    return all(_CLASSIC_LABEL.match(name) for name in label_names)


def _sample_lines(family: Metric, out: list[str]) -> None:
    for sample in family.samples:
        labels = sample.labels
        if labels:
            pairs = ",".join(
                f'{key}="{_escape_value(value)}"' for key, value in sorted(labels.items())
            )
            out.append(f"{sample.name}{{{pairs}}} {_number(sample.value)}\n")
        else:
            out.append(f"{sample.name} {_number(sample.value)}\n")


def _text(families: Iterable[Metric]) -> bytes:
    out: list[str] = []
    for family in families:
        name = family.name + "_total" if family.type == "counter" else family.name
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n")
        _sample_lines(family, out)
    return "".join(out).encode("utf-8")


def _openmetrics(families: Iterable[Metric]) -> bytes:
    out: list[str] = []
    for family in families:
        help_text = _escape_value(family.documentation)
        out.append(f"# HELP {family.name} {help_text}\n# TYPE {family.name} {family.type}\n")
        _sample_lines(family, out)
    out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def write_both(families: Sequence[Metric]) -> tuple[bytes, bytes]:
    """(Prometheus text 0.0.4, OpenMetrics 1.0) of the families, as prometheus_client has them."""
    if _fast_path_covers(families):
        return _text(families), _openmetrics(families)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return library_text(registry), library_openmetrics(registry)  # type: ignore[no-untyped-call]


class _Fixed:
    """A collector that yields families already built."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)
