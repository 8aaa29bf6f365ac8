"""Job search (`GET /v1/jobs/search`): jobs whose id, name, args, kwargs or failedReason
contain a text, case-insensitively, across the snapshot and a bounded scan of the lists.

Retained and in-flight jobs come from the snapshot; `waiting` and `paused` messages
from the broker's lists, read in chunks of `SCAN_CHUNK` and at most `max_scan` per queue,
each decoded on its own (an undecodable message costs only itself).

NOTE: why an index. Joining and casefolding the fields of 60,000 retained jobs at
every query takes about 80 ms (bench/search's jobs), over the 50 ms a search may
take, and turning a failure into its failedReason (`ValueError('x')` -> `ValueError:
x`, traceback unpacked) costs about 11 µs more per failed job. So each job's fields
are casefolded once into one text (joined by NUL) and kept while the job is
retained: consecutive snapshots share their retained jobs (the same objects, newest
first), so a new generation costs only the texts of the jobs finished since, and a
query is one `in` per job: 4-10 ms over 60,000. The texts are built on the first
search (about 0.4 s for 60,000 jobs) and hold about 350 bytes a job.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from exporter.core.waiting import Pager
from exporter.model.jobs import Job, unpack_traceback
from exporter.model.search import SearchHit, SearchQuery, SearchResult
from exporter.model.snapshot import Snapshot, TaskPlacement
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import DEFAULT_LIMITS, InputLimits
from exporter.protocol.messages import TaskMessage, load_envelope, parse_task_message

#: Messages read per queue's lists at most, by default.
DEFAULT_MAX_SCAN = 5_000
#: Messages per LRANGE: the most a Jobs API page reads at once (--api-max-limit's
#: default), so one chunk never holds more than a page may.
SCAN_CHUNK = 100
#: The order hits are listed in, status by status.
SEARCH_ORDER = ("active", "delayed", "waiting", "paused", "failed", "completed")
#: Between two fields of a job's text: a query without it never matches across fields.
SEP = "\x00"
#: Failures whose failedReason is remembered (a failure repeats across jobs).
MAX_REASONS = 4096

#: `exporter.web.jobformat.failed_reason`: (exception repr, traceback) -> failedReason.
ReasonText = Callable[[str | None, str | None], str | None]
#: What the events told about in-flight task ids (the tracker's lookup).
Lookup = Callable[[Iterable[str]], Mapping[str, Job]]


@dataclass(frozen=True)
class _Segment:
    """One queue's retained jobs of one status, newest first, and their search texts."""

    jobs: tuple[Job, ...]
    texts: list[str]


@dataclass
class _Index:
    """The search texts of one snapshot, each part built when a search first needs it."""

    snapshot: Snapshot
    #: Per queue, (completed, failed) as `snapshot.retained_jobs` holds them.
    retained: dict[str, tuple[_Segment, _Segment]] | None = None
    #: One per `snapshot.placements`.
    inflight: list[str] | None = None


class _Page:
    """Numbers matches in search order and keeps those that fall on the page."""

    def __init__(self, offset: int, limit: int) -> None:
        self.start = offset
        self.stop = offset + max(limit, 0)
        self.position = 0
        self.hits: list[SearchHit] = []

    def window(self, count: int) -> tuple[int, int]:
        """Which of the next `count` matches are on the page (a slice), and count them."""
        low = min(max(self.start - self.position, 0), count)
        high = min(max(self.stop - self.position, 0), count)
        self.position += count
        return low, max(low, high)

    def wants_next(self) -> bool:
        """Whether the next match is on the page (it is counted either way by `count_one`)."""
        return self.start <= self.position < self.stop

    def count_one(self) -> None:
        self.position += 1


class JobSearch:
    """Searches snapshots and the broker's lists; keeps the texts of the newest snapshot.

    `failed_reason` turns a failure into the failedReason the Jobs API shows; `pager`
    reads a queue's lists next to run first (None: lists are not scanned); `lookup`
    joins list messages with what the events told about them; `on_message` is told
    the list messages a page returns (not every message scanned: a scan reads
    thousands).
    """

    def __init__(
        self,
        pager: Pager | None,
        *,
        failed_reason: ReasonText,
        limits: InputLimits = DEFAULT_LIMITS,
        lookup: Lookup | None = None,
        on_message: Callable[[TaskMessage], None] | None = None,
        chunk: int = SCAN_CHUNK,
    ) -> None:
        self._pager = pager
        self._on_message = on_message
        self._failed_reason = failed_reason
        self._limits = limits
        self._lookup = lookup
        self._chunk = max(1, chunk)
        self._lock = threading.Lock()
        self._index: _Index | None = None
        #: The retained texts built last (of this snapshot or an older one), to carry over.
        self._segments: dict[str, tuple[_Segment, _Segment]] = {}
        self._reasons: dict[tuple[str | None, bytes | None], str | None] = {}

    def search(
        self, snapshot: Snapshot, query: SearchQuery, *, max_scan: int = DEFAULT_MAX_SCAN
    ) -> SearchResult:
        """One page of the jobs matching `query`, their total, and what was examined.

        Reads the broker only when `query.status` is None, `waiting` or `paused`: at
        most `max_scan` messages per queue.
        """
        needle = query.text.casefold()
        wanted = (query.status,) if query.status else SEARCH_ORDER
        if query.queue is None:
            queues: Sequence[str] = list(snapshot.queues)
        else:
            queues = [query.queue] if query.queue in snapshot.queues else []
        page = _Page(query.offset, query.limit)
        index = self._index_of(
            snapshot,
            retained="failed" in wanted or "completed" in wanted,
            inflight="active" in wanted or "delayed" in wanted or "waiting" in wanted,
        )
        examined, inflight = self._inflight(snapshot, index, needle, query.queue, wanted)
        for status in ("active", "delayed"):
            _take_placed(page, snapshot, status, inflight.get(status, []))
        if "waiting" in wanted:
            _take_placed(page, snapshot, "waiting", inflight.get("prefetched", []))
        lists: dict[str, dict[str, Any]] = {}
        if self._pager is not None and ("waiting" in wanted or "paused" in wanted):
            self._scan_lists(snapshot, queues, wanted, needle, page, lists, max_scan)
        retained = 0
        for status in ("failed", "completed"):
            if status in wanted:
                retained += self._take_retained(index, query.queue, status, needle, page)
        scanned: dict[str, object] = {
            "retained": retained,
            "inFlight": examined,
            "lists": lists,
        }
        return SearchResult(tuple(page.hits), page.position, scanned)

    # -- the texts --------------------------------------------------------------------

    def _index_of(self, snapshot: Snapshot, *, retained: bool, inflight: bool) -> _Index:
        """The texts of this snapshot; retained ones carried over from the last built."""
        with self._lock:
            index = self._index
            if index is None or index.snapshot is not snapshot:
                index = self._index = _Index(snapshot)
            if retained and index.retained is None:
                old = self._segments
                index.retained = self._segments = {
                    queue: (
                        self._carry(old[queue][0] if queue in old else None, completed),
                        self._carry(old[queue][1] if queue in old else None, failed),
                    )
                    for queue, (completed, failed) in snapshot.retained_jobs.items()
                }
            if inflight and index.inflight is None:
                details = snapshot.job_details
                index.inflight = [
                    self._text(details.get(p.task_id), p) for p in snapshot.placements
                ]
            return index

    def _carry(self, old: _Segment | None, jobs: tuple[Job, ...]) -> _Segment:
        """The segment of `jobs`, reusing the texts of the jobs `old` already holds."""
        if old is not None and old.jobs:
            if jobs is old.jobs:
                return old
            # Usually the new tuple is the jobs finished since, then the old ones
            # (minus those evicted): compared by identity, in C.
            try:
                fresh = jobs.index(old.jobs[0])
            except ValueError:
                fresh = -1
            if fresh >= 0 and jobs[fresh:] == old.jobs[: len(jobs) - fresh]:
                return _Segment(
                    jobs,
                    [self._text(job) for job in jobs[:fresh]] + old.texts[: len(jobs) - fresh],
                )
        # Both tuples are alive here, so an id() names one object in each.
        known: dict[int, str] = (
            {id(job): text for job, text in zip(old.jobs, old.texts, strict=True)} if old else {}
        )
        return _Segment(jobs, [known.get(id(job)) or self._text(job) for job in jobs])

    def _fields(
        self, job: Job | None, placement: TaskPlacement | None = None
    ) -> list[str | None]:
        """Id, name, args and kwargs reprs, failedReason: what a job is matched on."""
        if job is None:
            return [placement.task_id, placement.name] if placement else []
        name = job.name or (placement.name if placement else None)
        return [job.id, name, job.args, job.kwargs, self._reason(job)]

    def _job_fields(self, jobs: Sequence[Job]) -> Callable[[int], list[str | None]]:
        return lambda i: self._fields(jobs[i])

    def _text(self, job: Job | None, placement: TaskPlacement | None = None) -> str:
        return SEP.join(field for field in self._fields(job, placement) if field).casefold()

    def _reason(self, job: Job | None) -> str | None:
        """The failedReason of a job's newest failure, remembered per failure."""
        if job is None or not job.failures:
            return None
        failure = job.failures[-1]
        try:
            return self._reasons[failure]
        except KeyError:
            pass
        exception, packed = failure
        reason = self._failed_reason(exception, unpack_traceback(packed))
        if len(self._reasons) >= MAX_REASONS:
            self._reasons.clear()
        self._reasons[failure] = reason
        return reason

    def _matches(
        self, needle: str, texts: Sequence[str], subjects: Callable[[int], list[str | None]]
    ) -> list[int]:
        """Positions of the texts holding `needle`.

        A needle holding the separator is matched field by field (`subjects`), so
        it never spans two fields.
        """
        if SEP not in needle:
            return [i for i, text in enumerate(texts) if needle in text]
        return [
            i for i in range(len(texts))
            if any(needle in field.casefold() for field in subjects(i) if field)
        ]

    # -- in-flight jobs ---------------------------------------------------------------

    def _inflight(
        self,
        snapshot: Snapshot,
        index: _Index,
        needle: str,
        queue: str | None,
        wanted: Sequence[str],
    ) -> tuple[int, dict[str, list[int]]]:
        """Placements examined, and positions of the matching ones by placement status."""
        statuses = {s for s in ("active", "delayed") if s in wanted}
        if "waiting" in wanted:
            statuses.add("prefetched")
        if not statuses or index.inflight is None:
            return 0, {}
        placements = snapshot.placements
        examined = [
            i for i, p in enumerate(placements)
            if p.status in statuses and (queue is None or p.queue == queue)
        ]
        texts = index.inflight
        details = snapshot.job_details
        hits = self._matches(
            needle,
            [texts[i] for i in examined],
            lambda k: self._fields(
                details.get(placements[examined[k]].task_id), placements[examined[k]]
            ),
        )
        found: dict[str, list[int]] = {}
        for k in hits:
            found.setdefault(placements[examined[k]].status, []).append(examined[k])
        return len(examined), found

    # -- the broker's lists -----------------------------------------------------------

    def _scan_lists(
        self,
        snapshot: Snapshot,
        queues: Sequence[str],
        wanted: Sequence[str],
        needle: str,
        page: _Page,
        lists: dict[str, dict[str, Any]],
        max_scan: int,
    ) -> None:
        """Waiting lists (queues with consumers), then paused ones, next to run first."""
        error: str | None = None
        for status in ("waiting", "paused"):
            if status not in wanted:
                continue
            for queue in queues:
                state = snapshot.queues[queue]
                if (state.consumers > 0) != (status == "waiting"):
                    continue
                if error is not None:
                    lists[queue] = {"scanned": 0, "total": None, "error": error}
                    continue
                lists[queue] = report = self._scan(queue, status, needle, page, max_scan)
                error = report.get("error")

    def _scan(
        self, queue: str, status: str, needle: str, page: _Page, max_scan: int
    ) -> dict[str, Any]:
        """Read up to `max_scan` messages of one queue's lists; `{"scanned", "total"}`.

        Workers pop the head while the scan goes on, and a message may move between
        two chunks: a task id is listed once per queue.
        """
        assert self._pager is not None
        scanned, total = 0, None
        seen: set[str] = set()
        while scanned < max_scan:
            wanted = min(self._chunk, max_scan - scanned)
            try:
                raws, length = self._pager.page(queue, scanned, wanted)
            except Exception as exc:  # the broker's errors: say so, keep the rest
                return {"scanned": scanned, "total": total,
                        "error": f"the broker did not answer: {type(exc).__name__}"}
            total = length if total is None else total
            if not raws:
                break
            scanned += len(raws)
            messages = []
            for raw in raws:
                message = self._decode(raw)
                if message is not None and message.task_id not in seen:
                    seen.add(message.task_id)
                    messages.append(message)
            known = self._lookup(m.task_id for m in messages) if self._lookup else {}
            for message in messages:
                job = known.get(message.task_id)
                fields = self._message_fields(message, job)
                if _field_match(needle, fields):
                    if page.wants_next():
                        page.hits.append(SearchHit(status, queue, job=job, message=message))
                        if self._on_message is not None:
                            self._on_message(message)
                    page.count_one()
            if scanned >= length:
                break
        return {"scanned": scanned, "total": total or 0}

    def _decode(self, raw: bytes) -> TaskMessage | None:
        try:
            envelope = load_envelope(raw, self._limits)
            return parse_task_message(envelope, with_body=True, limits=self._limits)
        except MalformedMessage:
            return None

    def _message_fields(self, message: TaskMessage, job: Job | None) -> list[str | None]:
        return [
            message.task_id,
            message.name,
            repr(message.args) if message.args is not None else None,
            repr(message.kwargs) if message.kwargs is not None else None,
            self._reason(job),
        ]

    # -- retained jobs ----------------------------------------------------------------

    def _take_retained(
        self, index: _Index, queue: str | None, status: str, needle: str, page: _Page
    ) -> int:
        """Count the matching retained jobs of `status`, newest first across queues."""
        which = 1 if status == "failed" else 0
        parts: list[tuple[str, _Segment, list[int]]] = []
        examined = 0
        for name, segments in (index.retained or {}).items():
            if queue is not None and name != queue:
                continue
            segment = segments[which]
            examined += len(segment.jobs)
            found = self._matches(needle, segment.texts, self._job_fields(segment.jobs))
            if found:
                parts.append((name, segment, found))
        low, high = page.window(sum(len(found) for _, _, found in parts))
        if high > low:
            streams = [_newest_first(rank, part) for rank, part in enumerate(parts)]
            for _key, rank, i in islice(heapq.merge(*streams), low, high):
                name, segment, _found = parts[rank]
                page.hits.append(SearchHit(status, name, job=segment.jobs[i]))
        return examined


def _newest_first(
    rank: int, part: tuple[str, _Segment, list[int]]
) -> Iterator[tuple[float, int, int]]:
    """One queue's matches keyed for a merge by end time, newest first (ties: queue order)."""
    jobs = part[1].jobs
    for i in part[2]:
        yield -(jobs[i].finished_at or 0.0), rank, i


def _field_match(needle: str, fields: Iterable[str | None]) -> bool:
    if SEP not in needle:
        return needle in SEP.join(f for f in fields if f).casefold()
    return any(needle in f.casefold() for f in fields if f)


def _take_placed(page: _Page, snapshot: Snapshot, status: str, positions: list[int]) -> None:
    """In-flight matches in the Jobs API's order: active by start, delayed by ETA."""
    placements = [snapshot.placements[i] for i in positions]
    if status == "delayed":
        placements.sort(key=lambda p: (p.eta or 0.0, p.task_id))
    elif status == "active":
        placements.sort(key=lambda p: (p.started_at or 0.0, p.task_id))
    low, high = page.window(len(placements))
    for placement in placements[low:high]:
        job = snapshot.job_details.get(placement.task_id)
        page.hits.append(SearchHit(status, placement.queue, job=job, placement=placement))
