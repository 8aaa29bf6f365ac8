"""How long the next job of each queue has waited, from O(1) reads of the list heads.

The broker read names, per queue, the message workers take next (its task id). Its
age counts from when it was published, where a `task-sent` event said so; otherwise
from when this sidecar first saw that message at the head: a lower bound then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.model.jobs import Job


@dataclass(frozen=True)
class HeadAge:
    """The age of a queue's next job, and whether it is only a lower bound."""

    seconds: float
    lower_bound: bool


class HeadClock:
    """Remembers when each queue's head message was first seen; computes head ages."""

    def __init__(self, lookup: Callable[[Iterable[str]], Mapping[str, Job]]) -> None:
        self._lookup = lookup
        self._first_seen: dict[str, tuple[str, float]] = {}

    def ages(self, heads: Mapping[str, str], now: float) -> dict[str, HeadAge]:
        """The age of each queue's head (queues without messages are absent)."""
        published = self._lookup(heads.values())
        ages: dict[str, HeadAge] = {}
        for queue, identity in heads.items():
            seen = self._first_seen.get(queue)
            if seen is None or seen[0] != identity:
                seen = self._first_seen[queue] = (identity, now)
            job = published.get(identity)
            if job is not None and job.sent_at is not None:
                ages[queue] = HeadAge(max(0.0, now - job.sent_at), lower_bound=False)
            else:
                ages[queue] = HeadAge(max(0.0, now - seen[1]), lower_bound=True)
        for queue in [q for q in self._first_seen if q not in heads]:
            del self._first_seen[queue]
        return ages
