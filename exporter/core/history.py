"""Finished jobs persisted in Redis under the exporter's own key prefix, so a restart keeps them.

Each queue and status has one list, newest first, trimmed to the retention limit:
``{prefix}jobs:{completed|failed}:{queue}``; ``{prefix}queues`` is the set of queues.
The refresher saves what finished since the last refresh in one pipeline and loads
everything once, at the first refresh that reaches the broker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

import orjson
import redis

from exporter.core.saved import load_saved_job
from exporter.model.jobs import Job, RetentionLimits, unpack_traceback
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import DEFAULT_LIMITS, InputLimits
from exporter.protocol.skips import SkipLog
from exporter.sources.redis import as_text

#: Jobs per save round trip: bounds the memory one save takes, whatever the event rate.
SAVE_CHUNK = 200
#: Saved jobs read per round trip when they are loaded after a restart.
LOAD_CHUNK = 1000

FIELDS = (
    "id", "name", "queue", "args", "kwargs", "sent_at", "received_at", "started_at",
    "finished_at", "attempts", "failures", "result", "state", "hostname", "retried_by",
)

#: Replaces one saved entry with its edited copy if it is still where it was read.
_REPLACE_AT = """
if redis.call('LINDEX', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('LSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""
#: Tries at finding an entry again after the list moved under it (a save pushed).
_REPLACE_TRIES = 3
#: Up to this many ids, a list's entries are searched for their text before decoding.
_NEEDLES = 16


def dump_job(job: Job) -> bytes:
    """One job as a JSON object (tracebacks as text, so the saved form stays readable).

    The fields are those of `FIELDS`, in that order. Under a firehose the refresher
    saves thousands of jobs a second: the object is built in one expression, and each
    distinct packed traceback is inflated once (failures of one code path share it).
    """
    failures = job.failures
    return orjson.dumps({
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "args": job.args,
        "kwargs": job.kwargs,
        "sent_at": job.sent_at,
        "received_at": job.received_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "failures": None if failures is None else [
            (exception, None if packed is None else _traceback_text(packed))
            for exception, packed in failures
        ],
        "result": job.result,
        "state": job.state,
        "hostname": job.hostname,
        "retried_by": job.retried_by,
    })


@functools.lru_cache(maxsize=256)
def _traceback_text(packed: bytes) -> str | None:
    return unpack_traceback(packed)


class JobHistory:
    """Reads and writes the persisted job lists."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        limits: RetentionLimits,
        input_limits: InputLimits = DEFAULT_LIMITS,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._limits = limits
        self._input_limits = input_limits
        self._skips = SkipLog("history")
        #: Saved entries skipped on loading because they were not saved jobs.
        self.malformed = 0
        self._replace_at = client.register_script(_REPLACE_AT)

    def key(self, status: str, queue: str) -> str:
        """The list holding one queue's jobs of one status (`completed` or `failed`)."""
        return f"{self._prefix}jobs:{status}:{queue}"

    def save(self, jobs: Sequence[Job]) -> int:
        """Push jobs (oldest first) and trim each list to its limit; one round trip.

        Callers pass bounded chunks (see `SAVE_CHUNK`): the pipeline holds every
        encoded job until it is sent, so one call for a whole refresh's worth of
        jobs under a firehose would grow the process by tens of megabytes.
        """
        by_key: dict[tuple[str, str], list[bytes]] = {}
        for job in jobs:
            status = "failed" if job.state == "failed" else "completed"
            by_key.setdefault((status, job.queue or "unknown"), []).append(dump_job(job))
        if not by_key:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for (status, queue), values in by_key.items():
            limit = self._limits.failed if status == "failed" else self._limits.completed
            key = self.key(status, queue)
            pipe.lpush(key, *values[-max(limit, 1):])
            pipe.ltrim(key, 0, max(limit, 1) - 1)
        pipe.sadd(f"{self._prefix}queues", *{queue for _status, queue in by_key})
        pipe.execute()
        return len(jobs)

    def remove(self, queue: str, task_id: str) -> int:
        """Delete the saved copies of one job of `queue` (an admin removed it); how many."""
        removed = 0
        for status in ("completed", "failed"):
            key = self.key(status, queue)
            for _index, raw, _saved in self._entries_of(key, (task_id,)):
                removed += int(self._client.lrem(key, 0, raw))  # type: ignore[arg-type]
        return removed

    def mark_retried(self, queue: str, links: Mapping[str, str]) -> set[str]:
        """Note in the saved copies of jobs the ids of the runs that retry them.

        `links` maps a job's id to its new run's. Each entry is edited in place (same
        position in its list), so the link survives a restart; each list is read once
        per call, whatever the number of jobs. A save that moves a list between the
        read and the write is detected, and the entries it moved are looked up again.
        Returns the ids whose saved copy was found and edited.
        """
        marked: set[str] = set()
        for status in ("failed", "completed"):
            key = self.key(status, queue)
            for _ in range(_REPLACE_TRIES):
                wanted = {i: new for i, new in links.items() if i not in marked}
                moved = False
                for index, raw, saved in self._entries_of(key, wanted):
                    task_id = str(saved["id"])
                    saved["retried_by"] = wanted[task_id]
                    if self._replace_at(keys=[key], args=[index, raw, orjson.dumps(saved)]):
                        marked.add(task_id)
                    else:
                        moved = True
                if not moved:
                    break
        return marked

    def _entries_of(
        self, key: str, task_ids: Collection[str]
    ) -> list[tuple[int, bytes, dict[str, object]]]:
        """The position, bytes and decoded object of each saved entry in `key` of one of
        `task_ids` (one LRANGE)."""
        if not task_ids:
            return []
        # A few ids: entries that do not hold one of them are not decoded.
        needles = [orjson.dumps(i) for i in task_ids] if len(task_ids) <= _NEEDLES else []
        found = []
        for index, raw in enumerate(self._client.lrange(key, 0, -1)):
            if not isinstance(raw, bytes) or (needles and not any(n in raw for n in needles)):
                continue
            try:
                saved = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(saved, dict):
                task_id = saved.get("id")
                if isinstance(task_id, str) and task_id in task_ids:
                    found.append((index, raw, saved))
        return found

    def load(self, admit: Callable[[str], bool] = lambda queue: True) -> Iterator[list[Job]]:
        """Every saved job in chunks, newest first within each list; unreadable ones skipped.

        Read `LOAD_CHUNK` entries per round trip, so a full retention over many queues
        never sits in memory twice (as JSON and as jobs) at once. Each entry is checked
        on its own (`exporter.core.saved`); a bad one is counted in `malformed`, and
        a job saved twice is given once. Queues `admit` refuses (past --max-queues) are
        not read.
        """
        queues = sorted(as_text(q) for q in self._client.smembers(f"{self._prefix}queues"))
        seen: set[str] = set()
        for queue in queues:
            if not admit(queue):
                continue
            for status, limit in (
                ("completed", self._limits.completed), ("failed", self._limits.failed),
            ):
                key = self.key(status, queue)
                for first in range(0, max(limit, 1), LOAD_CHUNK):
                    last = min(first + LOAD_CHUNK, max(limit, 1)) - 1
                    entries = self._client.lrange(key, first, last)
                    jobs: list[Job] = []
                    for raw in entries:
                        job = self._load_one(raw, status, queue)
                        if job is not None and job.id not in seen:
                            seen.add(job.id)
                            jobs.append(job)
                    yield jobs
                    if len(entries) < last - first + 1:
                        break

    def _load_one(self, raw: object, status: str, queue: str) -> Job | None:
        """One entry of the `status` list of `queue`, or None (counted) if it is not a job."""
        try:
            if not isinstance(raw, bytes):
                raise MalformedMessage("entry is not a string")
            job = load_saved_job(raw, status, self._input_limits)
        except MalformedMessage as exc:
            self.malformed += 1
            self._skips.skipped(f"{self.key(status, queue)[:200]}: {exc}")
            return None
        job.queue = queue  # the list it was saved in decides where it is kept
        return job
