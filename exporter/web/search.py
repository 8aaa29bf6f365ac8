"""GET /v1/jobs/search (docs/jobs-actions.md, "Search"): the jobs whose id, name, args,
kwargs or failedReason contain `q`, as the Jobs API formats them.

The backend searches (the snapshot, and a bounded scan of the broker's lists for
`waiting` and `paused`); this resource checks the parameters as the Jobs API does,
answers 503 before the first snapshot and 404 for an unknown queue, and formats the
page. It runs on the Jobs API's thread pool: a scan reads Redis.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import falcon
from falcon.asgi import Request, Response

from exporter.model.search import SearchHit, SearchQuery
from exporter.model.snapshot import STATUSES
from exporter.web import jobformat
from exporter.web.jobs import (
    DEFAULT_LIMIT,
    QueuesResource,
    current_snapshot,
    int_param,
    single_param,
)
from exporter.web.ports import JobsBackend, SnapshotProvider

#: Longest `q` accepted, in characters.
MAX_QUERY_CHARS = 200
_QUERY_ALLOWED = f"a text of 1 to {MAX_QUERY_CHARS} characters"
_STATUS_ALLOWED = "one of " + ", ".join(STATUSES)


class SearchResource:
    """GET /v1/jobs/search: a page of matching jobs, their total, and how far it looked."""

    required_permission = QueuesResource.required_permission

    def __init__(
        self,
        provider: SnapshotProvider,
        backend: Callable[[], JobsBackend | None],
        *,
        max_limit: int,
        executor: Executor,
    ) -> None:
        self._provider = provider
        self._backend = backend
        self._max_limit = max_limit
        self._executor = executor

    async def on_get(self, req: Request, resp: Response) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._answer, req, resp)

    def _answer(self, req: Request, resp: Response) -> None:
        """Validate, search (maybe reading the broker) and set the body; in a thread."""
        query = self._query(req)
        backend = self._backend()
        snapshot = current_snapshot(self._provider, backend)
        if query.queue is not None and query.queue not in snapshot.queues:
            raise falcon.HTTPNotFound(description=f"unknown queue {query.queue[:200]!r}")
        assert backend is not None
        result = backend.search(query)
        limit = query.limit
        resp.media = {
            "jobs": [job_object(hit) for hit in result.hits],
            "pagination": {
                "currentPage": query.offset // limit + 1,
                "totalPages": math.ceil(result.total / limit) if result.total else 0,
                "totalJobs": result.total,
                "limit": limit,
            },
            "scanned": dict(result.scanned),
        }

    def _query(self, req: Request) -> SearchQuery:
        """The parameters, checked in the Jobs API's style (400 naming the parameter)."""
        text = single_param(req, "q", _QUERY_ALLOWED)
        if not text:
            raise falcon.HTTPBadRequest(description=f"missing `q`: expected {_QUERY_ALLOWED}")
        if len(text) > MAX_QUERY_CHARS:
            raise falcon.HTTPBadRequest(
                description=f"invalid `q`: {len(text)} characters; expected {_QUERY_ALLOWED}"
            )
        queue = single_param(req, "queue", "a queue name") or None
        status = single_param(req, "status", _STATUS_ALLOWED) or None
        if status is not None and status not in STATUSES:
            raise falcon.HTTPBadRequest(
                description=f"invalid `status`: {status[:50]!r}; expected {_STATUS_ALLOWED}"
            )
        page = int_param(req, "page", 1, 1, 10**9)
        limit = int_param(req, "limit", DEFAULT_LIMIT, 1, self._max_limit)
        return SearchQuery(text, queue, status, (page - 1) * limit, limit)


def job_object(hit: SearchHit) -> dict[str, Any]:
    """A hit as the Jobs API's job object (a list message, or a job the snapshot holds)."""
    if hit.message is not None:
        return jobformat.from_message(hit.message, hit.status, hit.job)
    return jobformat.from_job(hit.job, hit.status, hit.placement)
