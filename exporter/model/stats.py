"""Frozen task counters and latency histograms, as a snapshot carries them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HistogramData:
    """Cumulative-free bucket counts (one per bound, then +Inf), sum and count."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        """How many observations were made."""
        return sum(self.counts)



@dataclass(frozen=True)
class TaskStatsData:
    """A frozen copy of every counter and histogram."""

    outcomes: dict[tuple[str, str, str], int]
    runtime: dict[tuple[str, str], HistogramData]
    queue_wait: dict[str, HistogramData]
    folded_task_names: int
    folded_task_series: int = 0
    #: Lost executions whose real end arrived later, by (queue, task).
    recovered: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Failed executions by (queue, task, exception class).
    failures: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: Distinct exception classes counted as `other` past --max-exception-types.
    folded_exception_types: int = 0
