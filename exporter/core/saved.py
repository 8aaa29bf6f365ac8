"""Finished jobs as the sidecar saves them in Redis, checked one by one when read back.

The history lists live in the broker's Redis, where anyone with access can write.
Each entry is decoded into `SavedJob` (types and sizes checked, texts clipped as the
tracker clips them) before it becomes a `Job`; an entry that does not fit is skipped
and counted, and the others load.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from exporter.model.jobs import MAX_FAILURES, MAX_TEXT, MAX_TRACEBACK, Job, clip, pack_traceback
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import (
    DEFAULT_LIMITS,
    Identifier,
    InputLimits,
    Timestamp,
    check_size,
)


class SavedJob(msgspec.Struct):
    """One saved job: what `exporter.core.history.dump_job` writes."""

    id: Identifier
    state: Literal["succeeded", "failed"]
    name: Identifier | None = None
    queue: Identifier | None = None
    args: str | None = None
    kwargs: str | None = None
    sent_at: Timestamp | None = None
    received_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    attempts: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    failures: list[tuple[str | None, str | None]] | None = None
    result: str | None = None
    hostname: Identifier | None = None
    retried_by: Identifier | None = None


_DECODER = msgspec.json.Decoder(SavedJob)


def load_saved_job(
    raw: bytes, status: str, limits: InputLimits = DEFAULT_LIMITS
) -> Job:
    """A saved entry of the `status` list (`completed` or `failed`) as a Job.

    Raises MalformedMessage for anything that is not a saved job of that status.
    """
    check_size(raw, limits, "saved job")
    try:
        saved = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"not a saved job: {str(exc)[:200]}") from exc
    expected = "failed" if status == "failed" else "succeeded"
    if saved.state != expected:
        raise MalformedMessage(f"a {saved.state!r} job in the {status} history")
    job = Job(saved.id)
    job.state = saved.state
    job.name, job.queue, job.hostname = saved.name, saved.queue, saved.hostname
    job.args, job.kwargs, job.result = clip(saved.args), clip(saved.kwargs), clip(saved.result)
    job.sent_at, job.received_at = saved.sent_at, saved.received_at
    job.started_at, job.finished_at = saved.started_at, saved.finished_at
    job.attempts = saved.attempts
    job.retried_by = saved.retried_by
    if saved.failures is not None:
        job.failures = [
            (clip(exc, MAX_TEXT), pack_traceback(clip(tb, MAX_TRACEBACK)))
            for exc, tb in saved.failures[-MAX_FAILURES:]
        ]
    return job
