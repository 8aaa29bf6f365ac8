"""Bounded per-queue retention of finished jobs."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

from exporter.model.jobs import Job, RetentionLimits


class JobStore:
    """The newest finished jobs per queue: completed and failed, each bounded."""

    def __init__(self, limits: RetentionLimits) -> None:
        self.limits = limits
        self._completed: dict[str, deque[Job]] = {}
        self._failed: dict[str, deque[Job]] = {}

    def add(self, job: Job) -> None:
        """Keep a finished job (state `succeeded` or `failed`), evicting the oldest."""
        queue = job.queue or "unknown"
        if job.state == "failed":
            lists, limit = self._failed, self.limits.failed
        else:
            lists, limit = self._completed, self.limits.completed
        kept = lists.get(queue)
        if kept is None:
            kept = lists[queue] = deque(maxlen=limit)
        kept.append(job)

    def discard(self, job: Job) -> None:
        """Forget a kept job (one recorded as lost whose worker spoke again)."""
        lists = self._failed if job.state == "failed" else self._completed
        kept = lists.get(job.queue or "unknown")
        if kept is not None and job in kept:
            kept.remove(job)

    def restore(self, job: Job) -> None:
        """Put back a job kept before a restart, behind newer ones, within the limits."""
        queue = job.queue or "unknown"
        if job.state == "failed":
            lists, limit = self._failed, self.limits.failed
        else:
            lists, limit = self._completed, self.limits.completed
        kept = lists.get(queue)
        if kept is None:
            kept = lists[queue] = deque(maxlen=limit)
        if len(kept) < limit:
            kept.appendleft(job)

    def frozen(self) -> dict[str, tuple[tuple[Job, ...], tuple[Job, ...]]]:
        """(completed, failed) kept per queue, newest first: a copy of references."""
        queues = self._completed.keys() | self._failed.keys()
        return {
            q: (
                tuple(reversed(self._completed.get(q, ()))),
                tuple(reversed(self._failed.get(q, ()))),
            )
            for q in queues
        }

    def prune(self, now: float | None = None) -> None:
        """Drop jobs older than the maximum age, if one is set."""
        if not self.limits.max_age:
            return
        cutoff = (now if now is not None else time.time()) - self.limits.max_age
        for lists in (self._completed, self._failed):
            for kept in lists.values():
                while kept and (kept[0].finished_at or 0.0) < cutoff:
                    kept.popleft()

    def counts(self) -> dict[str, tuple[int, int]]:
        """(completed, failed) kept per queue."""
        queues = self._completed.keys() | self._failed.keys()
        return {
            q: (len(self._completed.get(q, ())), len(self._failed.get(q, ()))) for q in queues
        }

    def newest_first(self, queue: str, status: str) -> Iterator[Job]:
        """Kept jobs of one queue and status (`completed` or `failed`), newest first."""
        lists = self._failed if status == "failed" else self._completed
        return reversed(lists.get(queue, deque()))

    def __len__(self) -> int:
        return sum(len(d) for d in self._completed.values()) + sum(
            len(d) for d in self._failed.values()
        )
