"""Job actions over HTTP (docs/jobs-actions.md): retry, cancel, remove, pause, resume,
retry-failed, purge, and the audit log.

Each action runs on the Jobs API's thread pool (it talks to Redis and broadcasts to
workers), needs a key with `manage:all`, is refused under `--read-only`, and takes
only JSON bodies (415 otherwise: a browser form cannot post here).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import falcon
import orjson
from falcon.asgi import Request, Response

from exporter.model.actions import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    UNAVAILABLE,
    ActionRefused,
    Actor,
)
from exporter.model.snapshot import TaskPlacement
from exporter.protocol.limits import MAX_IDENTIFIER
from exporter.protocol.messages import TaskMessage
from exporter.web import jobformat
from exporter.web.jobs import FOLLOWER_MESSAGE, int_param
from exporter.web.permissions import MANAGE, READ, key_name
from exporter.web.ports import ActionsBackend

T = TypeVar("T")

#: Largest request body an action reads.
MAX_BODY_BYTES = 64 * 1024
READ_ONLY_MESSAGE = (
    "the sidecar runs with --read-only: job actions are turned off (GET routes still work)"
)
_STATUS = {
    BAD_REQUEST: falcon.HTTPBadRequest,
    FORBIDDEN: falcon.HTTPForbidden,
    NOT_FOUND: falcon.HTTPNotFound,
    CONFLICT: falcon.HTTPConflict,
    UNAVAILABLE: falcon.HTTPServiceUnavailable,
}

Backend = Callable[[], ActionsBackend | None]


class Action:
    """What every action resource shares: permission, read-only, body, thread, errors."""

    required_permission = MANAGE

    def __init__(self, backend: Backend, *, read_only: bool, executor: Executor) -> None:
        self._backend = backend
        self._read_only = read_only
        self._executor = executor

    async def _body(self, req: Request) -> dict[str, Any]:
        """The JSON body, once the sidecar is known to allow actions at all."""
        if self._read_only:
            raise falcon.HTTPForbidden(description=READ_ONLY_MESSAGE)
        return await json_body(req)

    async def _run(self, req: Request, call: Callable[[ActionsBackend, Actor], T]) -> T:
        backend = self._backend()
        if backend is None:
            raise falcon.HTTPServiceUnavailable(description=FOLLOWER_MESSAGE, retry_after=2)
        actor = Actor(key_name(req))
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call, backend, actor)
        except ActionRefused as refused:
            raise _STATUS.get(refused.reason, falcon.HTTPServiceUnavailable)(
                description=refused.message
            ) from None


async def json_body(req: Request) -> dict[str, Any]:
    """The request's JSON object ({} without a body); 415 for another type, 400 if bad."""
    raw = await req.stream.read(MAX_BODY_BYTES + 1)
    if not raw.strip():
        return {}
    media = (req.content_type or "").split(";")[0].strip().lower()
    if media != falcon.MEDIA_JSON:
        raise falcon.HTTPUnsupportedMediaType(
            description=f"a body must be {falcon.MEDIA_JSON}, not {media[:100] or 'untyped'}"
        )
    if len(raw) > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(description=f"a body is at most {MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise falcon.HTTPBadRequest(description=f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(description="the body must be a JSON object")
    return body


def _check_names(queue_name: str, job_id: str | None = None) -> None:
    """Names longer than any the broker can hold are unknown: 404 without a lookup."""
    if len(queue_name) > MAX_IDENTIFIER:
        raise falcon.HTTPNotFound(description="unknown queue (name too long)")
    if job_id is not None and len(job_id) > MAX_IDENTIFIER:
        raise falcon.HTTPNotFound(description="unknown job (id too long)")


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise falcon.HTTPBadRequest(description=f"invalid `{name}`: expected true or false")
    return value


class RetryResource(Action):
    """POST .../jobs/{id}/retry: run a failed (or completed) job again, exact arguments."""

    async def on_post(self, req: Request, resp: Response, queue_name: str, job_id: str) -> None:
        await self._body(req)
        _check_names(queue_name, job_id)
        done = await self._run(req, lambda b, actor: b.retry(actor, queue_name, job_id))
        message = TaskMessage(
            task_id=done.task_id, name=done.name, eta=None, retries=0, priority=None,
            exchange=None, routing_key=done.queue, protocol=2,
            args=list(done.args), kwargs=dict(done.kwargs),
        )
        resp.status = falcon.HTTP_202
        resp.media = {"job": jobformat.from_message(message, "waiting"), "retryOf": job_id}


class CancelResource(Action):
    """POST .../jobs/{id}/cancel: revoke; `{"terminate": true}` also stops a running job."""

    async def on_post(self, req: Request, resp: Response, queue_name: str, job_id: str) -> None:
        body = await self._body(req)
        terminate = _bool(body, "terminate", False)
        signal = body.get("signal", "SIGTERM")
        if not isinstance(signal, str):
            raise falcon.HTTPBadRequest(description="invalid `signal`: expected a string")
        _check_names(queue_name, job_id)
        done = await self._run(
            req,
            lambda b, actor: b.cancel(
                actor, queue_name, job_id, terminate=terminate, signal=signal
            ),
        )
        placement = TaskPlacement(job_id, None, queue_name, done.previous_status)
        job = jobformat.from_job(done.job, done.state, placement)
        resp.status = falcon.HTTP_202
        resp.media = {"job": job, "previousState": done.previous_status}


class JobResource(Action):
    """DELETE .../jobs/{id}: remove a waiting/paused message or a retained finished job."""

    async def on_delete(
        self, req: Request, resp: Response, queue_name: str, job_id: str
    ) -> None:
        await self._body(req)
        _check_names(queue_name, job_id)
        removed = await self._run(req, lambda b, actor: b.remove(actor, queue_name, job_id))
        resp.media = {"removed": removed}


class PauseResource(Action):
    """POST .../queues/{q}/pause: workers stop consuming the queue, until resumed."""

    async def on_post(self, req: Request, resp: Response, queue_name: str) -> None:
        await self._body(req)
        _check_names(queue_name)
        done = await self._run(req, lambda b, actor: b.pause(actor, queue_name))
        resp.status = falcon.HTTP_202
        resp.media = {"queue": done.queue, "paused": done.paused, "workers": list(done.workers)}


class ResumeResource(Action):
    """POST .../queues/{q}/resume: the remembered workers consume the queue again."""

    async def on_post(self, req: Request, resp: Response, queue_name: str) -> None:
        await self._body(req)
        _check_names(queue_name)
        done = await self._run(req, lambda b, actor: b.resume(actor, queue_name))
        resp.status = falcon.HTTP_202
        resp.media = {"queue": done.queue, "paused": done.paused, "workers": list(done.workers)}


class RetryFailedResource(Action):
    """POST .../queues/{q}/retry-failed: retry the newest N failed jobs (bounded)."""

    async def on_post(self, req: Request, resp: Response, queue_name: str) -> None:
        body = await self._body(req)
        limit = body.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise falcon.HTTPBadRequest(
                description=f"invalid `limit`: {str(limit)[:50]}; expected an integer 1 to 1000"
            )
        _check_names(queue_name)
        done = await self._run(req, lambda b, actor: b.retry_failed(actor, queue_name, limit))
        resp.status = falcon.HTTP_202
        resp.media = {
            "retried": list(done.retried),
            "skipped": [{"id": task_id, "reason": reason} for task_id, reason in done.skipped],
        }


class PurgeResource(Action):
    """POST .../queues/{q}/purge with `{"confirm": "<q>"}`: delete its waiting messages."""

    async def on_post(self, req: Request, resp: Response, queue_name: str) -> None:
        body = await self._body(req)
        _check_names(queue_name)
        confirm = body.get("confirm")
        purged = await self._run(req, lambda b, actor: b.purge(actor, queue_name, confirm))
        resp.media = {"purged": purged}


class AuditResource:
    """GET /v1/jobs/audit: the audit log, newest first, paged like the Jobs API."""

    required_permission = READ

    def __init__(self, backend: Backend, *, max_limit: int, executor: Executor) -> None:
        self._backend = backend
        self._max_limit = max_limit
        self._executor = executor

    async def on_get(self, req: Request, resp: Response) -> None:
        page = int_param(req, "page", 1, 1, 10**9)
        limit = int_param(req, "limit", 10, 1, self._max_limit)
        backend = self._backend()
        if backend is None:
            raise falcon.HTTPServiceUnavailable(description=FOLLOWER_MESSAGE, retry_after=2)
        loop = asyncio.get_running_loop()
        try:
            entries, total = await loop.run_in_executor(
                self._executor, backend.audit_page, (page - 1) * limit, limit
            )
        except ActionRefused as refused:
            raise falcon.HTTPServiceUnavailable(description=refused.message) from None
        resp.media = {
            "entries": [entry.to_json() for entry in entries],
            "pagination": {
                "currentPage": page,
                "totalPages": math.ceil(total / limit) if total else 0,
                "totalJobs": total,
                "limit": limit,
            },
        }
