"""Bounds on label values, so /metrics stays small whatever the broker holds.

Queue names come from kombu bindings, unacked entries, events and workers: anyone
who can write to the broker can invent them. Three limits keep the exposition
bounded (README, "Limits"):

- `--max-queues`: queues reported; configured ones always, the others first come,
  first served. A queue past the limit is not reported at all (no gauges, counters
  or jobs), and `celery_exporter_dropped_queue_names` says how many were refused.
- `--max-task-series`: (queue, task) pairs with series of their own; later pairs
  are counted as `task="other"` of their queue.
- `--max-label-length`: a longer label value is cut and ends with `~` and 8 hex
  digits of its hash, so two long names never merge into one series.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_MAX_QUEUES = 500
DEFAULT_MAX_TASK_SERIES = 800
DEFAULT_MAX_LABEL_LENGTH = 100
#: Distinct refused or folded values remembered for counting (beyond, counts stop growing).
MAX_REMEMBERED = 100_000


@dataclass(frozen=True)
class CardinalityLimits:
    """How many queues and (queue, task) pairs are reported, and how long a label may be."""

    max_queues: int = DEFAULT_MAX_QUEUES
    max_task_series: int = DEFAULT_MAX_TASK_SERIES
    max_label_length: int = DEFAULT_MAX_LABEL_LENGTH


class DistinctCount:
    """How many distinct strings were seen, remembering at most `MAX_REMEMBERED` hashes."""

    __slots__ = ("_hashes",)

    def __init__(self) -> None:
        self._hashes: set[int] = set()

    def add(self, value: str) -> None:
        """Count a value (once, however often it is added)."""
        if len(self._hashes) < MAX_REMEMBERED:
            self._hashes.add(hash(value))

    def __len__(self) -> int:
        return len(self._hashes)


class QueueAdmission:
    """Decides which queue names are reported: at most `max_queues`, configured first."""

    def __init__(self, max_queues: int, configured: Iterable[str] = ()) -> None:
        self._max = max_queues
        self._admitted: set[str] = set(configured)
        self._refused = DistinctCount()
        self._lock = threading.Lock()

    def admit(self, name: str) -> bool:
        """Whether `name` is reported; a new name is admitted while there is room."""
        if name in self._admitted:
            return True
        if len(self._admitted) >= self._max:  # full for good: refused without the lock
            self._refused.add(name)
            return False
        with self._lock:
            if name in self._admitted:
                return True
            if len(self._admitted) < self._max:
                self._admitted.add(name)
                return True
            self._refused.add(name)
            return False

    def admitted(self, names: Iterable[str]) -> set[str]:
        """The names of `names` that are reported."""
        return {name for name in names if self.admit(name)}

    @property
    def refused(self) -> int:
        """Distinct queue names refused so far."""
        return len(self._refused)


def label_value(value: str, max_length: int) -> str:
    """`value`, or its first characters and `~` + 8 hex digits of its hash if too long."""
    if len(value) <= max_length:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "replace"), digest_size=4).hexdigest()
    return value[: max(max_length - 9, 0)] + "~" + digest
