"""What a job action answers: its result, or why it was refused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.model.jobs import Job

#: Every action, as named in the audit log and in celery_exporter_actions_total.
ACTIONS = ("retry", "cancel", "remove", "pause", "resume", "retry-failed", "purge")
#: How an action ended: carried out, failed while being carried out, or refused before.
ACTION_OUTCOMES = ("ok", "failed", "refused")

#: Why an action was refused, each answered with one HTTP status.
BAD_REQUEST, FORBIDDEN, NOT_FOUND, CONFLICT, UNAVAILABLE = (
    "bad_request", "forbidden", "not_found", "conflict", "unavailable",
)


class ActionRefused(Exception):
    """The action was not carried out (or failed while being carried out), and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Actor:
    """Who asks: the name of the API key (never the key), for the audit log."""

    key_name: str


@dataclass(frozen=True)
class RetryDone:
    """A job published again: its new task id and the exact call it runs."""

    task_id: str
    retry_of: str
    name: str
    queue: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    source: str


@dataclass(frozen=True)
class CancelDone:
    """A job cancelled: its status before, and its state now."""

    task_id: str
    queue: str
    previous_status: str
    state: str
    removed_from_list: bool = False
    #: What the events told about the job, if anything.
    job: Job | None = None


@dataclass(frozen=True)
class PauseDone:
    """A queue paused or resumed, and the workers told to stop or start consuming it."""

    queue: str
    paused: bool
    workers: tuple[str, ...]


@dataclass(frozen=True)
class BulkRetryDone:
    """What a retry-failed retried, and what it skipped with the reason."""

    retried: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class AuditEntry:
    """One action as requested, and its outcome once known."""

    id: str
    at_ms: int
    key: str
    action: str
    queue: str | None
    job: str | None
    params: Mapping[str, Any]
    outcome: str
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        """The entry as `GET /v1/jobs/audit` serves it."""
        return {
            "id": self.id,
            "at": self.at_ms,
            "key": self.key,
            "action": self.action,
            "queue": self.queue,
            "job": self.job,
            "params": dict(self.params),
            "outcome": self.outcome,
            "detail": self.detail,
        }
