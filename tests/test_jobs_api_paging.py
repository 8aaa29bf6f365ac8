"""Paging the Jobs API at its edges, in the order real Celery workers take the jobs.

A private redis-server, a real Celery app publishing to queues nobody consumes (their
jobs are `paused`), at several priorities and under the default and a custom
`priority_steps`; then a real worker (concurrency 1, prefetch 1) drains the queue and
its log says the order it took them, which must be the order of the pages. Also: the
prefetched job first while a worker is busy, retention of completed/failed jobs
(newest first), delayed jobs by ETA, and messages in msgpack, YAML, pickle (never
unpickled) and garbage.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from exporter.web.app import OPENAPI_PATH
from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

KEY = "paging-key-0123456789abcdef"
HEADERS = {"X-API-KEY": KEY}
FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5", "--api-key", KEY)
DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
PAGE_SCHEMA = jsonschema.Draft202012Validator(
    {**DOCUMENT["components"]["schemas"]["QueueJobs"], "components": DOCUMENT["components"]}
)
RECEIVED = re.compile(r"Task tests\.\w+\[([0-9a-f-]{36})\] received")


# -- helpers -----------------------------------------------------------------------------------


def strict_json(text: str) -> Any:
    """Parse JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def page(
    sidecar: Sidecar, queue: str, status: str, page_number: int = 1, limit: int = 10
) -> dict[str, Any]:
    """One page, checked: 200, valid JSON, the document's schema, the pagination arithmetic."""
    response = sidecar.get(
        f"/v1/jobs/queues/{queue}",
        params={"status": status, "page": page_number, "limit": limit},
        headers=HEADERS,
    )
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = strict_json(response.text)
    PAGE_SCHEMA.validate(body)
    total = body["pagination"]["totalJobs"]
    assert body["pagination"] == {
        "currentPage": page_number,
        "totalPages": math.ceil(total / limit),
        "totalJobs": total,
        "limit": limit,
    }
    assert total == body["counts"][status]
    expected = max(0, min(limit, total - (page_number - 1) * limit))
    assert len(body["jobs"]) == expected, (page_number, limit, total, len(body["jobs"]))
    assert all(job["state"] == status for job in body["jobs"])
    return body


def ids(body: Mapping[str, Any]) -> list[str]:
    return [job["id"] for job in body["jobs"]]


def every_id(sidecar: Sidecar, queue: str, status: str, limit: int) -> list[str]:
    """The ids of every page in turn, up to and including the empty page after the last."""
    found: list[str] = []
    number = 1
    while True:
        body = page(sidecar, queue, status, number, limit)
        if not body["jobs"]:
            assert number == body["pagination"]["totalPages"] + 1
            return found
        found += ids(body)
        number += 1


def wait_total(
    sidecar: Sidecar, queue: str, status: str, total: int, timeout: float = 60.0,
    *, first: str | None = None, limit: int = 100,
) -> dict[str, Any]:
    """Poll until the queue has `total` jobs of that status (and, if given, `first` on top)."""
    body: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal body
        body = page(sidecar, queue, status, 1, limit)
        return bool(body["pagination"]["totalJobs"] == total) and (
            first is None or ids(body)[:1] == [first]
        )

    if not wait_until(reached, timeout=timeout, interval=0.2):
        raise AssertionError(f"{queue}/{status}: {body.get('pagination')} (wanted {total})")
    return body


def bad_limit(sidecar: Sidecar, queue: str, limit: int, maximum: int) -> None:
    response = sidecar.get(
        f"/v1/jobs/queues/{queue}", params={"status": "paused", "limit": limit}, headers=HEADERS
    )
    assert response.status_code == 400
    message = strict_json(response.text)["message"]
    assert "`limit`" in message and f"from 1 to {maximum}" in message, message


def taken_order(worker: CeleryWorker, count: int, timeout: float = 60.0) -> list[str]:
    """The task ids in the order the worker received them (its log), once it has `count`."""
    found: list[str] = []

    def received() -> bool:
        nonlocal found
        found = RECEIVED.findall(worker.log())
        return len(found) >= count

    if not wait_until(received, timeout=timeout, interval=0.2):
        raise AssertionError(
            f"the worker received {len(found)} of {count}:\n{worker.log()[-2000:]}"
        )
    return found


def priority_step(priority: int, steps: Sequence[int]) -> int:
    """The sub-list kombu puts a message of this priority in (the largest step ≤ priority)."""
    return max(step for step in steps if step <= priority)


def events_up(sidecar: Sidecar) -> None:
    """Wait until the sidecar is subscribed to the event stream (task-sent events count)."""
    sidecar.wait_for(
        lambda samples: value(samples, "celery_exporter_source_up", source="events") == 1
    )


@pytest.fixture
def workers() -> Iterator[Callable[..., CeleryWorker]]:
    """Start CeleryWorker processes; each is killed after the test."""
    started: list[CeleryWorker] = []

    def start(url: str, **kwargs: Any) -> CeleryWorker:
        worker = CeleryWorker(url, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
        worker.close()


# -- a paused queue, page by page, against the order a worker takes it -------------------------


@pytest.mark.parametrize(
    ("transport", "max_limit", "count"),
    [
        ({}, None, 230),
        ({"priority_steps": [0, 2, 5, 8], "sep": ":"}, 150, 170),
    ],
    ids=["default-steps", "custom-steps-and-max-limit"],
)
def test_pages_of_a_paused_queue_are_the_order_a_worker_takes_them(
    redis_server: RedisServer,
    workers: Callable[..., CeleryWorker],
    transport: dict[str, Any],
    max_limit: int | None,
    count: int,
) -> None:
    flags = [f"--broker-transport-option={k}={json.dumps(v) if k != 'sep' else v}"
             for k, v in transport.items()]
    if max_limit is not None:
        flags += ["--api-max-limit", str(max_limit)]
    maximum = max_limit or 100
    steps = transport.get("priority_steps", [0, 3, 6, 9])
    app = load_app(redis_server.url, transport)
    with Sidecar(redis_server.url, *FAST, *flags, "--queue", "pq", "--queue", "none") as sidecar:
        sidecar.wait_ready()
        sent = [
            (app.send_task("tests.add", args=(i, 0), queue="pq", priority=(i * 7) % 10).id,
             (i * 7) % 10)
            for i in range(count)
        ]
        # Several Redis lists hold them, one per priority step in use.
        client = redis_server.client()
        sublists = client.keys("pq*")
        assert len(sublists) == len(steps), sublists
        assert sum(client.llen(k) for k in sublists) == count
        wait_total(sidecar, "pq", "paused", count)

        expected = [
            task_id for _step, _index, task_id in sorted(
                (priority_step(p, steps), index, task_id)
                for index, (task_id, p) in enumerate(sent)
            )
        ]
        # limit = the maximum: page 1, the last page (short), a page past the end.
        pages = math.ceil(count / maximum)
        first = page(sidecar, "pq", "paused", 1, maximum)
        assert ids(first) == expected[:maximum]
        last = page(sidecar, "pq", "paused", pages, maximum)
        assert ids(last) == expected[(pages - 1) * maximum:]
        assert 0 < len(last["jobs"]) < maximum
        beyond = page(sidecar, "pq", "paused", pages + 1, maximum)
        assert beyond["jobs"] == [] and beyond["pagination"]["totalPages"] == pages
        assert page(sidecar, "pq", "paused", 10**6, maximum)["jobs"] == []
        # limit 1: every job is its own page; the first, the last, and past the end.
        assert ids(page(sidecar, "pq", "paused", 1, 1)) == expected[:1]
        assert ids(page(sidecar, "pq", "paused", count, 1)) == expected[-1:]
        assert page(sidecar, "pq", "paused", count + 1, 1)["jobs"] == []
        assert ids(page(sidecar, "pq", "paused", count // 2, 1)) == [expected[count // 2 - 1]]
        # Pages of an odd size cross the priority sub-lists without losing or repeating one.
        assert every_id(sidecar, "pq", "paused", 7) == expected
        assert every_id(sidecar, "pq", "paused", maximum) == expected
        bad_limit(sidecar, "pq", maximum + 1, maximum)
        bad_limit(sidecar, "pq", 0, maximum)
        # Job fields of a paused message.
        job = first["jobs"][0]
        index = [task_id for task_id, _ in sent].index(job["id"])
        assert job["name"] == "tests.add" and job["data"] == {"args": [index, 0], "kwargs": {}}
        assert job["attemptsMade"] == 0 and job["processedOn"] is None
        # An empty queue: no pages at all.
        for number in (1, 2):
            empty = page(sidecar, "none", "paused", number, maximum)
            assert empty["jobs"] == [] and empty["pagination"]["totalPages"] == 0

        # Now a real worker (concurrency 1, prefetch 1) takes them: in the pages' order.
        worker = workers(redis_server.url, queues=("pq",), concurrency=1,
                         transport_options=transport, name="drain")
        assert taken_order(worker, count) == expected
        completed = wait_total(sidecar, "pq", "completed", count, first=expected[-1])
        # Completed jobs are listed newest first: the reverse of the order they ran.
        assert every_id(sidecar, "pq", "completed", maximum) == expected[::-1]
        assert ids(completed)[:3] == expected[::-1][:3]


# -- waiting, with a busy worker: the prefetched job first ----------------------------------------


def test_waiting_pages_start_with_the_prefetched_job(
    redis_server: RedisServer, workers: Callable[..., CeleryWorker]
) -> None:
    worker = workers(redis_server.url, queues=("busy",), concurrency=1, name="busy")
    app = load_app(redis_server.url)
    with Sidecar(redis_server.url, *FAST, "--queue", "busy") as sidecar:
        worker.wait_ready()
        sidecar.wait_ready()
        events_up(sidecar)
        sleeper = app.send_task("tests.sleep", args=(6,), queue="busy").id
        wait_total(sidecar, "busy", "active", 1)
        # The first is prefetched at once (the worker has a free slot); the others wait in
        # the lists, by priority step, then first in first out.
        priorities = [0, 9, 0, 6, 3, 0]
        sent = [app.send_task("tests.add", args=(i, 1), queue="busy", priority=p).id
                for i, p in enumerate(priorities)]
        expected = [sent[0], sent[2], sent[5], sent[4], sent[3], sent[1]]
        body = wait_total(sidecar, "busy", "waiting", len(sent))
        assert ids(body) == expected
        prefetched = body["jobs"][0]
        assert prefetched["name"] == "tests.add"
        assert prefetched["data"] == {"args": [0, 1], "kwargs": {}}
        assert prefetched["attemptsMade"] == 0
        assert prefetched["timestamp"] is not None
        assert body["counts"]["waiting"] == len(sent) and body["counts"]["active"] == 1
        # limit 1 and 2: the boundary between the prefetched job and the lists.
        assert [ids(page(sidecar, "busy", "waiting", n, 1)) for n in range(1, 8)] == [
            [task_id] for task_id in expected
        ] + [[]]
        assert [ids(page(sidecar, "busy", "waiting", n, 2)) for n in range(1, 5)] == [
            expected[0:2], expected[2:4], expected[4:6], []
        ]
        assert every_id(sidecar, "busy", "waiting", 4) == expected
        assert page(sidecar, "busy", "paused")["jobs"] == []
        active = page(sidecar, "busy", "active")
        assert ids(active) == [sleeper]
        # The worker then runs them in exactly that order.
        assert taken_order(worker, len(sent) + 1) == [sleeper, *expected]


# -- retention, newest first; delayed by ETA ---------------------------------------------------


def test_retention_keeps_exactly_the_newest_and_delayed_follow_their_eta(
    redis_server: RedisServer, workers: Callable[..., CeleryWorker]
) -> None:
    worker = workers(redis_server.url, queues=("r",), concurrency=1, name="retention")
    app = load_app(redis_server.url)
    flags = ("--completed-retention", "5", "--failed-retention", "3", "--queue", "r")
    with Sidecar(redis_server.url, *FAST, *flags) as sidecar:
        worker.wait_ready()
        sidecar.wait_ready()
        events_up(sidecar)
        done: list[str] = []
        failed: list[str] = []
        for i in range(8):
            done.append(app.send_task("tests.add", args=(i, 100), queue="r").id)
            if i < 6:
                failed.append(app.send_task("tests.fail", args=(f"boom {i}",), queue="r").id)
        countdowns = [300, 100, 200, 50, 400, 250]
        delayed = [app.send_task("tests.add", args=(c, 0), queue="r", countdown=c).id
                   for c in countdowns]
        by_eta = [task_id for _c, task_id in sorted(zip(countdowns, delayed, strict=True))]

        kept_done = wait_total(sidecar, "r", "completed", 5, first=done[-1])
        kept_failed = wait_total(sidecar, "r", "failed", 3, first=failed[-1])
        assert taken_order(worker, len(done) + len(failed) + len(delayed))[:14] == [
            task_id for pair in zip(done, [*failed, None, None], strict=True)
            for task_id in pair if task_id is not None
        ]
        assert ids(kept_done) == done[::-1][:5]
        assert ids(kept_failed) == failed[::-1][:3]
        assert every_id(sidecar, "r", "completed", 2) == done[::-1][:5]
        assert every_id(sidecar, "r", "failed", 2) == failed[::-1][:3]
        assert page(sidecar, "r", "completed", 3, 2)["pagination"]["totalPages"] == 3
        assert page(sidecar, "r", "failed", 3, 2)["jobs"] == []
        for job in kept_failed["jobs"]:
            assert job["failedReason"].startswith("ValueError: boom ")
            assert job["error"] == job["failedReason"]
        for job in kept_done["jobs"]:
            assert job["returnValue"] == job["data"]["args"][0] + 100
        counts = sidecar.get("/v1/jobs/queues", headers=HEADERS).json()["queues"]
        r_counts = next(q["counts"] for q in counts if q["name"] == "r")
        assert (r_counts["completed"], r_counts["failed"]) == (5, 3)

        body = wait_total(sidecar, "r", "delayed", len(delayed))
        assert ids(body) == by_eta
        assert every_id(sidecar, "r", "delayed", 4) == by_eta
        assert [ids(page(sidecar, "r", "delayed", n, 1)) for n in (1, 6, 7)] == [
            by_eta[:1], by_eta[5:], []
        ]


# -- message formats ---------------------------------------------------------------------------


class Canary:
    """Unpickling this object creates a file: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def formats() -> Iterator[tuple[RedisServer, Sidecar]]:
    """One sidecar for the message-format tests, subscribed to the events."""
    with contextlib.ExitStack() as stack:
        redis = RedisServer()
        stack.callback(redis.cleanup)
        sidecar = stack.enter_context(Sidecar(
            redis.url, *FAST, "--queue", "odd", "--queue", "floats", "--queue", "deep",
        ))
        sidecar.wait_ready()
        events_up(sidecar)
        yield redis, sidecar


def test_msgpack_yaml_pickle_and_garbage_messages(
    formats: tuple[RedisServer, Sidecar], tmp_path: Path
) -> None:
    redis_server, sidecar = formats
    app = load_app(redis_server.url)
    canary = tmp_path / "unpickled"
    before = time.time()
    payload = {"rows": [1, 2, 3], "ratio": 0.5, "name": "ünïcode", "nested": {"ok": True}}
    sent = {
        serializer: app.send_task(
            "tests.ingest", kwargs={"ingestionSourceId": f"src-{serializer}",
                                    "payload": payload},
            queue="odd", serializer=serializer,
        ).id
        for serializer in ("json", "msgpack", "yaml")
    }
    pickled = app.send_task(
        "tests.ingest", kwargs={"ingestionSourceId": "src-pickle", "payload": Canary(canary)},
        queue="odd", serializer="pickle",
    ).id
    after = time.time()
    redis_server.client().lpush("odd", b"\x00garbage{not: a message")
    body = wait_total(sidecar, "odd", "paused", 5)
    jobs = body["jobs"]
    assert [job["id"] for job in jobs] == [sent["json"], sent["msgpack"], sent["yaml"],
                                          pickled, None]
    for serializer, job in zip(("json", "msgpack", "yaml"), jobs, strict=False):
        assert job["name"] == "tests.ingest", serializer
        assert job["data"] == {
            "args": [], "kwargs": {"ingestionSourceId": f"src-{serializer}", "payload": payload},
        }, serializer
        assert job["ingestionSourceId"] == f"src-{serializer}"
        assert job["state"] == "paused"
        assert job["attemptsMade"] == 0
        assert job["failedReason"] is None and job["error"] is None
        assert job["stacktrace"] == [] and job["returnValue"] is None
        assert job["processedOn"] is None and job["finishedOn"] is None
        assert before * 1000 - 1000 <= job["timestamp"] <= after * 1000 + 1000, serializer

    pickle_job = jobs[3]
    assert pickle_job["name"] == "tests.ingest"
    assert pickle_job["data"]["args"] == [] and pickle_job["data"]["kwargs"] == {}
    assert "pickle" in pickle_job["data"]["undecodable"]
    assert pickle_job["ingestionSourceId"] is None
    assert not canary.exists(), "the sidecar unpickled a message"

    garbage = jobs[4]
    assert garbage["id"] is None and garbage["name"] is None
    assert garbage["data"]["args"] == [] and garbage["data"]["kwargs"] == {}
    assert garbage["data"]["undecodable"]
    assert "garbage" in garbage["data"]["raw"]
    assert garbage["attemptsMade"] == 0 and garbage["stacktrace"] == []
    # Alone on its page, the garbage entry still gets a 200.
    assert page(sidecar, "odd", "paused", 5, 1)["jobs"] == [garbage]
    assert not canary.exists()


def copy_message(client: Any, queue: str, task_id: str, body: str) -> None:
    """Push a copy of the newest real message of `queue` with another id and JSON body."""
    envelope = json.loads(client.lindex(queue, 0))
    envelope["headers"]["id"] = task_id
    envelope["content-type"] = "application/json"
    envelope["content-encoding"] = "utf-8"
    envelope["body"] = base64.b64encode(body.encode()).decode()
    envelope["properties"]["body_encoding"] = "base64"
    client.lpush(queue, json.dumps(envelope))


def test_non_finite_numbers_in_a_message_still_give_valid_json(
    formats: tuple[RedisServer, Sidecar],
) -> None:
    """msgpack and YAML carry inf/-inf/nan; JSON has no such numbers: they appear as reprs."""
    redis_server, sidecar = formats
    app = load_app(redis_server.url)
    values = (float("inf"), float("-inf"), float("nan"))
    for serializer in ("msgpack", "yaml"):
        app.send_task("tests.add", args=values, queue="floats", serializer=serializer)

    def paused_page() -> httpx.Response:
        return sidecar.get("/v1/jobs/queues/floats", params={"status": "paused"}, headers=HEADERS)

    response = paused_page()

    def both_listed() -> bool:
        nonlocal response
        response = paused_page()
        return response.status_code == 200 and response.json()["counts"]["paused"] == 2

    assert wait_until(both_listed, timeout=30, interval=0.2), response.text[:300]
    body = strict_json(response.text)  # raises on Infinity / NaN tokens
    PAGE_SCHEMA.validate(body)
    for job in body["jobs"]:
        assert job["data"]["args"] == ["inf", "-inf", "nan"], job["data"]


def test_a_deeply_nested_message_does_not_break_its_page(
    formats: tuple[RedisServer, Sidecar],
) -> None:
    """Arguments nested ~1000 deep (orjson reads up to 1024) are truncated, not a 500."""
    redis_server, sidecar = formats
    app = load_app(redis_server.url)
    normal = app.send_task("tests.add", args=(1, 2), queue="deep").id
    client = redis_server.client()
    depth = 1000
    copy_message(client, "deep", "deep-one", f"[[{'[' * depth}{']' * depth}], {{}}, {{}}]")
    after = app.send_task("tests.add", args=(3, 4), queue="deep").id
    # Pages that do not hold it are fine.
    assert ids(wait_total(sidecar, "deep", "paused", 3, limit=1)) == [normal]
    assert ids(page(sidecar, "deep", "paused", 3, 1)) == [after]
    # The page that holds it must be too.
    body = page(sidecar, "deep", "paused", 1, 10)
    assert ids(body) == [normal, "deep-one", after]
    deep = body["jobs"][1]
    assert deep["name"] == "tests.add"
    assert len(json.dumps(deep["data"])) < 10_000
