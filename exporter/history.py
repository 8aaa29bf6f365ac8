"""Finished jobs persisted in Redis under the exporter's own key prefix, so a restart keeps them.

Each queue and status has one list, newest first, trimmed to the retention limit:
``{prefix}jobs:{completed|failed}:{queue}``; ``{prefix}queues`` is the set of queues.
The refresher saves what finished since the last refresh in one pipeline and loads
everything once, at the first refresh that reaches the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
import redis

from exporter.jobstore import Job, RetentionLimits

log = logging.getLogger(__name__)

FIELDS = (
    "id", "name", "queue", "args", "kwargs", "sent_at", "received_at", "started_at",
    "finished_at", "attempts", "failures", "result", "state", "hostname",
)


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes; decoding is lenient)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def dump_job(job: Job) -> bytes:
    """One job as a JSON object."""
    return orjson.dumps({field: getattr(job, field) for field in FIELDS})


def load_job(raw: bytes) -> Job:
    """A job from its JSON object; raises ValueError on anything else."""
    data: Any = orjson.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ValueError("not a saved job")
    job = Job(data["id"])
    for field in FIELDS[1:]:
        if field in data:
            setattr(job, field, data[field])
    if job.failures is not None:
        job.failures = [(exc, tb) for exc, tb in job.failures]
    if not isinstance(job.attempts, int):
        job.attempts = 0
    return job


class JobHistory:
    """Reads and writes the persisted job lists."""

    def __init__(self, client: redis.Redis, prefix: str, limits: RetentionLimits) -> None:
        self._client = client
        self._prefix = prefix
        self._limits = limits

    def key(self, status: str, queue: str) -> str:
        """The list holding one queue's jobs of one status (`completed` or `failed`)."""
        return f"{self._prefix}jobs:{status}:{queue}"

    def save(self, jobs: Iterable[Job]) -> int:
        """Push jobs (oldest first) and trim each list to its limit; one round trip."""
        pipe = self._client.pipeline(transaction=False)
        touched: set[tuple[str, str]] = set()
        count = 0
        for job in jobs:
            status = "failed" if job.state == "failed" else "completed"
            queue = job.queue or "unknown"
            pipe.lpush(self.key(status, queue), dump_job(job))
            touched.add((status, queue))
            count += 1
        if not count:
            return 0
        for status, queue in touched:
            limit = self._limits.failed if status == "failed" else self._limits.completed
            pipe.ltrim(self.key(status, queue), 0, max(limit, 1) - 1)
            pipe.sadd(f"{self._prefix}queues", queue)
        pipe.execute()
        return count

    def load(self) -> list[Job]:
        """Every saved job, newest first within each list; unreadable entries are skipped."""
        queues = sorted(
            as_text(q) for q in self._client.smembers(f"{self._prefix}queues")
        )
        pipe = self._client.pipeline(transaction=False)
        for queue in queues:
            pipe.lrange(self.key("completed", queue), 0, max(self._limits.completed, 1) - 1)
            pipe.lrange(self.key("failed", queue), 0, max(self._limits.failed, 1) - 1)
        jobs: list[Job] = []
        skipped = 0
        for entries in pipe.execute():
            for raw in entries:
                try:
                    jobs.append(load_job(raw))
                except (ValueError, TypeError):
                    skipped += 1
        if skipped:
            log.warning("skipped %d unreadable saved jobs", skipped)
        return jobs
