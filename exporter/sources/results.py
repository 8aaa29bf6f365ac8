"""Read a task's exact arguments from Celery's Redis result backend (`result_extended`).

With `result_extended = True`, Celery stores under ``celery-task-meta-<id>`` the
task's `name`, `args`, `kwargs` and `queue` next to its result, as the app's
result serializer wrote them (JSON by default). That copy is exact: a retry can
run the task with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import InputLimits, check_size

#: Celery's key for a task's result meta (the Redis backend's default prefix).
META_PREFIX = "celery-task-meta-"


@dataclass(frozen=True)
class StoredCall:
    """How a task was called, as the result backend stored it."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None


class ResultBackend:
    """Reads task metas from the result backend's Redis; never writes there."""

    def __init__(self, client: redis.Redis, limits: InputLimits) -> None:
        self._client = client
        self._limits = limits

    def call_of(self, task_id: str) -> StoredCall | None:
        """The stored call of `task_id`; None when the backend holds no extended meta.

        Raises redis errors, and MalformedMessage for a meta that is not Celery's.
        """
        raw = self._client.get(META_PREFIX + task_id)
        if raw is None:
            return None
        assert isinstance(raw, bytes)
        check_size(raw, self._limits, "result meta")
        try:  # the standard library keeps every value exactly (big integers, surrogates)
            meta = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise MalformedMessage(f"result meta is not JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise MalformedMessage("result meta is not a JSON object")
        return stored_call(meta)


def stored_call(meta: dict[str, Any]) -> StoredCall | None:
    """The call in a decoded meta; None when it has no extended fields (result_extended off)."""
    name, args, kwargs = meta.get("name"), meta.get("args"), meta.get("kwargs")
    if name is None and args is None and kwargs is None:
        return None
    if not isinstance(name, str) or not name:
        raise MalformedMessage("result meta has no task name")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise MalformedMessage("result meta args/kwargs are not a list and an object")
    queue = meta.get("queue")
    return StoredCall(name, args, kwargs, queue if isinstance(queue, str) else None)
