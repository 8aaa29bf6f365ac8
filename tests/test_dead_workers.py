"""Jobs of a worker that dies do not stay active: lost, or waiting where the broker has them.

Real workers are killed the ways production kills them: the OOM killer's SIGKILL of
the whole worker (default early acknowledgement, and acks_late with a short visibility
timeout), SIGKILL of one pool child, and a worker frozen past --worker-timeout that
comes back and finishes its job.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import queue_counts, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WORKER_TIMEOUT = 3.0
SIDECAR = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3",
           "--worker-timeout", str(WORKER_TIMEOUT), "--no-auth")
QUEUE = "beta"


def outcome(samples: dict[Any, float], name: str, task: str = "tests.sleep") -> float:
    return value(samples, "celery_tasks_total", queue=QUEUE, task=task, outcome=name)


def children(pid: int) -> list[int]:
    """The direct children of a process (a prefork worker's pool)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(k) for k in (task / "children").read_text().split()]
    return found


@pytest.fixture
def sidecar(redis_server: RedisServer) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def start(*extra: str) -> Sidecar:
        car = Sidecar(redis_server.url, *SIDECAR, "--queue", QUEUE, *extra)
        started.append(car)
        car.wait_ready()
        return car

    yield start
    for car in started:
        car.stop()


def two_running(
    redis_server: RedisServer, make_worker: Callable[..., CeleryWorker], car: Sidecar,
    task: str = "tests.sleep", options: dict[str, Any] | None = None,
) -> tuple[CeleryWorker, set[str]]:
    """A worker with two slots, both running a 10-minute task the sidecar sees active."""
    worker = make_worker(redis_server.url, queues=(QUEUE,), concurrency=2,
                         transport_options=options)
    app = load_app(redis_server.url, options)
    ids = {app.send_task(task, args=(600,), queue=QUEUE).id for _ in range(2)}
    app.close()
    car.wait_for(lambda s: queue_counts(s, QUEUE)["active"] == 2)
    return worker, ids


def failed_jobs(car: Sidecar) -> list[dict[str, Any]]:
    page = car.get(f"/v1/jobs/queues/{QUEUE}", params={"status": "failed"})
    assert page.status_code == 200, page.text
    jobs: list[dict[str, Any]] = page.json()["jobs"]
    return jobs


def test_a_killed_worker_s_running_jobs_are_lost(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker],
    sidecar: Callable[..., Sidecar],
) -> None:
    """SIGKILL (no worker-offline), early acks: the messages are gone, the jobs are lost."""
    car = sidecar()
    worker, ids = two_running(redis_server, celery_worker_factory, car)
    killed_at = time.time()
    worker.kill()
    samples = car.wait_for(
        lambda s: queue_counts(s, QUEUE)["active"] == 0 and outcome(s, "lost") == 2, timeout=30
    )
    took = time.time() - killed_at
    print(f"lost after {took:.1f}s with --worker-timeout {WORKER_TIMEOUT}")
    assert took < WORKER_TIMEOUT + 3
    assert queue_counts(samples, QUEUE)["failed"] == 2
    assert outcome(samples, "failed") == 0
    assert value(samples, "celery_worker_up", worker=worker.hostname) == 0
    jobs = failed_jobs(car)
    assert {job["id"] for job in jobs} == ids
    for job in jobs:
        assert job["failedReason"] == (
            f"WorkerLost: worker {worker.hostname} stopped while the job ran"
        )
        assert job["error"] == job["failedReason"]
        assert killed_at * 1000 <= job["finishedOn"] <= time.time() * 1000


def test_acks_late_jobs_of_a_killed_worker_wait_to_run_again(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker],
    sidecar: Callable[..., Sidecar],
) -> None:
    """acks_late: the messages stay unacked, then the visibility timeout puts them back."""
    options = {"visibility_timeout": 4}
    car = sidecar("--broker-transport-option", "visibility_timeout=4")
    worker, _ids = two_running(redis_server, celery_worker_factory, car, "tests.sleep_late",
                               options)
    worker.kill()
    samples = car.wait_for(
        lambda s: value(s, "celery_worker_up", worker=worker.hostname) == 0
        and queue_counts(s, QUEUE)["active"] == 0, timeout=30
    )
    counts = queue_counts(samples, QUEUE)
    assert (counts["waiting"], counts["failed"]) == (2, 0)  # still in the unacked hash
    assert outcome(samples, "lost", "tests.sleep_late") == 0
    # Any consumer of the broker restores messages older than the visibility timeout.
    celery_worker_factory(redis_server.url, queues=("elsewhere",), transport_options=options)
    samples = car.wait_for(lambda s: queue_counts(s, QUEUE)["paused"] == 2, timeout=60)
    counts = queue_counts(samples, QUEUE)
    assert (counts["waiting"], counts["active"], counts["failed"]) == (0, 0, 0)
    assert outcome(samples, "lost", "tests.sleep_late") == 0


def test_a_killed_pool_child_fails_its_job_and_the_worker_goes_on(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker],
    sidecar: Callable[..., Sidecar],
) -> None:
    """The worker lives: Celery reports task-failed with WorkerLostError for that job."""
    car = sidecar()
    worker, _ids = two_running(redis_server, celery_worker_factory, car)
    assert worker.pid is not None
    pool = children(worker.pid)
    assert len(pool) == 2, pool
    os.kill(pool[0], signal.SIGKILL)
    samples = car.wait_for(lambda s: outcome(s, "failed") == 1, timeout=30)
    assert queue_counts(samples, QUEUE)["active"] == 1
    assert outcome(samples, "lost") == 0
    assert value(samples, "celery_worker_up", worker=worker.hostname) == 1
    [job] = failed_jobs(car)
    assert job["failedReason"].startswith("WorkerLostError: Worker exited prematurely")


def test_a_frozen_worker_s_job_is_lost_then_recovered_when_it_finishes(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker],
    sidecar: Callable[..., Sidecar],
) -> None:
    """SIGSTOP past --worker-timeout, then SIGCONT: the real end replaces the lost record."""
    worker = celery_worker_factory(redis_server.url, queues=(QUEUE,), concurrency=1)
    car = sidecar()
    app = load_app(redis_server.url)
    task_id = app.send_task("tests.sleep", args=(8,), queue=QUEUE).id
    car.wait_for(lambda s: queue_counts(s, QUEUE)["active"] == 1)
    assert worker.pid is not None
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        samples = car.wait_for(lambda s: outcome(s, "lost") == 1, timeout=30)
        assert queue_counts(samples, QUEUE)["active"] == 0
        assert [job["id"] for job in failed_jobs(car)] == [task_id]
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    samples = car.wait_for(lambda s: queue_counts(s, QUEUE)["completed"] == 1, timeout=60)
    counts = queue_counts(samples, QUEUE)
    assert (counts["failed"], counts["active"]) == (0, 0)
    assert outcome(samples, "lost") == 1  # each execution is counted once
    assert outcome(samples, "succeeded") == 0
    assert value(samples, "celery_tasks_lost_recovered_total", queue=QUEUE,
                 task="tests.sleep") == 1
    page = car.get(f"/v1/jobs/queues/{QUEUE}", params={"status": "completed"}).json()
    [job] = page["jobs"]
    assert (job["id"], job["failedReason"], job["returnValue"]) == (task_id, None, 8)
    assert wait_until(lambda: failed_jobs(car) == [], timeout=5)
    app.close()
