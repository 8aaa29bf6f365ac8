"""A job as the event stream tells it, and the bounds on what one job keeps."""

from __future__ import annotations

import functools
import zlib
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
        "retried_by",
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
        #: The task id of the run an admin started again from this job (a retry).
        self.retried_by: str | None = None

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
