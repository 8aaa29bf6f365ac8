"""Failures counted apart by exception class, from a real worker's task-failed events."""

from __future__ import annotations

import pytest

from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import Samples, total, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3", "--no-auth")
RAISED = {"ValueError": 3, "KeyError": 2, "ZeroDivisionError": 1, "LookupError": 1}


def test_three_exception_classes_are_counted_apart_and_the_rest_folded(
    redis_server: RedisServer,
) -> None:
    with (
        CeleryWorker(redis_server.url, queues=["errors"], concurrency=2) as worker,
        Sidecar(redis_server.url, *FAST, "--queue", "errors",
                "--max-exception-types", "3") as sidecar,
    ):
        worker.wait_ready()
        sidecar.wait_ready()
        app = load_app(redis_server.url)
        for kind, times in RAISED.items():  # LookupError comes fourth: past the limit
            for _ in range(times):
                app.send_task("tests.raise_exception", args=(kind, "x"), queue="errors")

        def counted(samples: Samples) -> bool:
            return total(samples, "celery_task_failures_total", queue="errors") == 7

        samples = sidecar.wait_for(counted, timeout=60)

        def failures(exception: str) -> float:
            return value(samples, "celery_task_failures_total", queue="errors",
                         task="tests.raise_exception", exception=exception)

        assert failures("ValueError") == 3
        assert failures("KeyError") == 2
        assert failures("ZeroDivisionError") == 1
        assert failures("other") == 1
        assert value(samples, "celery_exporter_folded_exception_types") == 1
        assert value(samples, "celery_tasks_total", queue="errors",
                     task="tests.raise_exception", outcome="failed") == 7
