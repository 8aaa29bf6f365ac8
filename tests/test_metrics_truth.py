"""/metrics tells the truth: real Celery workers, real jobs in every status, exact counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import Samples, queue_counts, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SIDECAR_ARGS = ("--refresh-interval", "0.5", "--inspect-timeout", "0.8", "--queue", "empty_q")


def _counts_are(expected: dict[str, dict[str, int]]) -> Callable[[Samples], bool]:
    def check(samples: Samples) -> bool:
        return all(queue_counts(samples, q) == counts for q, counts in expected.items())

    return check


def _queue_waits(samples: Samples) -> dict[str, float]:
    """`celery_task_queue_wait_seconds_count` by queue: one observation per task-started seen."""
    return {
        dict(labels)["queue"]: count
        for (name, labels), count in samples.items()
        if name == "celery_task_queue_wait_seconds_count"
    }


def test_every_status_has_its_exact_count(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """Completed, failed after retries, active, delayed, waiting+prefetched, paused, empty."""
    main = celery_worker_factory(
        redis_server.url, queues=("celery", "paused_q"), concurrency=3, name="main"
    )
    slow = celery_worker_factory(redis_server.url, queues=("backlog",), concurrency=1, name="slow")
    app = load_app(redis_server.url)
    replies = app.control.cancel_consumer("paused_q", destination=[main.hostname], reply=True)
    assert replies, "the worker did not confirm cancelling its paused_q consumer"

    with Sidecar(redis_server.url, *SIDECAR_ARGS) as sidecar:
        sidecar.wait_ready()
        for priority in range(10):
            app.send_task("tests.add", args=(priority, 1), queue="paused_q", priority=priority)
        for i in range(5):
            app.send_task("tests.add", args=(i, i), queue="celery")
        for _ in range(2):
            app.send_task("tests.fail", args=("boom",), queue="celery")
        app.send_task("tests.flaky_fail", args=("flaky",), queue="celery")
        app.send_task("tests.sleep", args=(120,), queue="celery")
        for _ in range(2):
            app.send_task("tests.add", args=(1, 2), queue="celery", countdown=600)
        app.send_task("tests.sleep", args=(120,), queue="backlog")
        client = redis_server.client()
        assert wait_until(lambda: client.llen("backlog") == 0, timeout=20)
        for i in range(4):
            app.send_task("tests.add", args=(i, 0), queue="backlog")

        expected = {
            "celery": {"waiting": 0, "active": 1, "delayed": 2, "paused": 0,
                       "completed": 5, "failed": 3},
            "backlog": {"waiting": 4, "active": 1, "delayed": 0, "paused": 0,
                        "completed": 0, "failed": 0},
            "paused_q": {"waiting": 0, "active": 0, "delayed": 0, "paused": 10,
                         "completed": 0, "failed": 0},
            "empty_q": {"waiting": 0, "active": 0, "delayed": 0, "paused": 0,
                        "completed": 0, "failed": 0},
        }
        # 12 task-started events in all: the 11 below on celery and the sleep on backlog.
        # "active" comes from the workers' replies, not from the events: the sleep's
        # task-started may still be on its way when the counts already match. Wait until
        # every start has been observed (in whichever queue), then check where each went.
        counts_match = _counts_are(expected)
        samples = sidecar.wait_for(
            lambda s: counts_match(s) and sum(_queue_waits(s).values()) >= 12, timeout=60
        )

        # The paused queue's ten priorities were spread over several Redis lists.
        sublists = [k for k in client.keys("paused_q*") if client.type(k) == b"list"]
        assert len(sublists) == 4, sublists
        assert sum(client.llen(k) for k in sublists) == 10

        assert value(samples, "celery_queue_consumers", queue="celery") == 1
        assert value(samples, "celery_queue_consumers", queue="backlog") == 1
        assert value(samples, "celery_queue_consumers", queue="paused_q") == 0
        assert value(samples, "celery_queue_prefetched_jobs", queue="backlog") == 1
        assert value(samples, "celery_worker_up", worker=main.hostname) == 1
        assert value(samples, "celery_worker_up", worker=slow.hostname) == 1

        def tasks(task: str, outcome: str) -> float:
            return value(samples, "celery_tasks_total", queue="celery", task=task, outcome=outcome)

        assert tasks("tests.add", "succeeded") == 5
        assert tasks("tests.fail", "failed") == 2
        assert tasks("tests.flaky_fail", "failed") == 1
        assert tasks("tests.flaky_fail", "retried") == 2
        assert value(
            samples, "celery_task_runtime_seconds_count", queue="celery", task="tests.add"
        ) == 5
        # Every started job waited in the queue: 5 adds + 2 fails + 3 flaky attempts + 1 sleep.
        waits = _queue_waits(samples)
        assert waits.get("celery") == 11, waits
        assert waits.get("backlog") == 1, waits
        assert sum(waits.values()) == 12, waits
        assert value(samples, "celery_exporter_up") == 1
        assert value(samples, "celery_exporter_source_up", source="events") == 1
        assert value(samples, "celery_exporter_source_up", source="workers") == 1
        assert value(samples, "celery_exporter_events_undecodable_total") == 0
        assert value(samples, "celery_exporter_malformed_messages_total", source="unacked") == 0
        no_internal = [
            k for k in samples
            if k[0] == "celery_queue_jobs"
            and any(v.endswith(".pidbox") or v.startswith("celeryev") for _, v in k[1])
        ]
        assert no_internal == []


def test_custom_priority_steps_separator_prefix_and_db(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """Every key, list and channel moves with sep, priority_steps and global_keyprefix."""
    options: dict[str, Any] = {
        "priority_steps": list(range(10)), "sep": ":", "global_keyprefix": "pfx:",
    }
    url = redis_server.url_for_db(3)
    celery_worker_factory(url, queues=("celery",), concurrency=2, transport_options=options)
    app = load_app(url, options)
    flags = [
        "--broker-transport-option", "priority_steps=[0,1,2,3,4,5,6,7,8,9]",
        "--broker-transport-option", "sep=:",
        "--broker-transport-option", "global_keyprefix=pfx:",
        "--queue", "prio",
    ]
    with Sidecar(url, *SIDECAR_ARGS, *flags) as sidecar:
        sidecar.wait_ready()
        for priority in range(10):
            for _ in range(priority + 1):
                app.send_task("tests.add", args=(1, 1), queue="prio", priority=priority)
        for i in range(3):
            app.send_task("tests.add", args=(i, 1), queue="celery")
        app.send_task("tests.add", args=(0, 0), queue="celery", countdown=600)
        expected = {
            "prio": {"waiting": 0, "active": 0, "delayed": 0, "paused": 55,
                     "completed": 0, "failed": 0},
            "celery": {"waiting": 0, "active": 0, "delayed": 1, "paused": 0,
                       "completed": 3, "failed": 0},
        }
        samples = sidecar.wait_for(_counts_are(expected), timeout=60)
        client = redis_server.client(db=3)
        assert client.llen("pfx:prio:9") == 10
        assert client.llen("pfx:prio") == 1
        assert client.hlen("pfx:unacked") == 1
        assert value(samples, "celery_queue_consumers", queue="celery") == 1
        assert not any(
            dict(labels).get("queue", "").startswith("pfx:")
            for name, labels in samples if name == "celery_queue_jobs"
        )


def test_waiting_job_becomes_active_then_completed(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """A job moves through the statuses and each snapshot counts it exactly once."""
    celery_worker_factory(redis_server.url, queues=("celery",), concurrency=1)
    app = load_app(redis_server.url)
    with Sidecar(redis_server.url, *SIDECAR_ARGS) as sidecar:
        sidecar.wait_ready()
        app.send_task("tests.sleep", args=(4,), queue="celery")
        running = sidecar.wait_for(
            lambda s: queue_counts(s, "celery")["active"] == 1, timeout=30
        )
        assert sum(queue_counts(running, "celery").values()) == 1
        done = sidecar.wait_for(
            lambda s: queue_counts(s, "celery")["completed"] == 1, timeout=30
        )
        assert queue_counts(done, "celery") == {
            "waiting": 0, "active": 0, "delayed": 0, "paused": 0, "completed": 1, "failed": 0,
        }


def test_lost_consumer_pauses_its_queue_crashed_worker_is_down_stopped_one_gone(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """A crashed worker reports 0 and its queue's jobs become paused; a clean stop drops it."""
    crashing = celery_worker_factory(redis_server.url, queues=("solo",), concurrency=1, name="c")
    leaving = celery_worker_factory(redis_server.url, queues=("other",), concurrency=1, name="l")
    app = load_app(redis_server.url)
    with Sidecar(redis_server.url, *SIDECAR_ARGS, "--worker-timeout", "3") as sidecar:
        sidecar.wait_ready()
        sidecar.wait_for(lambda s: value(s, "celery_queue_consumers", queue="solo") == 1
                         and value(s, "celery_queue_consumers", queue="other") == 1)
        crashing.kill()
        leaving.stop()
        for _ in range(3):
            app.send_task("tests.add", args=(1, 1), queue="solo")
        samples = sidecar.wait_for(
            lambda s: queue_counts(s, "solo")["paused"] == 3
            and value(s, "celery_worker_up", worker=crashing.hostname) == 0,
            timeout=30,
        )
        assert queue_counts(samples, "solo")["waiting"] == 0
        assert value(samples, "celery_queue_consumers", queue="solo") == 0
        assert value(samples, "celery_queue_consumers", queue="other") == 0
        assert ("celery_worker_up", frozenset({("worker", leaving.hostname)})) not in samples
        assert value(samples, "celery_exporter_up") == 1
