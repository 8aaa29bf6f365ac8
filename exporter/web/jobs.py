"""The Jobs API (docs/jobs-api.md): queues with their counts, and one queue's jobs by status.

Counts come from the same snapshot as /metrics. Jobs come from the snapshot too,
except waiting and paused ones: those are read from the broker's lists, one page at
a time (O(limit) Redis work, bounded by the client's socket timeout). A page is built
on a small thread pool, so broker round trips and formatting never hold up the event
loop that answers /metrics.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import falcon
from falcon.asgi import Request, Response

from exporter.model.readings import WaitingMessage
from exporter.model.snapshot import STATUSES, Snapshot, TaskPlacement
from exporter.web import jobformat
from exporter.web.permissions import READ
from exporter.web.ports import JobsBackend, SnapshotProvider

DEFAULT_STATUS = "failed"
DEFAULT_LIMIT = 10


#: A worker process that does not run the refresher forwards the Jobs API to the one that
#: does; this is its answer when that process is not reachable (it is being replaced).
FOLLOWER_MESSAGE = (
    "the worker process that holds the jobs (it runs the refresher) is not answering, "
    "probably being replaced; try again in a few seconds"
)


def current_snapshot(provider: SnapshotProvider, backend: JobsBackend | None) -> Snapshot:
    """The snapshot, or 503 until the broker has been read once (or in a follower).

    Before the first successful broker read the counts would be zeros that mean
    "unknown", so the contract's 503 is answered instead, configured queues or not.
    """
    if backend is None:
        raise falcon.HTTPServiceUnavailable(description=FOLLOWER_MESSAGE, retry_after=2)
    snapshot = provider.snapshot
    if snapshot is None or not snapshot.broker_ever_read:
        raise falcon.HTTPServiceUnavailable(
            description="no snapshot yet: the broker has not been read (is it reachable?)"
        )
    return snapshot


class QueuesResource:
    """GET /v1/jobs/queues: every known queue with its six counts."""

    required_permission = READ

    def __init__(
        self, provider: SnapshotProvider, backend: Callable[[], JobsBackend | None]
    ) -> None:
        self._provider = provider
        self._backend = backend

    async def on_get(self, req: Request, resp: Response) -> None:
        snapshot = current_snapshot(self._provider, self._backend())
        resp.media = {
            "queues": [
                {"name": q.name, "counts": dict(q.counts)} for q in snapshot.queues.values()
            ]
        }


#: An integer parameter: ASCII digits only (int() also takes Arabic-Indic or full-width ones).
_ASCII_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def single_param(req: Request, name: str, allowed: str) -> str | None:
    """A query parameter's value; 400 naming it when the query gives it more than once."""
    raw = req.params.get(name)
    if isinstance(raw, list):
        raise falcon.HTTPBadRequest(
            description=f"invalid `{name}`: given {len(raw)} times; expected it once: {allowed}"
        )
    return raw


def int_param(req: Request, name: str, default: int, low: int, high: int) -> int:
    raw = single_param(req, name, f"an integer from {low} to {high}")
    if raw is None or raw == "":
        return default
    value = None
    if _ASCII_INTEGER.fullmatch(raw):
        try:
            value = int(raw)
        except ValueError:  # more digits than int() converts
            value = None
    if value is None or not low <= value <= high:
        raise falcon.HTTPBadRequest(
            description=f"invalid `{name}`: {raw[:50]!r}; expected an integer from {low} to {high}"
        )
    return value


class QueueJobsResource:
    """GET /v1/jobs/queues/{queueName}: one queue's counts and a page of its jobs."""

    required_permission = READ

    def __init__(self, provider: SnapshotProvider, backend: Callable[[], JobsBackend | None],
                 *, max_limit: int, executor: Executor) -> None:
        self._provider = provider
        self._backend = backend
        self._max_limit = max_limit
        self._executor = executor

    async def on_get(self, req: Request, resp: Response, queue_name: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._answer, req, resp, queue_name)

    def _answer(self, req: Request, resp: Response, queue_name: str) -> None:
        """Validate, read the page (maybe from the broker) and set the body; in a thread."""
        status = single_param(req, "status", "one of " + ", ".join(STATUSES)) or DEFAULT_STATUS
        if status not in STATUSES:
            raise falcon.HTTPBadRequest(
                description=f"invalid `status`: {status[:50]!r}; expected one of "
                + ", ".join(STATUSES)
            )
        page = int_param(req, "page", 1, 1, 10**9)
        limit = int_param(req, "limit", DEFAULT_LIMIT, 1, self._max_limit)
        backend = self._backend()
        snapshot = current_snapshot(self._provider, backend)
        queue = snapshot.queues.get(queue_name)
        if queue is None:
            raise falcon.HTTPNotFound(description=f"unknown queue {queue_name[:200]!r}")
        offset = (page - 1) * limit
        assert backend is not None
        jobs, total = self._jobs(snapshot, backend, queue_name, status, offset, limit)
        resp.media = {
            "name": queue_name,
            "counts": dict(queue.counts),
            "jobs": jobs,
            "pagination": {
                "currentPage": page,
                "totalPages": math.ceil(total / limit) if total else 0,
                "totalJobs": total,
                "limit": limit,
            },
        }

    def _jobs(
        self,
        snapshot: Snapshot,
        backend: JobsBackend,
        queue: str,
        status: str,
        offset: int,
        limit: int,
    ) -> tuple[list[dict[str, Any]], int]:
        if status in ("completed", "failed"):
            completed, failed = snapshot.retained_jobs.get(queue, ((), ()))
            kept = failed if status == "failed" else completed
            return [jobformat.from_job(j, status) for j in kept[offset : offset + limit]], len(
                kept
            )
        if status in ("active", "delayed"):
            placed = _placed(snapshot, queue, status)
            page = placed[offset : offset + limit]
            return [
                jobformat.from_job(snapshot.job_details.get(p.task_id), status, p) for p in page
            ], len(placed)
        return _waiting_or_paused(snapshot, backend, queue, status, offset, limit)


def _waiting_or_paused(
    snapshot: Snapshot, backend: JobsBackend, queue: str, status: str, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Prefetched jobs first (waiting only), then the broker's lists, next to run first."""
    total = snapshot.queues[queue].counts[status]
    if total == 0 or offset >= total:
        return [], total
    jobs: list[dict[str, Any]] = []
    prefetched = _placed(snapshot, queue, "prefetched") if status == "waiting" else []
    for placement in prefetched[offset : offset + limit]:
        details = snapshot.job_details.get(placement.task_id)
        jobs.append(jobformat.from_job(details, status, placement))
    list_offset = max(0, offset - len(prefetched))
    wanted = limit - len(jobs)
    if wanted > 0 and total > len(prefetched):
        try:
            waiting = backend.waiting_page(queue, list_offset, wanted)
        except Exception as exc:
            raise falcon.HTTPServiceUnavailable(
                description=f"the broker did not answer: {type(exc).__name__}"
            ) from exc
        jobs.extend(_from_waiting(waiting, status))
    return jobs, total


def _placed(snapshot: Snapshot, queue: str, status: str) -> list[TaskPlacement]:
    placed = [p for p in snapshot.placements if p.queue == queue and p.status == status]
    if status == "delayed":
        placed.sort(key=lambda p: (p.eta or 0.0, p.task_id))
    elif status == "active":
        placed.sort(key=lambda p: (p.started_at or 0.0, p.task_id))
    return placed


def _from_waiting(waiting: list[WaitingMessage], status: str) -> list[dict[str, Any]]:
    jobs = []
    for entry in waiting:
        if entry.message is None:
            jobs.append(jobformat.undecodable_message(entry.raw, entry.error or "", status))
        else:
            jobs.append(jobformat.from_message(entry.message, status, entry.job))
    return jobs
