"""Monotonic task counters and latency histograms with bounded label cardinality."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from exporter.model.stats import HistogramData, TaskStatsData
from exporter.protocol.cardinality import DEFAULT_MAX_TASK_SERIES, DistinctCount
from exporter.protocol.exceptions import DEFAULT_MAX_EXCEPTION_TYPES

OTHER_TASK = "other"
#: (queue, task name) pairs whose label (and whether their counters exist) is remembered
#: for the event stream's hot path: a bound against a broker full of invented names.
MAX_REMEMBERED_PAIRS = 10_000


class Histogram:
    """A fixed-bucket histogram, cheap to observe."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Record one value (negative values, from clock skew, count as 0)."""
        if value < 0:
            value = 0.0
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def data(self) -> HistogramData:
        """A frozen copy."""
        return HistogramData(self._bounds, tuple(self._counts), self._sum)


class TaskStats:
    """Counters by (queue, task, outcome) and histograms, with bounded label values.

    Task names fold into `other` past `max_task_names` distinct names, and a (queue,
    task) pair into (queue, `other`) past `max_task_series` pairs.
    """

    def __init__(
        self,
        *,
        max_task_names: int,
        runtime_buckets: Sequence[float],
        queue_wait_buckets: Sequence[float],
        max_task_series: int = DEFAULT_MAX_TASK_SERIES,
        max_exception_types: int = DEFAULT_MAX_EXCEPTION_TYPES,
    ) -> None:
        self._max_task_names = max_task_names
        self._max_task_series = max_task_series
        self._runtime_buckets = tuple(runtime_buckets)
        self._queue_wait_buckets = tuple(queue_wait_buckets)
        self._task_names: set[str] = set()
        self._folded = DistinctCount()
        self._pairs: set[tuple[str, str]] = set()
        self._folded_pairs = DistinctCount()
        self._outcomes: dict[tuple[str, str, str], int] = {}
        self._recovered: dict[tuple[str, str], int] = {}
        self._max_exception_types = max_exception_types
        self._exception_types: set[str] = set()
        self._folded_exceptions = DistinctCount()
        self._failures: dict[tuple[str, str, str], int] = {}
        self._runtime: dict[tuple[str, str], Histogram] = {}
        self._queue_wait: dict[str, Histogram] = {}
        # A pair's label never changes once given (names and pairs are only ever
        # added, and the limits are fixed), nor do the counters `touch` created: both
        # are remembered, by queue then task name, so that each event costs two dict
        # lookups instead of three set lookups and six setdefaults.
        self._labels: dict[str, dict[str | None, str]] = {}
        self._touched: dict[str, dict[str | None, Sequence[str]]] = {}
        self._remembered = 0

    def task_label(self, name: str | None) -> str:
        """The label value for a task name: itself, or `other` once the limit is reached."""
        if name is None:
            return OTHER_TASK
        if name in self._task_names:
            return name
        if len(self._task_names) < self._max_task_names:
            self._task_names.add(name)
            return name
        self._folded.add(name)
        return OTHER_TASK

    def pair_label(self, queue: str, name: str | None) -> str:
        """The task label of a (queue, task) pair: `other` past the pair budget."""
        labels = self._labels.get(queue)
        if labels is not None:
            label = labels.get(name)
            if label is not None:
                return label
        label = self._new_pair_label(queue, name)
        if self._remembered < MAX_REMEMBERED_PAIRS:
            self._remembered += 1
            if labels is None:
                labels = self._labels[queue] = {}
            labels[name] = label
        return label

    def _new_pair_label(self, queue: str, name: str | None) -> str:
        label = self.task_label(name)
        if label == OTHER_TASK or (queue, label) in self._pairs:
            return label
        if len(self._pairs) < self._max_task_series:
            self._pairs.add((queue, label))
            return label
        self._folded_pairs.add(f"{queue}\x00{label}")
        return OTHER_TASK

    def touch(self, queue: str, task: str | None, outcomes: Sequence[str]) -> None:
        """Create a (queue, task) pair's counters at 0, so rates exist before the first end."""
        touched = self._touched.get(queue)
        if touched is not None and touched.get(task) is outcomes:
            return  # done before: counters are never removed
        label = self.pair_label(queue, task)
        self._recovered.setdefault((queue, label), 0)
        for outcome in outcomes:
            self._outcomes.setdefault((queue, label, outcome), 0)
        if self._remembered < MAX_REMEMBERED_PAIRS:
            self._remembered += 1
            if touched is None:
                touched = self._touched[queue] = {}
            touched[task] = outcomes

    def count(self, queue: str, task: str | None, outcome: str) -> None:
        """Add one to the (queue, task, outcome) counter."""
        key = (queue, self.pair_label(queue, task), outcome)
        self._outcomes[key] = self._outcomes.get(key, 0) + 1

    def count_recovered(self, queue: str, task: str | None) -> None:
        """Add one to the lost executions of (queue, task) whose real end came later."""
        key = (queue, self.pair_label(queue, task))
        self._recovered[key] = self._recovered.get(key, 0) + 1

    def count_failure(self, queue: str, task: str | None, exception: str) -> None:
        """Add one to the failures of (queue, task) with this exception class."""
        if exception not in self._exception_types:
            if len(self._exception_types) < self._max_exception_types:
                self._exception_types.add(exception)
            else:
                self._folded_exceptions.add(exception)
                exception = OTHER_TASK
        key = (queue, self.pair_label(queue, task), exception)
        self._failures[key] = self._failures.get(key, 0) + 1

    def observe_runtime(self, queue: str, task: str | None, seconds: float) -> None:
        """Record how long one execution took."""
        key = (queue, self.pair_label(queue, task))
        histogram = self._runtime.get(key)
        if histogram is None:
            histogram = self._runtime[key] = Histogram(self._runtime_buckets)
        histogram.observe(seconds)

    def observe_queue_wait(self, queue: str, seconds: float) -> None:
        """Record how long a job waited between becoming runnable and starting."""
        histogram = self._queue_wait.get(queue)
        if histogram is None:
            histogram = self._queue_wait[queue] = Histogram(self._queue_wait_buckets)
        histogram.observe(seconds)

    def data(self) -> TaskStatsData:
        """A frozen copy for a snapshot."""
        return TaskStatsData(
            outcomes=dict(self._outcomes),
            runtime={k: h.data() for k, h in self._runtime.items()},
            queue_wait={k: h.data() for k, h in self._queue_wait.items()},
            folded_task_names=len(self._folded),
            folded_task_series=len(self._folded_pairs),
            recovered=dict(self._recovered),
            failures=dict(self._failures),
            folded_exception_types=len(self._folded_exceptions),
        )
