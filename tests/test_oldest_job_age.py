"""The age of each queue's next job, against the truth: publish, wait, read.

Without consumers the job is `paused`; with `task_send_sent_event` its publish time is
known, without it the age counts from when the sidecar first saw it (a lower bound).
With priorities, the head is the job a worker really takes next.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery

from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import Samples, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3", "--no-auth")
WAITED = 4.0


@pytest.fixture
def sidecar(redis_server: RedisServer) -> Iterator[Sidecar]:
    with Sidecar(redis_server.url, *FAST, "--queue", "stuck", "--queue", "prio") as car:
        car.wait_ready()
        yield car


def age(samples: Samples, queue: str, status: str = "paused") -> float:
    return value(samples, "celery_queue_oldest_job_age_seconds", queue=queue, status=status)


def lower_bound(samples: Samples, queue: str) -> float:
    return value(samples, "celery_queue_oldest_job_age_lower_bound", queue=queue)


def test_an_empty_queue_is_zero(sidecar: Sidecar) -> None:
    samples = sidecar.wait_refreshes()
    assert age(samples, "stuck") == 0 == age(samples, "stuck", "waiting")


def test_with_task_sent_events_the_age_is_the_true_age(
    redis_server: RedisServer, sidecar: Sidecar
) -> None:
    app = load_app(redis_server.url)  # task_send_sent_event=True
    published = time.time()
    app.send_task("tests.add", args=(1, 2), queue="stuck")
    time.sleep(WAITED)
    samples = sidecar.wait_refreshes()
    truth = time.time() - published
    assert lower_bound(samples, "stuck") == 0
    assert abs(age(samples, "stuck") - truth) < 1.0, (age(samples, "stuck"), truth)
    assert age(samples, "stuck", "waiting") == 0  # no consumer: the job is paused


def test_without_task_sent_events_it_is_a_lower_bound_from_first_seen(
    redis_server: RedisServer, sidecar: Sidecar
) -> None:
    plain = Celery("plain", broker=redis_server.url, set_as_current=False)
    plain.send_task("tests.add", args=(1, 2), queue="stuck")
    first = sidecar.wait_for(lambda s: lower_bound(s, "stuck") == 1, timeout=10)
    seen_by = time.time()
    time.sleep(WAITED)
    samples = sidecar.wait_refreshes()
    truth_since_seen = time.time() - seen_by
    assert age(first, "stuck") < 1.0
    assert truth_since_seen - 1.0 < age(samples, "stuck") < truth_since_seen + 1.5


def test_the_head_is_the_job_a_worker_takes_next(
    redis_server: RedisServer, sidecar: Sidecar
) -> None:
    """An older low-priority job waits behind a newer high-priority one (0 runs first)."""
    app = load_app(redis_server.url)
    old = app.send_task("tests.add", args=(1, 1), queue="prio", priority=9)
    time.sleep(WAITED)
    new = app.send_task("tests.add", args=(2, 2), queue="prio", priority=0)
    new_at = time.time()
    samples = sidecar.wait_refreshes()
    assert age(samples, "prio") < time.time() - new_at + 1.0  # the new job's age, not 4 s+

    with CeleryWorker(redis_server.url, queues=["prio"], concurrency=1) as worker:
        worker.wait_ready()
        def both_ran() -> bool:
            log = worker.log()
            return f"[{old.id}] succeeded" in log and f"[{new.id}] succeeded" in log

        assert wait_until(both_ran, timeout=30)
        log = worker.log()
        assert log.index(f"[{new.id}] succeeded") < log.index(f"[{old.id}] succeeded")


def test_the_oldest_active_age_is_how_long_the_running_job_has_run(
    redis_server: RedisServer, sidecar: Sidecar
) -> None:
    with CeleryWorker(redis_server.url, queues=["prio"], concurrency=2) as worker:
        worker.wait_ready()
        app = load_app(redis_server.url)
        app.send_task("tests.sleep", args=(WAITED + 4,), queue="prio")
        samples = sidecar.wait_for(
            lambda s: value(s, "celery_queue_jobs", queue="prio", status="active") == 1,
            timeout=20,
        )
        started = time.time()
        time.sleep(WAITED)
        samples = sidecar.wait_refreshes()
        running = value(samples, "celery_task_oldest_active_age_seconds", queue="prio")
        assert WAITED - 0.5 <= running <= time.time() - started + 2.0, running
        assert value(samples, "celery_task_oldest_active_age_seconds", queue="stuck") == 0
