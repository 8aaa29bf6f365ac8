"""Jobs as the event stream tells them, and bounded per-queue retention of finished ones."""

from __future__ import annotations

import functools
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

#: Longest kept text of args, kwargs, results and exceptions; tracebacks get more.
MAX_TEXT = 2048
MAX_TRACEBACK = 8192
#: Failed attempts remembered per job (the newest): a job retried without end stays bounded.
MAX_FAILURES = 50
# ASCII on purpose: one non-Latin-1 character would make CPython store the whole
# clipped string at 2 bytes per character (4 for some), doubling what a job keeps.
TRUNCATION_MARK = "...[truncated]"


def clip(text: object, limit: int = MAX_TEXT) -> str | None:
    """A string no longer than `limit` characters (None stays None)."""
    if text is None:
        return None
    value = text if isinstance(text, str) else str(text)
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def pack_traceback(text: str | None) -> bytes | None:
    """A traceback compressed: retained failures keep it at a third to a half of its size.

    Failures of one code path repeat the same traceback: each distinct text is
    compressed once (about 14 µs for 1.2 KB) and its jobs share one packed copy.
    """
    return None if text is None else _pack(text)


@functools.lru_cache(maxsize=1024)
def _pack(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8", "surrogatepass"), 6)


def unpack_traceback(packed: bytes | None) -> str | None:
    """The text of a packed traceback."""
    return None if packed is None else zlib.decompress(packed).decode("utf-8", "surrogatepass")


class Interner:
    """Shares one copy of strings that repeat (exception texts)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._strings: dict[str, str] = {}

    def __call__(self, value: str | None) -> str | None:
        if value is None:
            return None
        found = self._strings.get(value)
        if found is not None:
            return found
        if len(self._strings) >= self._max:
            self._strings.clear()
        self._strings[value] = value
        return value


class Job:
    """One Celery task as seen through its events; mutable until it finishes."""

    __slots__ = (
        "args",
        "attempts",
        "failures",
        "finished_at",
        "hostname",
        "id",
        "kwargs",
        "name",
        "queue",
        "ready_at",
        "received_at",
        "result",
        "sent_at",
        "started_at",
        "state",
        "wait_started_at",
    )

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.name: str | None = None
        self.queue: str | None = None
        self.args: str | None = None
        self.kwargs: str | None = None
        self.sent_at: float | None = None
        self.received_at: float | None = None
        self.ready_at: float | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.attempts = 0
        #: (exception repr, packed traceback) per failed attempt; see `failure_texts`.
        self.failures: list[tuple[str | None, bytes | None]] | None = None
        self.result: str | None = None
        self.state = "pending"
        self.hostname: str | None = None
        #: When the job started, while its queue wait is not recorded yet (see tracker).
        self.wait_started_at: float | None = None

    def failure_texts(self) -> list[tuple[str | None, str | None]]:
        """(exception repr, traceback text) per failed attempt, oldest first."""
        return [(exc, unpack_traceback(tb)) for exc, tb in self.failures or ()]

    def stacktraces(self) -> list[str]:
        """The traceback of each failed attempt that had one, oldest first."""
        return [text for _exc, text in self.failure_texts() if text]

    @property
    def published_at(self) -> float | None:
        """When the job was published, else when it was first seen."""
        return self.sent_at if self.sent_at is not None else self.received_at


@dataclass(frozen=True)
class RetentionLimits:
    """How many finished jobs are kept per queue, and for how long (0: no age limit)."""

    completed: int = 1000
    failed: int = 5000
    max_age: float = 0.0


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
