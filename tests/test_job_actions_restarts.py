"""Job actions across restarts and failures (docs/jobs-actions.md, Safety rules).

A pause outlives worker and sidecar restarts; an action that fails after its audit
entry is written is recorded `failed`, never `ok`; with the broker unreachable an action
is refused (503) and neither recorded nor carried out; a sidecar killed while an action
waits leaves its entry `pending`. Real redis-server, workers and sidecars, as in
test_job_actions.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from testkit.actions import (
    ADMIN,
    GATED,
    ActionsClient,
    Stack,
    active_queues,
    assert_audited_ok,
    counted,
    message,
    tasks,
)
from testkit.celery_worker import CeleryWorker
from testkit.exposition import queue_counts, value
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

if TYPE_CHECKING:
    from celery import Celery

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PREFIX = "celery-jobs-exporter:"


@pytest.fixture
def stack(
    redis_server: RedisServer, celery_app: Celery, tmp_path: Path,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> Iterator[Stack]:
    built = Stack(redis_server, celery_app, tmp_path, celery_worker_factory)
    try:
        yield built
    finally:
        built.close()


def consumes(stack: Stack, worker: CeleryWorker, queues: set[str]) -> bool:
    """Wait until the worker says it consumes exactly `queues`."""
    return wait_until(lambda: active_queues(stack.app, worker.hostname) == queues, timeout=15)


def restart(worker: CeleryWorker) -> None:
    """Stop the worker (warm shutdown) and start it again under the same name."""
    worker.stop()
    worker.start()
    worker.wait_ready()


def test_a_pause_outlives_worker_and_sidecar_restarts_and_resume_gives_the_queue_back(
    stack: Stack,
) -> None:
    """A worker coming back consuming a paused queue is told to stop, before and after a
    sidecar restart (the pause is kept in Redis); the queue's jobs show `paused` and do not
    run; a resume brings the remembered worker back and every job runs."""
    queue, other = "pausing", "other"
    car, worker, api = stack.start((queue, other), name="keeper")
    answer = api.pause(queue)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"queue": queue, "paused": True, "workers": [worker.hostname]}
    assert active_queues(stack.app, worker.hostname) == {other}

    restart(worker)  # it consumes every queue of its -Q again, until the sidecar says no
    assert consumes(stack, worker, {other}), "the restarted worker was not told to stop"
    assert car.log_count(f"queue {queue} is paused: telling ['{worker.hostname}']") >= 1
    car.stop()
    car = stack.sidecar()
    api = ActionsClient(car.base_url, ADMIN)
    restart(worker)
    assert consumes(stack, worker, {other}), "the pause was lost with the sidecar restart"
    assert car.log_count(f"queue {queue} is paused: telling ['{worker.hostname}']") >= 1

    jobs = [stack.publish(queue, GATED, "gate-paused", n) for n in range(3)]
    car.wait_for(lambda s: queue_counts(s, queue)["paused"] == 3)
    page = api.jobs(queue, "paused")
    assert sorted(j["id"] for j in page) == sorted(jobs)
    assert {j["state"] for j in page} == {"paused"}
    samples = car.wait_refreshes(2)
    assert queue_counts(samples, queue)["paused"] == 3
    assert stack.calls("gate-paused") == [] and stack.llen(queue) == 3

    answer = api.resume(queue)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"queue": queue, "paused": False, "workers": [worker.hostname]}
    assert active_queues(stack.app, worker.hostname) == {queue, other}
    assert wait_until(lambda: len(stack.calls("gate-paused")) == 3, timeout=15)
    assert sorted(call[0][0] for call in stack.calls("gate-paused")) == [0, 1, 2]
    samples = car.wait_for(lambda s: tasks(s, queue, "succeeded") == 3)
    assert queue_counts(samples, queue)["paused"] == 0
    assert stack.client.hlen(f"{PREFIX}paused") == 0
    assert_audited_ok(api, "pause", queue, None)  # written by the first sidecar
    assert_audited_ok(api, "resume", queue, None)
    again = api.resume(queue)  # a redundant resume changes nothing
    assert again.status_code == 202, again.text
    assert active_queues(stack.app, worker.hostname) == {queue, other}
    samples = car.wait_refreshes(2)
    assert (counted(samples, "resume", "ok"), counted(samples, "pause", "ok")) == (2, 0)


@pytest.mark.xfail(
    strict=True,
    reason="a worker starting with a paused queue in its -Q consumes it at once; the sidecar "
    "tells it to stop only once a refresh sees it, after it took the queue's jobs",
)
def test_jobs_of_a_paused_queue_stay_paused_while_its_worker_restarts(stack: Stack) -> None:
    """Jobs paused before a worker restart are still paused after it, none ran."""
    queue, other = "paused-restart", "other"
    car, worker, api = stack.start((queue, other))
    assert api.pause(queue).status_code == 202
    for n in range(3):
        stack.publish(queue, GATED, "gate-restart", n)
    car.wait_for(lambda s: queue_counts(s, queue)["paused"] == 3)
    restart(worker)
    assert consumes(stack, worker, {other})
    samples = car.wait_refreshes(2)
    assert stack.calls("gate-restart") == []
    assert queue_counts(samples, queue)["paused"] == 3


def test_an_action_that_fails_after_its_audit_entry_is_recorded_failed(stack: Stack) -> None:
    """The pause book or the queue's list is not what it should be: the action is answered
    503, and its audit entry, written before, ends `failed` (never `ok`)."""
    queue = "broken"
    car, worker, api = stack.start((queue,))
    stack.client.set(f"{PREFIX}paused", b"not a hash")
    answer = api.pause(queue)
    assert answer.status_code == 503, answer.text
    assert "WRONGTYPE" in message(answer)
    [entry] = api.audit()
    assert (entry["action"], entry["key"], entry["outcome"]) == ("pause", ADMIN.name, "failed")
    assert "WRONGTYPE" in entry["detail"]
    assert active_queues(stack.app, worker.hostname) == {queue}  # never told to stop

    stack.client.delete(f"{PREFIX}paused")
    stack.client.set(queue, b"a string where the list is")
    answer = api.purge(queue, {"confirm": queue})
    assert answer.status_code == 503, answer.text
    entries = api.audit()
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("purge", "failed"), ("pause", "failed")
    ]
    samples = car.wait_refreshes(2)
    assert (counted(samples, "pause", "failed"), counted(samples, "pause", "ok")) == (1, 0)
    assert (counted(samples, "purge", "failed"), counted(samples, "purge", "ok")) == (1, 0)


def test_with_the_broker_unreachable_an_action_is_refused_and_nothing_is_recorded(
    stack: Stack,
) -> None:
    """redis-server stopped: every action answers 503; once it is back (with what it held
    before) the audit log, the pause book and the queue are as they were."""
    queue = "unreachable"
    car, worker, api = stack.start((queue,), "--queue", "nobody")
    assert api.pause(queue).status_code == 202
    job = stack.publish(queue, GATED, "gate-unreachable")
    car.wait_for(lambda s: queue_counts(s, queue)["paused"] == 1)
    assert api.ids(queue, "paused") == [job]  # its call is known: a retry gets that far
    assert api.resume(queue).status_code == 202
    car.wait_for(lambda s: tasks(s, queue, "succeeded") == 1)
    waiting = stack.publish("nobody", GATED, "gate-nobody")  # a queue no worker consumes
    stack.client.save()  # redis-server loads this copy when it starts again
    saved_audit = api.audit()
    assert [e["action"] for e in saved_audit] == ["resume", "pause"]

    stack.redis.stop()
    for answer in (
        api.pause(queue),
        api.resume(queue),
        api.retry(queue, job),
        api.remove(queue, job),
        api.cancel("nobody", waiting),
        api.purge(queue, {"confirm": queue}),
    ):
        assert answer.status_code == 503, answer.text
    stack.redis.start()
    assert stack.client.llen("nobody") == 1
    assert stack.client.exists(f"{PREFIX}paused") == 0
    assert wait_until(lambda: _audit_or_none(api) == saved_audit, timeout=15)
    worker.wait_ready()
    assert consumes(stack, worker, {queue})
    assert stack.calls("gate-nobody") == []
    assert len(stack.calls("gate-unreachable")) == 1
    samples = car.wait_refreshes(2)
    for action in ("pause", "resume", "retry", "remove", "cancel", "purge"):
        assert counted(samples, action, "refused") == 1, action
        assert counted(samples, action, "failed") == 0, action
    assert (counted(samples, "pause", "ok"), counted(samples, "resume", "ok")) == (1, 1)


def _audit_or_none(api: ActionsClient) -> list[dict[str, object]] | None:
    try:
        response = api.get("/jobs/audit", limit=100)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    entries: list[dict[str, object]] = response.json()["entries"]
    return entries


def test_a_sidecar_killed_while_an_action_waits_leaves_its_entry_pending(
    stack: Stack,
) -> None:
    """A pause waits for the replies of a frozen worker; the sidecar is SIGKILLed meanwhile:
    the next sidecar shows the entry `pending`, never `ok`."""
    queue = "interrupted"
    car = stack.sidecar("--refresh-interval", "1", "--inspect-timeout", "1.9", ready=False)
    worker = stack.worker(queue)
    car.wait_ready()
    api = ActionsClient(car.base_url, ADMIN)
    car.wait_for(lambda s: value(s, "celery_queue_consumers", queue=queue) == 1)
    assert worker.pid is not None
    os.killpg(worker.pid, signal.SIGSTOP)
    answers: list[httpx.Response | Exception] = []

    def pause() -> None:
        try:
            answers.append(api.pause(queue))
        except httpx.HTTPError as exc:
            answers.append(exc)

    asking = threading.Thread(target=pause)
    try:
        asking.start()
        assert wait_until(lambda: stack.client.zcard(f"{PREFIX}audit:index") == 1, timeout=5)
        os.killpg(car.pid, signal.SIGKILL)
        asking.join(timeout=30)
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    assert len(answers) == 1 and isinstance(answers[0], httpx.HTTPError), answers
    car.stop()

    after = stack.sidecar()
    [entry] = ActionsClient(after.base_url, ADMIN).audit()
    assert (entry["action"], entry["queue"], entry["key"]) == ("pause", queue, ADMIN.name)
    assert (entry["outcome"], entry["detail"]) == ("pending", None)

