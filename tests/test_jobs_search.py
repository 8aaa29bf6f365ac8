"""Job search over a real broker: the bounded scan of lists a real Celery app published to.

A private redis-server; the test Celery app publishes to two queues nobody consumes,
at several priorities, in JSON, msgpack, YAML and pickle, next to an entry that is no
message at all. The snapshot says one queue has a consumer (its list is `waiting`)
and the other none (`paused`). The scan reads the lists through the exporter's own
QueuePager: in the order workers take the messages, at most `max_scan` per queue, and
`scanned` says how far it went; then the same through the HTTP resource, and with
the broker gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import falcon
import falcon.asgi
import falcon.testing
import jsonschema
import pytest
import redis
from celery import Celery

from exporter.core.search import JobSearch
from exporter.model.jobs import Job, pack_traceback
from exporter.model.readings import WaitingMessage
from exporter.model.search import SearchQuery, SearchResult
from exporter.model.snapshot import (
    STATUSES,
    ExporterCounters,
    QueueState,
    Snapshot,
    SourceHealth,
)
from exporter.model.stats import TaskStatsData
from exporter.prometheus.render import RenderedMetrics
from exporter.protocol.keys import TransportOptions
from exporter.sources.broker import QueuePager
from exporter.sources.redis import connect, parse_endpoint
from exporter.web.app import OPENAPI_PATH
from exporter.web.errors import install_error_handlers
from exporter.web.jobformat import failed_reason
from exporter.web.search import SearchResource
from testkit.celery_worker import load_app
from testkit.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

BUSY, IDLE = "search-busy", "search-idle"
DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
SEARCH_PAGE = jsonschema.Draft202012Validator(
    {**DOCUMENT["components"]["schemas"]["SearchPage"], "components": DOCUMENT["components"]}
)
TRANSPORTS: dict[str, dict[str, Any]] = {
    "default": {},
    "custom": {"priority_steps": [0, 5], "sep": ":", "global_keyprefix": "pfx:"},
}


class Broker:
    """What the test published, and the exporter's view of the broker."""

    def __init__(self, server: RedisServer, options: dict[str, Any]) -> None:
        self.server = server
        self.app: Celery = load_app(server.url, options)
        self.transport = TransportOptions(
            sep=options.get("sep", TransportOptions.sep),
            priority_steps=tuple(options.get("priority_steps", TransportOptions.priority_steps)),
            global_keyprefix=options.get("global_keyprefix", ""),
        )
        self.client = connect(parse_endpoint(server.url), self.transport, socket_timeout=5.0)
        self.pager = QueuePager(self.client, self.transport)

    def send(self, queue: str, **options: Any) -> str:
        task_id: str = self.app.send_task("tests.ingest", queue=queue, **options).id
        return task_id

    def length(self, queue: str) -> int:
        """Messages in the queue's lists, every priority sub-list (LLEN)."""
        return sum(int(self.client.llen(key)) for key in self.transport.queue_keys(queue))

    def in_pop_order(self, queue: str) -> list[str | None]:
        """Task ids in the order workers take them (QueuePager), None for no message."""
        raws, _total = self.pager.page(queue, 0, 10_000)
        found: list[str | None] = []
        for raw in raws:
            try:
                found.append(json.loads(raw)["headers"]["id"])
            except (ValueError, KeyError, TypeError):
                found.append(None)
        return found


@pytest.fixture(params=sorted(TRANSPORTS))
def broker(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Broker]:
    made = Broker(redis_server, TRANSPORTS[request.param])
    try:
        yield made
    finally:
        made.client.close()
        made.app.close()


def failed_job(task_id: str) -> Job:
    """A retained failed job (what the events told about an earlier run)."""
    job = Job(task_id)
    job.name, job.queue, job.args, job.kwargs = "tests.ingest", BUSY, "()", "{'n': 1}"
    job.finished_at, job.state, job.attempts = 1_700_000_000.0, "failed", 1
    job.failures = [("ValueError('searched failure')", pack_traceback("Traceback …"))]
    return job


def snapshot(retained: tuple[Job, ...] = ()) -> Snapshot:
    """`search-busy` has a consumer (its list is waiting), `search-idle` none (paused)."""
    zero = dict.fromkeys(STATUSES, 0)
    return Snapshot(
        generation=1, created_at=0.0,
        queues={BUSY: QueueState(BUSY, zero, 1, 0), IDLE: QueueState(IDLE, zero, 0, 0)},
        workers={}, stats=TaskStatsData({}, {}, {}, 0),
        sources={"broker": SourceHealth("broker", True, 1.0)}, counters=ExporterCounters(),
        placements=(), refresh_duration=0.0, last_success=1.0, broker_round_trips=1,
        retained_jobs={BUSY: ((), retained)},
    )


def ids(result: SearchResult) -> list[str]:
    return [hit.message.task_id for hit in result.hits if hit.message is not None]


def test_the_scan_reads_each_list_in_the_order_workers_take_it(broker: Broker) -> None:
    busy = [
        broker.send(BUSY, kwargs={"ingestionSourceId": f"src-{i:02d}", "payload": [i]},
                    priority=(i * 3) % 10)
        for i in range(40)
    ]
    idle = [broker.send(IDLE, kwargs={"ingestionSourceId": f"idle-{i}"}) for i in range(5)]
    engine = JobSearch(broker.pager, failed_reason=failed_reason, chunk=7)
    snap = snapshot()
    result = engine.search(snap, SearchQuery("TESTS.INGEST", limit=100))
    order = broker.in_pop_order(BUSY)
    assert sorted(id_ for id_ in order if id_) == sorted(busy)
    assert ids(result) == [*order, *broker.in_pop_order(IDLE)]
    assert [hit.status for hit in result.hits] == ["waiting"] * 40 + ["paused"] * 5
    assert result.total == 45
    assert result.scanned == {
        "retained": 0, "inFlight": 0,
        "lists": {BUSY: {"scanned": 40, "total": 40}, IDLE: {"scanned": 5, "total": 5}},
    }
    one = engine.search(snap, SearchQuery("'SRC-17'"))
    assert ids(one) == [busy[17]]
    assert one.hits[0].message is not None
    assert one.hits[0].message.kwargs == {"ingestionSourceId": "src-17", "payload": [17]}
    assert ids(engine.search(snap, SearchQuery(idle[3][-12:].upper()))) == [idle[3]]
    paused = engine.search(snap, SearchQuery("ingest", status="paused", limit=2, offset=4))
    assert (ids(paused), paused.total) == (broker.in_pop_order(IDLE)[4:], 5)
    assert paused.scanned["lists"] == {IDLE: {"scanned": 5, "total": 5}}


def test_at_most_max_scan_messages_are_read_per_queue(broker: Broker) -> None:
    for i in range(120):
        broker.send(BUSY, kwargs={"ingestionSourceId": f"src-{i:03d}"}, priority=i % 10)
    broker.send(IDLE, kwargs={"ingestionSourceId": "idle"})
    engine = JobSearch(broker.pager, failed_reason=failed_reason, chunk=25)
    order = broker.in_pop_order(BUSY)
    result = engine.search(snapshot(), SearchQuery("src-", limit=200), max_scan=50)
    assert ids(result) == order[:50]
    assert result.scanned["lists"] == {
        BUSY: {"scanned": 50, "total": 120}, IDLE: {"scanned": 1, "total": 1},
    }
    assert result.total == 50
    assert broker.length(BUSY) == 120  # read, never taken


def test_every_serializer_is_matched_on_its_decoded_arguments(broker: Broker) -> None:
    sent = {
        "json": broker.send(IDLE, kwargs={"ingestionSourceId": "Zwölf-json"}),
        "msgpack": broker.send(IDLE, kwargs={"ingestionSourceId": "zwölf-msgpack"},
                               serializer="msgpack"),
        "yaml": broker.send(IDLE, kwargs={"ingestionSourceId": "ZWÖLF-yaml"},
                            serializer="yaml"),
        "pickle": broker.send(IDLE, kwargs={"ingestionSourceId": "zwölf-pickle"},
                              serializer="pickle"),
    }
    broker.client.lpush(broker.transport.queue_keys(IDLE)[0], b"\xff\x00 no message")
    engine = JobSearch(broker.pager, failed_reason=failed_reason)
    result = engine.search(snapshot(), SearchQuery("zwölf-", status="paused"))
    assert sorted(ids(result)) == sorted([sent["json"], sent["msgpack"], sent["yaml"]])
    assert result.scanned["lists"] == {IDLE: {"scanned": 5, "total": 5}}
    by_name = engine.search(snapshot(), SearchQuery("tests.ingest", status="paused"))
    assert by_name.total == 4  # the pickle one by its name; the garbage costs only itself
    pickle = [h for h in by_name.hits if h.message and h.message.task_id == sent["pickle"]]
    assert pickle[0].message is not None and pickle[0].message.body_error


class Provider:
    def __init__(self, snap: Snapshot) -> None:
        self._snapshot = snap

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def rendered(self) -> RenderedMetrics | None:
        return None


class Backend:
    """The runtime's side of the web port: a JobSearch over the broker and the snapshot."""

    def __init__(self, provider: Provider, engine: JobSearch) -> None:
        self._provider = provider
        self._engine = engine

    def waiting_page(self, queue: str, offset: int, limit: int) -> list[WaitingMessage]:
        return []

    def search(self, query: SearchQuery) -> SearchResult:
        snap = self._provider.snapshot
        assert snap is not None
        return self._engine.search(snap, query)


def test_the_answer_and_a_broker_outage(broker: Broker) -> None:
    sent = broker.send(IDLE, kwargs={"ingestionSourceId": "src-http", "payload": {"a": [1]}})
    retained = failed_job("retained-failure-1")
    provider = Provider(snapshot((retained,)))
    backend = Backend(provider, JobSearch(broker.pager, failed_reason=failed_reason))
    web = falcon.asgi.App(media_type=falcon.MEDIA_JSON)
    web.req_options.auto_parse_qs_csv = False
    install_error_handlers(web)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for prefix in ("/v1", "/api/v1"):
            web.add_route(f"{prefix}/jobs/search",
                          SearchResource(provider, lambda: backend, max_limit=100,
                                         executor=pool))
        http = falcon.testing.TestClient(web)
        answer = http.simulate_get("/api/v1/jobs/search", params={"q": "SRC-HTTP"})
        assert answer.status_code == 200, answer.text
        body = answer.json
        SEARCH_PAGE.validate(body)
        [job] = body["jobs"]
        assert (job["id"], job["name"], job["state"]) == (sent, "tests.ingest", "paused")
        assert job["data"] == {"args": [], "kwargs": {"ingestionSourceId": "src-http",
                                                      "payload": {"a": [1]}}}
        assert job["ingestionSourceId"] == "src-http"
        assert body["pagination"] == {"currentPage": 1, "totalPages": 1, "totalJobs": 1,
                                      "limit": 10}
        assert body["scanned"] == {
            "retained": 1, "inFlight": 0,
            "lists": {BUSY: {"scanned": 0, "total": 0}, IDLE: {"scanned": 1, "total": 1}},
        }
        broker.server.cleanup()  # the broker goes away
        gone = http.simulate_get("/v1/jobs/search", params={"q": "searched failure"})
        assert gone.status_code == 200, gone.text
        SEARCH_PAGE.validate(gone.json)
        assert [j["failedReason"] for j in gone.json["jobs"]] == ["ValueError: searched failure"]
        lists = gone.json["scanned"]["lists"]
        assert set(lists) == {BUSY, IDLE}
        for report in lists.values():
            assert report["scanned"] == 0 and report["total"] is None
            assert report["error"].startswith("the broker did not answer: ")
    with pytest.raises(redis.ConnectionError):
        broker.client.ping()
