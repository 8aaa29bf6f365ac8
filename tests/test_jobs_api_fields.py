"""Every field of every status page, checked against what real Celery tasks did."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import Samples
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

KEY = "test-key-0123456789abcdef"
HEADERS = {"X-API-KEY": KEY}
FLAGS = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5", "--api-key", KEY)
JOB_KEYS = {
    "id", "name", "data", "state", "failedReason", "timestamp", "processedOn", "finishedOn",
    "attemptsMade", "stacktrace", "returnValue", "ingestionSourceId", "error",
}


def jobs(sidecar: Sidecar, queue: str, status: str, **params: Any) -> dict[str, Any]:
    response = sidecar.get(
        f"/v1/jobs/queues/{queue}", params={"status": status, **params}, headers=HEADERS
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    for job in body["jobs"]:
        assert set(job) == JOB_KEYS
        assert job["state"] == status
    return body


def finished(samples: Samples, task: str, outcome: str) -> float:
    """`celery_tasks_total` of one task and outcome, whatever the queue label."""
    return sum(
        count for (name, labels), count in samples.items()
        if name == "celery_tasks_total"
        and dict(labels).get("task") == task and dict(labels).get("outcome") == outcome
    )


def wait_jobs(sidecar: Sidecar, queue: str, status: str, count: int) -> dict[str, Any]:
    body: dict[str, Any] = {}

    def counted() -> bool:
        nonlocal body
        body = jobs(sidecar, queue, status, limit=100)
        return bool(body["pagination"]["totalJobs"] == count)

    if not wait_until(counted, timeout=60, interval=0.2):
        raise AssertionError(f"{queue}/{status}: {body['pagination']} (wanted {count})")
    return body


def test_each_status_page_describes_what_the_tasks_did(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    worker = celery_worker_factory(
        redis_server.url, queues=("celery", "held"), concurrency=2, name="api"
    )
    app = load_app(redis_server.url)
    app.control.cancel_consumer("held", destination=[worker.hostname], reply=True)
    with Sidecar(redis_server.url, *FLAGS) as sidecar:
        sidecar.wait_ready()
        published = time.time()
        flaky = app.send_task("tests.flaky_fail", args=("disk full",), queue="celery").id
        ingest = app.send_task(
            "tests.ingest", kwargs={"ingestionSourceId": "src-42", "payload": {"rows": [1, 2]}},
            queue="celery",
        ).id
        added = app.send_task("tests.add", args=(20, 22), queue="celery").id
        delayed = app.send_task("tests.add", args=(1, 1), queue="celery", countdown=900).id
        running = app.send_task("tests.sleep", args=(60,), queue="celery").id
        held = app.send_task(
            "tests.ingest", kwargs={"ingestionSourceId": "src-7"}, queue="held"
        ).id

        failed = wait_jobs(sidecar, "celery", "failed", 1)["jobs"][0]
        assert failed["id"] == flaky
        assert failed["name"] == "tests.flaky_fail"
        assert failed["data"] == {"args": ["disk full"], "kwargs": {}}
        assert failed["failedReason"] == "ValueError: disk full"
        assert failed["error"] == failed["failedReason"]
        assert failed["attemptsMade"] == 3
        assert len(failed["stacktrace"]) == 3
        assert all("ValueError: disk full" in tb for tb in failed["stacktrace"])
        assert "Retry in" in failed["stacktrace"][0]
        assert failed["stacktrace"][-1].startswith("Traceback (most recent call last)")
        assert failed["returnValue"] is None
        assert failed["ingestionSourceId"] is None
        assert published * 1000 - 1000 <= failed["timestamp"] <= failed["processedOn"]
        assert failed["processedOn"] <= failed["finishedOn"] <= time.time() * 1000
        # The last attempt started after two retry countdowns of 0.2 s.
        assert failed["processedOn"] - failed["timestamp"] >= 400

        completed = {j["id"]: j for j in wait_jobs(sidecar, "celery", "completed", 2)["jobs"]}
        assert set(completed) == {ingest, added}
        assert completed[added]["returnValue"] == 42
        assert completed[added]["data"] == {"args": [20, 22], "kwargs": {}}
        ingested = completed[ingest]
        assert ingested["returnValue"] == {"ok": True, "source": "src-42"}
        assert ingested["ingestionSourceId"] == "src-42"
        assert ingested["data"]["kwargs"] == {"ingestionSourceId": "src-42",
                                              "payload": {"rows": [1, 2]}}
        assert ingested["attemptsMade"] == 1
        assert ingested["failedReason"] is None and ingested["error"] is None
        assert ingested["stacktrace"] == []

        late = wait_jobs(sidecar, "celery", "delayed", 1)["jobs"][0]
        assert late["id"] == delayed
        assert late["data"] == {"args": [1, 1], "kwargs": {}}
        assert late["attemptsMade"] == 0
        assert late["processedOn"] is None and late["finishedOn"] is None

        active = wait_jobs(sidecar, "celery", "active", 1)["jobs"][0]
        assert active["id"] == running
        assert active["name"] == "tests.sleep"
        assert active["data"] == {"args": [60], "kwargs": {}}
        assert active["attemptsMade"] == 1
        assert active["processedOn"] is not None and active["finishedOn"] is None

        paused = wait_jobs(sidecar, "held", "paused", 1)["jobs"][0]
        assert paused["id"] == held
        assert paused["name"] == "tests.ingest"
        assert paused["data"] == {"args": [], "kwargs": {"ingestionSourceId": "src-7"}}
        assert paused["ingestionSourceId"] == "src-7"
        assert paused["attemptsMade"] == 0
        assert paused["timestamp"] is not None  # its task-sent event was seen

        queues = sidecar.get("/v1/jobs/queues", headers=HEADERS).json()["queues"]
        counts = {q["name"]: q["counts"] for q in queues}
        assert counts["celery"] == {"waiting": 0, "active": 1, "delayed": 1, "paused": 0,
                                    "completed": 2, "failed": 1}
        assert counts["held"]["paused"] == 1


def test_failed_jobs_survive_a_sidecar_restart_within_retention(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    celery_worker_factory(redis_server.url, queues=("celery",), concurrency=2)
    app = load_app(redis_server.url)
    retention = ("--failed-retention", "3", "--completed-retention", "2")
    with Sidecar(redis_server.url, *FLAGS, *retention) as first:
        first.wait_ready()
        failed_ids = [
            app.send_task("tests.fail", args=(f"boom {i}",), queue="celery").id
            for i in range(5)
        ]
        done_ids = [app.send_task("tests.add", args=(i, 0), queue="celery").id for i in range(4)]
        # The pages show 3 and 2 as soon as three failed and two succeeded: they only hold
        # the final newest jobs once all nine have ended.
        first.wait_for(
            lambda s: finished(s, "tests.fail", "failed") == 5
            and finished(s, "tests.add", "succeeded") == 4
        )
        before = wait_jobs(first, "celery", "failed", 3)["jobs"]
        kept_before = wait_jobs(first, "celery", "completed", 2)["jobs"]
        client = redis_server.client()

        def saved(status: str, shown: list[dict[str, Any]]) -> bool:
            """The history list holds exactly the jobs the page shows."""
            raw = client.lrange(f"celery-jobs-exporter:jobs:{status}:celery", 0, -1)
            return {json.loads(r)["id"] for r in raw} == {j["id"] for j in shown}

        # A refresh saves what finished: wait until the history holds it.
        assert wait_until(
            lambda: saved("failed", before) and saved("completed", kept_before), timeout=30
        )

    with Sidecar(redis_server.url, *FLAGS, *retention) as second:
        second.wait_ready()
        after = wait_jobs(second, "celery", "failed", 3)["jobs"]
        assert after == before
        assert {j["id"] for j in after} <= set(failed_ids)
        assert after[0]["failedReason"].startswith("ValueError: boom")
        assert after[0]["stacktrace"] and "ValueError" in after[0]["stacktrace"][-1]
        kept = wait_jobs(second, "celery", "completed", 2)["jobs"]
        assert {j["id"] for j in kept} <= set(done_ids)
        # New jobs still push the old ones out: the retention holds across restarts.
        newest = app.send_task("tests.fail", args=("after restart",), queue="celery").id
        page: dict[str, Any] = {}

        def newest_on_top() -> bool:
            nonlocal page
            page = jobs(second, "celery", "failed", limit=100)
            return bool(page["jobs"]) and page["jobs"][0]["id"] == newest

        wait_until(newest_on_top, timeout=30, interval=0.2)
        assert page["pagination"]["totalJobs"] == 3
        assert [j["id"] for j in page["jobs"]] == [newest] + [j["id"] for j in before[:2]]
    client = redis_server.client()
    assert client.llen("celery-jobs-exporter:jobs:failed:celery") == 3


def test_no_history_flag_keeps_nothing_in_redis(redis_server: RedisServer) -> None:
    with Sidecar(redis_server.url, *FLAGS, "--no-history", "--queue", "q") as sidecar:
        sidecar.wait_ready()
        sidecar.wait_refreshes(2)  # refreshes are when a history is loaded and saved
    assert redis_server.client().keys("celery-jobs-exporter:*") == []
