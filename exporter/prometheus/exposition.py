"""Fast Prometheus text (0.0.4) and OpenMetrics writers for the families the exporter builds.

prometheus_client's writers check and escape every metric and label name of every
sample (they support UTF-8 names), about 15 to 25 µs a sample: at 200 queues x 200
task names that is 400 ms of the GIL per refresh, during which scrapes stall. The
exporter's names are fixed and valid, so here only label values are escaped, as the
library does it, and the bytes are the library's own (a test compares them). Anything
this fast path does not cover (units, exemplars, timestamps, names outside the
classic character set, OpenMetrics-only samples) is written by the library instead.

Histograms, most of the series, come as `Histograms`: bucket counts per label set,
written straight to lines (about 18 per series) without building the library's
`Sample`s first. `library_families` turns them into the library's families where the
library writes (the fallback, and the tests that compare bytes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
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


class BucketCounts(Protocol):
    """One histogram series: a count per upper bound, then the +Inf count, and the sum."""

    @property
    def bounds(self) -> tuple[float, ...]: ...

    @property
    def counts(self) -> tuple[int, ...]: ...

    @property
    def total(self) -> float: ...


@dataclass
class Histograms:
    """A histogram family kept as bucket counts, one `BucketCounts` per label values."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    series: list[tuple[tuple[str, ...], BucketCounts]] = field(default_factory=list)
    type = "histogram"
    unit = ""

    def add(self, label_values: tuple[str, ...], data: BucketCounts) -> None:
        """One series; label values in the order of `labels`."""
        self.series.append((label_values, data))

    def to_library(self) -> HistogramMetricFamily:
        """The same family as prometheus_client builds it."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labels))
        for label_values, data in self.series:
            family.add_metric(list(label_values), _cumulative_buckets(data), data.total)
        return family


Family = Metric | Histograms


def _bound(value: float) -> str:
    return repr(float(value))


def _cumulative_buckets(data: BucketCounts) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(data.bounds, data.counts, strict=False):
        cumulative += count
        buckets.append((_bound(bound), cumulative))
    buckets.append(("+Inf", cumulative + data.counts[-1]))
    return buckets


def library_families(families: Iterable[Family]) -> list[Metric]:
    """The families as prometheus_client's own `Metric`s."""
    return [f.to_library() if isinstance(f, Histograms) else f for f in families]


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _check_label_names(names: Iterable[str], checked: set[str]) -> None:
    """Raise _NotPlain for a label name outside the classic set; remember the good ones."""
    for name in names:
        if name not in checked:
            if not _CLASSIC_LABEL.match(name):
                raise _NotPlain(name)
            checked.add(name)


def _histogram_lines(family: Histograms, label_names: set[str]) -> str:
    """The lines the library writes for a histogram family; raises _NotPlain."""
    if not _CLASSIC_NAME.match(family.name) or "le" in family.labels:
        raise _NotPlain(family.name)
    _check_label_names(family.labels, label_names)
    # The library writes labels sorted by name, `le` among them.
    order = sorted(range(len(family.labels)), key=lambda i: family.labels[i])
    before = [i for i in order if family.labels[i] < "le"]
    after = [i for i in order if family.labels[i] > "le"]
    bucket, count, total = (f"{family.name}_{kind}" for kind in ("bucket", "count", "sum"))
    # Series share their bounds and most counts are small integers: format each once.
    bound_texts: dict[tuple[float, ...], list[str]] = {}
    numbers: dict[int, str] = {}
    lines: list[str] = []
    for values, data in family.series:
        if data.bounds and data.bounds[0] < 0:
            raise _NotPlain(family.name)  # the library leaves out _count and _sum then
        les = bound_texts.get(data.bounds)
        if les is None:
            les = bound_texts[data.bounds] = [*map(_bound, data.bounds), "+Inf"]
        escaped = [_escape_value(value) for value in values]
        head = "".join(f'{family.labels[i]}="{escaped[i]}",' for i in before)
        tail = "".join(f',{family.labels[i]}="{escaped[i]}"' for i in after)
        plain = ",".join(f'{family.labels[i]}="{escaped[i]}"' for i in order)
        cumulative = 0
        for le, value in zip(les, data.counts, strict=True):
            cumulative += value
            number = numbers.get(cumulative)
            if number is None:
                number = numbers[cumulative] = _number(cumulative)
            lines.append(f'{bucket}{{{head}le="{le}"{tail}}} {number}\n')
        labels = f"{{{plain}}}" if plain else ""
        lines.append(f"{count}{labels} {number}\n")
        lines.append(f"{total}{labels} {_number(data.total)}\n")
    return "".join(lines)


def _sample_lines(family: Family, label_names: set[str]) -> str:
    """The family's sample lines, the same in both formats; raises _NotPlain."""
    if isinstance(family, Histograms):
        return _histogram_lines(family, label_names)
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
        _check_label_names(labels, label_names)
        pairs = ",".join(
            f'{key}="{_escape_value(value)}"' for key, value in sorted(labels.items())
        )
        lines.append(f"{sample.name}{{{pairs}}} {_number(sample.value)}\n")
    return "".join(lines)


def takes_fast_path(families: Sequence[Family]) -> bool:
    """Whether `write_both` formats these families itself rather than through the library."""
    label_names: set[str] = set()
    try:
        for family in families:
            _sample_lines(family, label_names)
    except _NotPlain:
        return False
    return True


def write_both(families: Sequence[Family]) -> tuple[bytes, bytes]:
    """(Prometheus text 0.0.4, OpenMetrics 1.0) of the families, as prometheus_client has them.

    Sample lines are the same in both formats and are formatted once; only the
    HELP/TYPE headers (counter names, HELP escaping) and the final `# EOF` differ.
    """
    label_names: set[str] = set()
    try:
        blocks = [(family, _sample_lines(family, label_names)) for family in families]
    except _NotPlain:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(library_families(families)))
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
