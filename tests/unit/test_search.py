"""Job search over a hand-built snapshot and lists held in memory, and its HTTP resource.

Jobs carry Celery's own reprs (exceptions as task-failed events send them, tracebacks
made by raising); list messages are published by a real Celery app (builders.publish)
and served by an in-memory pager in the order workers take them.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import falcon
import falcon.asgi
import falcon.testing
import pytest
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Celery
from kombu.utils.encoding import safe_repr

from exporter.core.search import DEFAULT_MAX_SCAN, SEARCH_ORDER, JobSearch
from exporter.model.jobs import Job, pack_traceback
from exporter.model.readings import WaitingMessage
from exporter.model.search import SearchHit, SearchQuery, SearchResult
from exporter.model.snapshot import (
    STATUSES,
    ExporterCounters,
    QueueState,
    Snapshot,
    SourceHealth,
    TaskPlacement,
)
from exporter.prometheus.render import RenderedMetrics
from exporter.web.errors import install_error_handlers
from exporter.web.jobformat import failed_reason
from exporter.web.jobs import QueuesResource
from exporter.web.search import MAX_QUERY_CHARS, SearchResource
from tests.unit.builders import NOW, empty_stats, producer_app, publish

# -- jobs and snapshots -------------------------------------------------------------------


def exception_repr(exc: BaseException) -> str:
    """The exception as Celery's task-failed events carry it."""
    text: str = safe_repr(exc)  # type: ignore[no-untyped-call]
    return text


def raised(exc: BaseException) -> str:
    """The traceback text of `exc` raised and caught, as a worker records it."""
    try:
        raise exc
    except BaseException as caught:
        return "".join(traceback.format_exception(caught))


def job(
    task_id: str,
    name: str = "app.send",
    *,
    queue: str = "emails",
    args: str | None = "()",
    kwargs: str | None = "{}",
    finished_at: float | None = None,
    failures: Sequence[BaseException] = (),
    result: str | None = None,
) -> Job:
    """A job as the events tell it: reprs of its arguments, its failures (newest last)."""
    made = Job(task_id)
    made.name, made.queue, made.args, made.kwargs = name, queue, args, kwargs
    made.sent_at = NOW
    made.finished_at = finished_at
    made.result = result
    if failures:
        made.failures = [(exception_repr(exc), pack_traceback(raised(exc))) for exc in failures]
        made.state = "failed"
    made.attempts = len(failures) or 1
    return made


def snapshot(
    consumers: Mapping[str, int],
    *,
    retained: Mapping[str, tuple[Sequence[Job], Sequence[Job]]] | None = None,
    placements: Sequence[TaskPlacement] = (),
    details: Iterable[Job] = (),
    generation: int = 1,
) -> Snapshot:
    """Queues with their consumers, retained jobs (completed, failed; newest first), in flight."""
    zero = dict.fromkeys(STATUSES, 0)
    return Snapshot(
        generation=generation,
        created_at=NOW,
        queues={q: QueueState(q, zero, n, 0) for q, n in consumers.items()},
        workers={},
        stats=empty_stats(),
        sources={"broker": SourceHealth("broker", True, NOW)},
        counters=ExporterCounters(),
        placements=tuple(placements),
        refresh_duration=0.01,
        last_success=NOW,
        broker_round_trips=2,
        retained_jobs={q: (tuple(c), tuple(f)) for q, (c, f) in (retained or {}).items()},
        job_details={j.id: j for j in details},
    )


class ListPager:
    """Queues' lists held in memory, next to run first (QueuePager's order)."""

    def __init__(self, lists: Mapping[str, list[bytes]], *, fail: str | None = None) -> None:
        self.lists = lists
        self.fail = fail
        self.calls: list[tuple[str, int, int]] = []

    def page(self, queue: str, offset: int, limit: int) -> tuple[list[bytes], int]:
        self.calls.append((queue, offset, limit))
        if queue == self.fail:
            raise ConnectionError("broker gone")
        entries = self.lists.get(queue, [])
        return entries[offset : offset + limit], len(entries)


class CountingReason:
    """jobformat.failed_reason, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, exception: str | None, text: str | None) -> str | None:
        self.calls += 1
        return failed_reason(exception, text)


def searcher(pager: ListPager | None = None, **options: Any) -> JobSearch:
    return JobSearch(pager, failed_reason=failed_reason, **options)


def find(
    engine: JobSearch, snap: Snapshot, text: str, *, max_scan: int = DEFAULT_MAX_SCAN,
    **query: Any,
) -> SearchResult:
    options = {"offset": 0, "limit": 100, **query}
    return engine.search(snap, SearchQuery(text, **options), max_scan=max_scan)


def ids(result: SearchResult) -> list[str | None]:
    return [hit_id(hit) for hit in result.hits]


def hit_id(hit: SearchHit) -> str | None:
    if hit.message is not None:
        return hit.message.task_id
    if hit.job is not None:
        return hit.job.id
    return hit.placement.task_id if hit.placement else None


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    made = producer_app()
    yield made
    made.close()


# -- what is matched --------------------------------------------------------------------


DISK = OSError("Disk FULL on node-7")
FAILED = job(
    "5f0c2a9e-1111-4c3b-9d2e-aaaaaaaaaaaa", "ingest.fetch",
    args="('s3://Bucket/2024/rows.csv',)", kwargs="{'ingestionSourceId': 'src-42'}",
    finished_at=NOW + 5, failures=[ValueError("first try"), DISK],
)
DONE = job(
    "0d9e4b7c-2222-4f1a-8e3b-bbbbbbbbbbbb", "reports.Build",
    args="(7, 'Straße')", kwargs="{'format': 'PDF'}", finished_at=NOW + 3,
    result="'s3://bucket/report-777.pdf'",
)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("5f0c2a9e-1111", [FAILED.id]),  # task id
        ("AAAAAAAAAAAA", [FAILED.id]),  # task id, other case
        ("ingest.FETCH", [FAILED.id]),  # name
        ("reports.build", [DONE.id]),  # name, other case
        ("rows.csv", [FAILED.id]),  # args repr
        ("'src-42'", [FAILED.id]),  # kwargs repr, quotes and all
        ("'format': 'pdf'", [DONE.id]),  # kwargs repr
        ("OSError: disk full", [FAILED.id]),  # failedReason of the newest failure
        ("STRASSE", [DONE.id]),  # casefolded: ß matches ss
        ("s3://bucket", [FAILED.id]),  # args of one; the other's returnValue is not searched
    ],
)
def test_each_field_is_matched_case_insensitively(text: str, found: list[str]) -> None:
    snap = snapshot({"emails": 1}, retained={"emails": ([DONE], [FAILED])})
    assert ids(find(searcher(), snap, text)) == found


@pytest.mark.parametrize(
    "text",
    [
        "first try",  # an older failure: failedReason is the newest one's
        "OSError('Disk",  # the exception repr is not the failedReason
        "trace.py",  # nor is the traceback
        "report-777",  # returnValue
        "Traceback",
    ],
)
def test_what_is_not_the_five_fields_is_not_matched(text: str) -> None:
    snap = snapshot({"emails": 1}, retained={"emails": ([DONE], [FAILED])})
    assert find(searcher(), snap, text).total == 0


def test_a_failure_reported_by_the_pool_is_matched_by_the_error_its_traceback_names() -> None:
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)")
    killed = job("killed-1", finished_at=NOW)
    killed.failures = [(exception_repr(ExceptionWithTraceback(lost, raised(lost))),
                        pack_traceback(raised(lost)))]
    assert killed.failures[0][0] == "ExceptionWithTraceback()"
    snap = snapshot({"emails": 1}, retained={"emails": ((), [killed])})
    assert ids(find(searcher(), snap, "workerlosterror: worker exited")) == ["killed-1"]


def test_a_query_never_spans_two_fields() -> None:
    snap = snapshot({"emails": 1}, retained={"emails": ([DONE], [FAILED])})
    engine = searcher()
    assert find(engine, snap, "bbbbbbbbbbbb\x00reports").total == 0
    assert find(engine, snap, "bbbbbbbbbbbbreports").total == 0
    nul = job("nul-\x00-id", finished_at=NOW)
    with_nul = snapshot({"emails": 1}, retained={"emails": ([nul], ())}, generation=2)
    assert ids(find(engine, with_nul, "-\x00-")) == [nul.id]


def test_in_flight_jobs_are_matched_on_what_the_events_told_or_the_placement() -> None:
    running = job("run-1", "ingest.fetch", kwargs="{'ingestionSourceId': 'src-9'}")
    placements = [
        TaskPlacement("run-1", None, "emails", "active", started_at=NOW),
        TaskPlacement("held-1", "reports.Build", "emails", "delayed", eta=NOW + 60),
    ]
    snap = snapshot({"emails": 1}, placements=placements, details=[running])
    engine = searcher()
    assert ids(find(engine, snap, "SRC-9")) == ["run-1"]
    result = find(engine, snap, "reports.build")
    assert ids(result) == ["held-1"]
    assert (result.hits[0].status, result.hits[0].job) == ("delayed", None)
    assert result.scanned == {"retained": 0, "inFlight": 2, "lists": {}}


# -- where it looks and in which order ------------------------------------------------------


def order_fixture(app: Celery) -> tuple[Snapshot, ListPager, dict[str, str]]:
    """Every status on two queues (`emails` consumed, `idle` not); all match "match"."""
    def pub(queue: str) -> bytes:
        return publish(app, "app.match", args=(1,), queue=queue).raw

    waiting = [pub("emails"), pub("emails")]
    paused = [pub("idle")]
    lists = {"emails": waiting, "idle": paused}
    running = [job(f"active-{i}", "app.match") for i in range(2)]
    placements = [
        TaskPlacement("active-1", "app.match", "idle", "active", started_at=NOW + 1),
        TaskPlacement("delayed-late", "app.match", "emails", "delayed", eta=NOW + 99),
        TaskPlacement("prefetched-1", "app.match", "emails", "prefetched"),
        TaskPlacement("active-0", "app.match", "emails", "active", started_at=NOW),
        TaskPlacement("delayed-soon", "app.match", "idle", "delayed", eta=NOW + 9),
        TaskPlacement("other", "app.other", "emails", "active", started_at=NOW),
    ]
    retained = {
        "emails": (
            [job("done-e2", "app.match", finished_at=NOW + 20),
             job("done-e1", "app.match", finished_at=NOW + 10)],
            [job("failed-e1", "app.match", finished_at=NOW + 12, failures=[DISK])],
        ),
        "idle": (
            [job("done-i1", "app.match", queue="idle", finished_at=NOW + 15)],
            [job("failed-i2", "app.match", queue="idle", finished_at=NOW + 30,
                 failures=[DISK])],
        ),
    }
    snap = snapshot({"emails": 2, "idle": 0}, retained=retained, placements=placements,
                    details=running)
    names = {
        json.loads(raw)["headers"]["id"]: name
        for name, raw in (("waiting-1", waiting[0]), ("waiting-2", waiting[1]),
                          ("paused-1", paused[0]))
    }
    return snap, ListPager(lists), names


ORDER = [
    "active-0", "active-1",  # earliest start first
    "delayed-soon", "delayed-late",  # earliest ETA first
    "prefetched-1", "waiting-1", "waiting-2",  # prefetched, then the lists in pop order
    "paused-1",
    "failed-i2", "failed-e1",  # newest first across queues
    "done-e2", "done-i1", "done-e1",
]


def named(result: SearchResult, names: Mapping[str, str]) -> list[str]:
    return [names.get(i or "", i or "") for i in ids(result)]


def test_hits_come_by_status_then_in_each_status_order(app: Celery) -> None:
    snap, pager, names = order_fixture(app)
    result = find(searcher(pager), snap, "app.match")
    assert named(result, names) == ORDER
    assert [hit.status for hit in result.hits] == [
        "active", "active", "delayed", "delayed", "waiting", "waiting", "waiting", "paused",
        "failed", "failed", "completed", "completed", "completed",
    ]
    assert result.total == len(ORDER)
    assert [hit.queue for hit in result.hits[:8]] == [
        "emails", "idle", "idle", "emails", "emails", "emails", "emails", "idle",
    ]
    assert result.scanned == {
        "retained": 5, "inFlight": 6,
        "lists": {"emails": {"scanned": 2, "total": 2}, "idle": {"scanned": 1, "total": 1}},
    }
    assert SEARCH_ORDER == ("active", "delayed", "waiting", "paused", "failed", "completed")


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 13, 20])
def test_pages_cut_the_same_order(app: Celery, limit: int) -> None:
    snap, pager, names = order_fixture(app)
    engine = searcher(pager)
    seen: list[str] = []
    for offset in range(0, len(ORDER) + limit, limit):
        result = find(engine, snap, "APP.MATCH", offset=offset, limit=limit)
        assert result.total == len(ORDER)
        assert len(result.hits) == max(0, min(limit, len(ORDER) - offset))
        seen += named(result, names)
    assert seen == ORDER


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "active"}, ["active-0", "active-1"]),
        ({"status": "delayed", "queue": "idle"}, ["delayed-soon"]),
        ({"status": "waiting"}, ["prefetched-1", "waiting-1", "waiting-2"]),
        ({"status": "paused"}, ["paused-1"]),
        ({"status": "waiting", "queue": "idle"}, []),  # no consumer: its list is paused
        ({"status": "failed"}, ["failed-i2", "failed-e1"]),
        ({"status": "completed", "queue": "emails"}, ["done-e2", "done-e1"]),
        ({"queue": "idle"}, ["active-1", "delayed-soon", "paused-1", "failed-i2", "done-i1"]),
        ({"queue": "nowhere"}, []),
    ],
)
def test_queue_and_status_narrow_the_search(
    app: Celery, query: dict[str, Any], expected: list[str]
) -> None:
    snap, pager, names = order_fixture(app)
    result = find(searcher(pager), snap, "app.match", **query)
    assert named(result, names) == expected
    assert result.total == len(expected)
    assert all(hit.status == query.get("status", hit.status) for hit in result.hits)
    assert all(hit.queue == query.get("queue", hit.queue) for hit in result.hits)


def test_the_lists_are_read_only_for_waiting_and_paused(app: Celery) -> None:
    snap, pager, _names = order_fixture(app)
    engine = searcher(pager)
    for status in ("active", "delayed", "failed", "completed"):
        result = find(engine, snap, "app.match", status=status)
        assert result.scanned["lists"] == {}
    assert pager.calls == []
    find(engine, snap, "app.match", status="paused")
    assert [call[0] for call in pager.calls] == ["idle"]
    scanned = find(engine, snap, "app.match", status="failed", queue="idle").scanned
    assert scanned == {"retained": 1, "inFlight": 0, "lists": {}}


# -- the bounded scan -------------------------------------------------------------------------


def test_the_scan_reads_at_most_max_scan_messages_per_queue_in_chunks(app: Celery) -> None:
    raws = [publish(app, "app.send", args=(i,), kwargs={"n": f"row-{i:03d}"},
                    queue="bulk").raw for i in range(250)]
    pager = ListPager({"bulk": raws, "small": raws[:3]})
    engine = searcher(pager, chunk=40)
    snap = snapshot({"bulk": 0, "small": 0})
    result = find(engine, snap, "'row-", max_scan=100, limit=5, offset=98)
    assert result.scanned["lists"] == {
        "bulk": {"scanned": 100, "total": 250}, "small": {"scanned": 3, "total": 3},
    }
    assert result.total == 103
    assert [hit.message.kwargs for hit in result.hits if hit.message] == [
        {"n": "row-098"}, {"n": "row-099"}, {"n": "row-000"}, {"n": "row-001"},
        {"n": "row-002"},
    ]
    assert [c for c in pager.calls if c[0] == "bulk"] == [
        ("bulk", 0, 40), ("bulk", 40, 40), ("bulk", 80, 20),
    ]
    assert find(engine, snap, "row-200", max_scan=100).total == 0  # past the bound
    assert find(engine, snap, "row-200", max_scan=300).total == 1


def test_list_messages_match_on_decoded_arguments_and_the_events(app: Celery) -> None:
    published = [
        publish(app, "app.send", args=("Zwölf", 12), kwargs={"ingestionSourceId": "src-7"},
                queue="q"),
        publish(app, "app.build", args=(1,), serializer="msgpack", queue="q"),
        publish(app, "app.send", args=("secret",), serializer="pickle", queue="q"),
    ]
    retried = job(published[1].task_id, failures=[TimeoutError("upstream slow")])
    asked: list[list[str]] = []

    def lookup(task_ids: Iterable[str]) -> dict[str, Job]:
        wanted = list(task_ids)
        asked.append(wanted)
        return {i: retried for i in wanted if i == retried.id}

    told: list[str] = []
    engine = searcher(ListPager({"q": [p.raw for p in published]}), lookup=lookup,
                      on_message=lambda message: told.append(message.task_id))
    snap = snapshot({"q": 1})
    found = find(engine, snap, "zwÖlf', 12")
    assert ids(found) == [published[0].task_id]  # repr of the decoded args
    assert told == [published[0].task_id]  # the page's messages, not all scanned
    assert found.hits[0].message is not None and found.hits[0].status == "waiting"
    assert ids(find(engine, snap, "'SRC-7'")) == [published[0].task_id]
    timeout = find(engine, snap, "TimeoutError: upstream")
    assert ids(timeout) == [published[1].task_id]
    assert timeout.hits[0].job is retried
    assert ids(find(engine, snap, "secret")) == []  # a pickle body is never decoded
    assert ids(find(engine, snap, "app.send")) == [published[0].task_id, published[2].task_id]
    assert asked[0] == [p.task_id for p in published]


def test_an_undecodable_entry_costs_only_itself_and_an_id_is_listed_once(app: Celery) -> None:
    one = publish(app, "app.send", args=(1,), queue="q").raw
    two = publish(app, "app.send", args=(2,), queue="q").raw
    raws = [one, b"\xff\x00 not a message", b'{"headers": {"id": ["x"]}}', one, two]
    result = find(searcher(ListPager({"q": raws}), chunk=2), snapshot({"q": 0}), "app.send")
    assert [hit.message.args for hit in result.hits if hit.message] == [[1], [2]]
    assert result.scanned["lists"] == {"q": {"scanned": 5, "total": 5}}


def test_a_broker_error_is_reported_and_the_rest_still_searched(app: Celery) -> None:
    snap, _pager, names = order_fixture(app)
    pager = ListPager(_pager.lists, fail="emails")
    result = find(searcher(pager), snap, "app.match")
    assert result.scanned["lists"] == {
        "emails": {"scanned": 0, "total": None,
                   "error": "the broker did not answer: ConnectionError"},
        "idle": {"scanned": 0, "total": None,
                 "error": "the broker did not answer: ConnectionError"},
    }
    assert [c[0] for c in pager.calls] == ["emails"]  # it stops at the first error
    assert named(result, names) == [
        n for n in ORDER if not n.startswith(("waiting-", "paused-"))
    ]


def test_without_a_pager_nothing_is_read_from_the_lists(app: Celery) -> None:
    snap, _pager, _names = order_fixture(app)
    result = find(searcher(None), snap, "app.match")
    assert result.total == len(ORDER) - 3
    assert result.scanned["lists"] == {}


# -- the texts of retained jobs, kept from one snapshot to the next -----------------------------


def test_a_new_snapshot_costs_only_the_jobs_finished_since() -> None:
    reason = CountingReason()
    engine = JobSearch(None, failed_reason=reason)
    old = [job(f"f-{i}", finished_at=NOW + i, failures=[ValueError(f"bad {i}")])
           for i in range(5, 0, -1)]
    first = snapshot({"emails": 1}, retained={"emails": ((), old)})
    assert ids(find(engine, first, "valueerror: bad")) == ["f-5", "f-4", "f-3", "f-2", "f-1"]
    assert reason.calls == 5
    newest = job("f-6", finished_at=NOW + 6, failures=[ValueError("bad 6")])
    second = snapshot({"emails": 1}, retained={"emails": ((), [newest, *old[:-1]])},
                      generation=2)
    assert ids(find(engine, second, "valueerror: bad")) == ["f-6", "f-5", "f-4", "f-3", "f-2"]
    assert reason.calls == 6
    assert find(engine, second, "bad 1").total == 0  # evicted
    shuffled = snapshot({"emails": 1}, retained={"emails": ((), [old[2], newest, old[0]])},
                        generation=3)
    assert ids(find(engine, shuffled, "bad")) == ["f-3", "f-6", "f-5"]
    assert reason.calls == 6  # every text known already


def test_texts_are_built_only_for_what_a_search_looks_at() -> None:
    reason = CountingReason()
    engine = JobSearch(None, failed_reason=reason)
    failed = [job(f"f-{i}", finished_at=NOW, failures=[OSError("Disk FULL on node-7")])
              for i in range(3)]
    running = job("run-1", failures=[TimeoutError("slow")])
    snap = snapshot({"emails": 1}, retained={"emails": ((), failed)},
                    placements=[TaskPlacement("run-1", None, "emails", "active")],
                    details=[running])
    assert ids(find(engine, snap, "timeouterror: slow", status="active")) == ["run-1"]
    assert reason.calls == 1  # the in-flight job's failure only
    assert find(engine, snap, "disk full", status="failed").total == 3
    assert reason.calls == 2  # one failure shared by the three retained jobs
    assert find(engine, snap, "disk full").total == 3
    assert reason.calls == 2


def test_a_failure_shared_by_many_jobs_is_read_once() -> None:
    reason = CountingReason()
    engine = JobSearch(None, failed_reason=reason)
    failure = job("x", failures=[DISK]).failures
    assert failure is not None
    jobs = []
    for i in range(50):
        made = job(f"f-{i}", finished_at=NOW)
        made.failures = list(failure)
        jobs.append(made)
    snap = snapshot({"emails": 1}, retained={"emails": ((), jobs)})
    assert find(engine, snap, "disk full").total == 50
    assert reason.calls == 1


def test_an_empty_page_still_counts_every_match() -> None:
    jobs = [job(f"c-{i}", finished_at=NOW - i) for i in range(30)]
    snap = snapshot({"emails": 1}, retained={"emails": (jobs, ())})
    result = find(searcher(), snap, "c-", offset=30, limit=10)
    assert (result.hits, result.total) == ((), 30)
    assert ids(find(searcher(), snap, "c-", offset=25, limit=10)) == [
        f"c-{i}" for i in range(25, 30)
    ]


# -- the resource ---------------------------------------------------------------------------


class Provider:
    """A snapshot (or none yet) for the resource."""

    def __init__(self, snap: Snapshot | None) -> None:
        self._snapshot = snap

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def rendered(self) -> RenderedMetrics | None:
        return None


class Backend:
    """The runtime's part the resource uses: a JobSearch over the provider's snapshot."""

    def __init__(self, provider: Provider, engine: JobSearch) -> None:
        self._provider = provider
        self._engine = engine
        self.queries: list[SearchQuery] = []

    def waiting_page(self, queue: str, offset: int, limit: int) -> list[WaitingMessage]:
        return []

    def search(self, query: SearchQuery) -> SearchResult:
        self.queries.append(query)
        snap = self._provider.snapshot
        assert snap is not None
        return self._engine.search(snap, query)


@pytest.fixture
def client(app: Celery) -> Iterator[tuple[falcon.testing.TestClient, Backend]]:
    snap, pager, _names = order_fixture(app)
    provider = Provider(snap)
    backend = Backend(provider, searcher(pager))
    web = falcon.asgi.App(media_type=falcon.MEDIA_JSON)
    web.req_options.auto_parse_qs_csv = False
    install_error_handlers(web)
    with ThreadPoolExecutor(max_workers=2) as pool:
        resource = SearchResource(provider, lambda: backend, max_limit=50, executor=pool)
        web.add_route("/v1/jobs/search", resource)
        yield falcon.testing.TestClient(web), backend


def test_the_answer_holds_job_objects_pagination_and_what_was_scanned(
    client: tuple[falcon.testing.TestClient, Backend],
) -> None:
    http, backend = client
    answer = http.simulate_get("/v1/jobs/search", params={"q": "APP.MATCH", "limit": "4",
                                                           "page": "2"})
    assert answer.status_code == 200, answer.text
    body = answer.json
    assert body["pagination"] == {"currentPage": 2, "totalPages": 4, "totalJobs": 13,
                                  "limit": 4}
    assert [job["state"] for job in body["jobs"]] == ["waiting", "waiting", "waiting", "paused"]
    assert body["jobs"][0]["id"] == "prefetched-1"
    assert body["jobs"][1]["data"] == {"args": [1], "kwargs": {}}
    assert body["scanned"]["lists"]["idle"] == {"scanned": 1, "total": 1}
    assert backend.queries == [SearchQuery("APP.MATCH", None, None, 4, 4)]
    failed = http.simulate_get("/v1/jobs/search", params={"q": "disk", "status": "failed"})
    assert [job["failedReason"] for job in failed.json["jobs"]] == [
        "OSError: Disk FULL on node-7"] * 2
    assert failed.json["jobs"][0]["error"] == "OSError: Disk FULL on node-7"


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "missing `q`: expected a text of 1 to 200 characters"),
        ({"q": ""}, 400, "missing `q`"),
        ({"q": "x" * (MAX_QUERY_CHARS + 1)}, 400, "invalid `q`: 201 characters"),
        ({"q": "x", "status": "done"}, 400, "invalid `status`: 'done'; expected one of waiting"),
        ({"q": "x", "limit": "51"}, 400, "invalid `limit`: '51'; expected an integer from 1 to 50"),
        ({"q": "x", "page": "0"}, 400, "invalid `page`: '0'"),
        ({"q": "x", "queue": "nowhere"}, 404, "unknown queue 'nowhere'"),
        ({"q": "x", "status": "done", "queue": "nowhere"}, 400, "invalid `status`"),
    ],
)
def test_bad_parameters_are_refused_like_the_jobs_api(
    client: tuple[falcon.testing.TestClient, Backend],
    params: dict[str, str], status: int, message: str,
) -> None:
    http, backend = client
    answer = http.simulate_get("/v1/jobs/search", params=params)
    assert answer.status_code == status
    assert answer.json["message"].startswith(message), answer.json
    assert backend.queries == []


def test_a_repeated_parameter_is_refused(
    client: tuple[falcon.testing.TestClient, Backend],
) -> None:
    http, _backend = client
    answer = http.simulate_get("/v1/jobs/search", query_string="q=a&q=b")
    assert answer.status_code == 400
    assert answer.json["message"].startswith("invalid `q`: given 2 times")


def test_the_longest_query_and_an_empty_queue_are_accepted(
    client: tuple[falcon.testing.TestClient, Backend],
) -> None:
    http, backend = client
    answer = http.simulate_get("/v1/jobs/search",
                               params={"q": "é" * MAX_QUERY_CHARS, "queue": "", "status": ""})
    assert answer.status_code == 200
    assert answer.json["pagination"]["totalJobs"] == 0
    assert backend.queries[0].queue is None and backend.queries[0].status is None


def test_before_the_first_snapshot_the_answer_is_503() -> None:
    web = falcon.asgi.App(media_type=falcon.MEDIA_JSON)
    install_error_handlers(web)
    provider = Provider(None)
    with ThreadPoolExecutor(max_workers=1) as pool:
        backend = Backend(provider, searcher())
        web.add_route("/v1/jobs/search", SearchResource(
            provider, lambda: backend, max_limit=50, executor=pool))
        web.add_route("/v1/follower/search", SearchResource(
            provider, lambda: None, max_limit=50, executor=pool))
        http = falcon.testing.TestClient(web)
        answer = http.simulate_get("/v1/jobs/search", params={"q": "x"})
        assert answer.status_code == 503
        assert answer.json["message"].startswith("no snapshot yet")
        follower = http.simulate_get("/v1/follower/search", params={"q": "x"})
        assert follower.status_code == 503
        assert "runs the refresher" in follower.json["message"]
        assert follower.headers["retry-after"] == "2"


def test_the_resource_asks_what_the_queue_listing_asks() -> None:
    assert SearchResource.required_permission is QueuesResource.required_permission
