"""Finished jobs waiting to be saved to the job history."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from exporter.model.jobs import Job, RetentionLimits


class Outbox:
    """Finished jobs not persisted yet, per queue and state, each list bounded by the
    retention limit (older ones would not be kept anyway). Called with the tracker's
    lock held."""

    def __init__(self, limits: RetentionLimits) -> None:
        self._limits = limits
        self._unsaved: dict[tuple[str, str], deque[Job]] = {}

    def put(self, job: Job) -> None:
        """Add a job that just finished."""
        self._of(job).append(job)

    def discard(self, job: Job) -> None:
        """Never save a job an admin removed before it was saved."""
        unsaved = self._unsaved.get((job.queue or "unknown", job.state))
        if unsaved is not None and job in unsaved:
            unsaved.remove(job)

    def take(self) -> list[Job]:
        """Every job not persisted yet, grouped by queue and state; the outbox empties."""
        jobs = [job for kept in self._unsaved.values() for job in kept]
        self._unsaved.clear()
        return jobs

    def give_back(self, jobs: Sequence[Job]) -> None:
        """Put back jobs a failed save did not persist (oldest first), behind anything
        that finished since; a list already at its retention limit keeps its newer jobs."""
        for job in reversed(jobs):
            unsaved = self._of(job)
            if len(unsaved) < (unsaved.maxlen or 0):
                unsaved.appendleft(job)

    def _of(self, job: Job) -> deque[Job]:
        key = (job.queue or "unknown", job.state)
        unsaved = self._unsaved.get(key)
        if unsaved is None:
            limit = self._limits.failed if job.state == "failed" else self._limits.completed
            unsaved = self._unsaved[key] = deque(maxlen=max(limit, 1))
        return unsaved
