"""Operating the sidecar: re-enabling worker events, JSON logs, the landing page."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import queue_counts
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5")


def test_enable_events_interval_turns_task_events_back_on(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """Workers with task events off get them back, and finished jobs are counted again."""
    celery_worker_factory(
        redis_server.url, queues=("celery",), concurrency=1,
        extra_env={"TEST_TASK_EVENTS": "0"},
    )
    app = load_app(redis_server.url)
    with Sidecar(redis_server.url, *FAST, "--enable-events-interval", "1") as sidecar:
        sidecar.wait_ready()
        app.send_task("tests.add", args=(1, 1), queue="celery")
        samples = sidecar.wait_for(
            lambda s: queue_counts(s, "celery")["completed"] >= 1, timeout=30
        )
        assert queue_counts(samples, "celery")["completed"] >= 1


def test_json_logs_are_one_object_per_line(redis_server: RedisServer) -> None:
    with Sidecar(redis_server.url, *FAST, "--log-format", "json", "--queue", "q") as sidecar:
        sidecar.wait_ready()
        landing = sidecar.get("/")
        assert landing.status_code == 200
        assert landing.headers["content-type"].startswith("text/html")
        for path in ("/metrics", "/healthz", "/readyz", "/v1/jobs/queues", "/openapi.json"):
            assert f'href="{path}"' in landing.text
        lines = [line for line in sidecar.log().splitlines() if line.startswith("{")]
    ours = [json.loads(line) for line in lines]
    assert any(entry["logger"] == "exporter.serving.runtime" for entry in ours), lines
    assert all({"time", "level", "message"} <= entry.keys() for entry in ours)
