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
#: The sample names each plain family type has (`_created` and the like are not plain).
_SAMPLE_SUFFIXES = {
    "gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
}


class _NotPlain(Exception):
    """A family or sample outside the fast path: the library writes the exposition."""


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample_lines(family: Metric, label_names: set[str]) -> str:
    """The family's sample lines, the same in both formats; raises _NotPlain."""
    suffixes = _SAMPLE_SUFFIXES.get(family.type)
    if suffixes is None or family.unit or not _CLASSIC_NAME.match(family.name):
        raise _NotPlain(family.name)
    names = {family.name + suffix for suffix in suffixes}
    lines: list[str] = []
    for sample in family.samples:
        if (
            sample.name not in names
            or sample.timestamp is not None
            or sample.exemplar is not None
            or sample.native_histogram is not None
        ):
            raise _NotPlain(sample.name)
        labels = sample.labels
        if not labels:
            lines.append(f"{sample.name} {_number(sample.value)}\n")
            continue
        for key in labels:
            if key not in label_names:
                if not _CLASSIC_LABEL.match(key):
                    raise _NotPlain(key)
                label_names.add(key)
        pairs = ",".join(
            f'{key}="{_escape_value(value)}"' for key, value in sorted(labels.items())
        )
        lines.append(f"{sample.name}{{{pairs}}} {_number(sample.value)}\n")
    return "".join(lines)


def takes_fast_path(families: Sequence[Metric]) -> bool:
    """Whether `write_both` formats these families itself rather than through the library."""
    label_names: set[str] = set()
    try:
        for family in families:
            _sample_lines(family, label_names)
    except _NotPlain:
        return False
    return True


def write_both(families: Sequence[Metric]) -> tuple[bytes, bytes]:
    """(Prometheus text 0.0.4, OpenMetrics 1.0) of the families, as prometheus_client has them.

    Sample lines are the same in both formats and are formatted once; only the
    HELP/TYPE headers (counter names, HELP escaping) and the final `# EOF` differ.
    """
    label_names: set[str] = set()
    try:
        blocks = [(family, _sample_lines(family, label_names)) for family in families]
    except _NotPlain:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(families))
        return library_text(registry), library_openmetrics(registry)  # type: ignore[no-untyped-call]
    text: list[str] = []
    openmetrics: list[str] = []
    for family, lines in blocks:
        name = family.name + "_total" if family.type == "counter" else family.name
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        text.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n{lines}")
        openmetrics.append(
            f"# HELP {family.name} {_escape_value(family.documentation)}\n"
            f"# TYPE {family.name} {family.type}\n{lines}"
        )
    openmetrics.append("# EOF\n")
    return "".join(text).encode("utf-8"), "".join(openmetrics).encode("utf-8")


class _Fixed:
    """A collector that yields families already built."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)
