"""Job actions (docs/jobs-actions.md) on a real worker: retry, cancel, remove, purge, read-only.

Everything is real: a private redis-server, `celery worker` processes running the tasks
of testkit.celery_app, and `celery-jobs-exporter serve` with a keys file holding one
`manage:all` key (`ops-admin`) and one `read:jobs` key (`dash-reader`). What an action
did is read where it shows: the broker's lists, the calls a task records in Redis, the
Jobs API, /metrics and the audit log. Restarts and failures: test_job_actions_restarts.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from testkit.actions import (
    ADMIN,
    GATED,
    PRIORITY_SUFFIXES,
    READER,
    ActionsClient,
    Stack,
    active_queues,
    assert_audited_ok,
    counted,
    entries_of,
    message,
    redis_state,
    tasks,
)
from testkit.celery_worker import CeleryWorker
from testkit.exposition import queue_counts
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

if TYPE_CHECKING:
    from celery import Celery

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ACTION_ROUTES = (
    ("POST", "/jobs/queues/{q}/jobs/{id}/retry", None),
    ("POST", "/jobs/queues/{q}/jobs/{id}/cancel", {"terminate": True}),
    ("DELETE", "/jobs/queues/{q}/jobs/{id}", None),
    ("POST", "/jobs/queues/{q}/pause", None),
    ("POST", "/jobs/queues/{q}/resume", None),
    ("POST", "/jobs/queues/{q}/retry-failed", {"limit": 10}),
    ("POST", "/jobs/queues/{q}/purge", {"confirm": "{q}"}),
)


# -- arguments a repr or the Jobs API would lose ----------------------------------------------


def nested(depth: int, leaf: Any) -> dict[str, Any]:
    """A dict `depth` levels deep, every level with a sibling value."""
    value_: Any = {"leaf": leaf}
    for level in range(depth - 1, 0, -1):
        value_ = {f"level-{level}": value_, "at": level}
    result: dict[str, Any] = value_
    return result


def exact_arguments(long_text: int, items: int) -> tuple[list[Any], dict[str, Any]]:
    """Args and kwargs past every bound of a job object (docs/jobs-api.md, Size bounds):
    a long string, nesting 8 levels deep, floats whose repr is all their precision,
    unicode outside the BMP and CJK, and a list of `items` items."""
    floats = [0.1 + 0.2, 1e-300, 5e-324, 1.7976931348623157e308, 2.0 / 3.0]
    unicode = "emoji 😀🎉🧪 CJK 漢字かなカナ한국어 ß Ω é"
    args: list[Any] = [
        ("abcdefghi漢" * (long_text // 10 + 1))[:long_text],
        nested(8, floats),
        floats,
        unicode,
        list(range(items)),
    ]
    kwargs: dict[str, Any] = {
        "deep": nested(8, unicode),
        "sum": 0.1 + 0.2,
        "tiny": 1e-300,
        "ingestionSourceId": "src-😀-漢",
        "names": [f"item-{i}-é" for i in range(50)],
    }
    assert _depth(args[1]) == _depth(kwargs["deep"]) == 8
    return args, kwargs


def _depth(value_: Any) -> int:
    if isinstance(value_, dict):
        return 1 + max((_depth(v) for v in value_.values()), default=0)
    return 0


#: Far past every truncation limit of the Jobs API: a 100,000-character string and a
#: list of 5,000 items.
BIG_ARGS, BIG_KWARGS = exact_arguments(100_000, 5_000)
#: Past every truncation limit of the Jobs API too (16,384 characters per field, 2,000
#: values, 50 items, 6 levels), yet under the 64 KiB of JSON a sidecar keeps of the call
#: of a message it read (exporter.core.calls).
MID_ARGS, MID_KWARGS = exact_arguments(17_000, 3_000)


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


def check_exact(stack: Stack, gate: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """The one call recorded under `gate` ran with exactly these arguments."""
    [call] = stack.calls(gate)
    assert call == [args, kwargs]
    # Equal as values, and written back the same way: no float or string was rounded.
    assert json.dumps(call) == json.dumps([args, kwargs])


# -- 1. retry with the exact arguments ---------------------------------------------------------


def test_a_retry_runs_the_exact_arguments_kept_by_the_result_backend(stack: Stack) -> None:
    """A failed task, retried with its arguments from the result backend (result_extended),
    runs again with exactly equal arguments and succeeds; two retries at once make one run;
    retry-failed retries the rest, skipping with a reason those it must not retry."""
    queue = "retrying"
    results = stack.redis.url_for_db(1)
    car, _worker, api = stack.start(
        (queue,), "--result-backend-url", results,
        extra_env={"TEST_RESULT_BACKEND": results},
    )
    big, twice, third, lost = (
        stack.close_gate(f"gate-{name}") for name in ("big", "twice", "third", "lost")
    )
    first = stack.publish(queue, GATED, big, *BIG_ARGS, kwargs=BIG_KWARGS)
    second = stack.publish(queue, GATED, twice, "once", {"n": 1})
    later = stack.publish(queue, GATED, third, "later")
    # Too large (over 64 KiB of JSON) for the sidecar to keep from a message it decodes.
    forgotten = stack.publish(queue, GATED, lost, *BIG_ARGS, kwargs=BIG_KWARGS)
    car.wait_for(lambda s: tasks(s, queue, "failed") == 4)
    meta = stack.redis.client(1)
    assert meta.exists(f"celery-task-meta-{first}")
    meta.delete(f"celery-task-meta-{forgotten}")  # expired from the result backend
    shown = {job["id"]: job for job in api.jobs(queue, "failed")}
    assert set(shown) == {first, second, later, forgotten}
    assert shown[first]["data"] != {"args": BIG_ARGS, "kwargs": BIG_KWARGS}  # clipped reprs

    stack.open_gates(big, twice, third, lost)  # the cause of the failures is gone
    answer = api.retry(queue, first)
    assert answer.status_code == 202, answer.text
    new_id = answer.json()["job"]["id"]
    assert answer.json()["retryOf"] == first and new_id != first
    samples = car.wait_for(lambda s: tasks(s, queue, "succeeded") == 1)
    check_exact(stack, big, BIG_ARGS, BIG_KWARGS)
    old = {job["id"]: job for job in api.jobs(queue, "failed")}[first]
    assert old["retriedBy"] == new_id
    assert new_id in api.ids(queue, "completed")
    entry = assert_audited_ok(api, "retry", queue, first)
    assert new_id in entry["detail"] and "result backend" in entry["detail"]

    # Two admins retry the same job at the same moment: one run, one 409.
    barrier = threading.Barrier(2)
    statuses: list[httpx.Response] = []

    def retry_at_once() -> None:
        barrier.wait()
        statuses.append(api.retry(queue, second))

    threads = [threading.Thread(target=retry_at_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in statuses) == [202, 409], [r.text for r in statuses]
    refused = next(r for r in statuses if r.status_code == 409)
    assert "retried less than" in message(refused)
    samples = car.wait_for(lambda s: tasks(s, queue, "succeeded") == 2)
    car.wait_refreshes(2)
    assert stack.calls(twice) == [[["once", {"n": 1}], {}]]
    samples = car.metrics()
    assert tasks(samples, queue, "succeeded") == 2
    assert (counted(samples, "retry", "ok"), counted(samples, "retry", "refused")) == (2, 1)
    assert_audited_ok(api, "retry", queue, second)

    assert api.retry_failed(queue, {"limit": 0}).status_code == 400
    answer = api.with_prefix("/api/v1").retry_failed(queue, {"limit": 10})
    assert answer.status_code == 202, answer.text
    assert len(answer.json()["retried"]) == 1, answer.text
    [again] = answer.json()["retried"]
    skipped = {s["id"]: s["reason"] for s in answer.json()["skipped"]}
    assert set(skipped) == {first, second, forgotten}
    assert "retried less than" in skipped[first] and "retried less than" in skipped[second]
    assert "result_extended" in skipped[forgotten]
    samples = car.wait_for(lambda s: tasks(s, queue, "succeeded") == 3)
    assert stack.calls(third) == [[["later"], {}]]
    assert {job["id"]: job for job in api.jobs(queue, "failed")}[later]["retriedBy"] == again
    entry = assert_audited_ok(api, "retry-failed", queue, None)
    assert entry["params"] == {"limit": 10} and "retried 1, skipped 3" in entry["detail"]
    car.wait_refreshes(2)
    assert stack.calls(lost) == [] and len(stack.calls(big)) == 1
    assert counted(car.metrics(), "retry-failed", "ok") == 1

    # A new sidecar loads the saved history with each failed job's link to its rerun.
    [second_run] = [r.json()["job"]["id"] for r in statuses if r.status_code == 202]
    car.stop()
    reloaded = stack.sidecar()
    api = ActionsClient(reloaded.base_url, ADMIN)
    reloaded.wait_for(lambda s: queue_counts(s, queue)["failed"] == 4)
    links = {job["id"]: job.get("retriedBy") for job in api.jobs(queue, "failed")}
    assert links == {first: new_id, second: second_run, later: again, forgotten: None}


def test_a_retry_runs_the_exact_arguments_of_a_message_the_sidecar_read(stack: Stack) -> None:
    """Without a result backend, the call comes from the message a Jobs API page decoded
    while the queue was paused. A call too large to keep (over 64 KiB of JSON) is not
    known: its retry gets a 409 that says how to keep arguments, and nothing runs."""
    queue = "from-message"
    car, worker, api = stack.start((queue,))
    paused = api.pause(queue)
    assert paused.status_code == 202, paused.text
    assert paused.json() == {"queue": queue, "paused": True, "workers": [worker.hostname]}
    read, large = stack.close_gate("gate-read"), stack.close_gate("gate-large")
    first = stack.publish(queue, GATED, read, *MID_ARGS, kwargs=MID_KWARGS)
    second = stack.publish(queue, GATED, large, *BIG_ARGS, kwargs=BIG_KWARGS)
    car.wait_for(lambda s: queue_counts(s, queue)["paused"] == 2)
    # The sidecar decodes the messages here. (Their order may have changed: a message
    # published just after the pause can meet the worker's pending BRPOP, and kombu puts
    # it back at the other end of the list.)
    page = {job["id"]: job for job in api.jobs(queue, "paused")}
    assert {i: job["state"] for i, job in page.items()} == {first: "paused", second: "paused"}
    assert page[first]["data"] != {"args": MID_ARGS, "kwargs": MID_KWARGS}  # clipped
    resumed = api.resume(queue)
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["workers"] == [worker.hostname]
    car.wait_for(lambda s: tasks(s, queue, "failed") == 2)

    stack.open_gates(read, large)
    answer = api.retry(queue, first)
    assert answer.status_code == 202, answer.text
    new_id = answer.json()["job"]["id"]
    car.wait_for(lambda s: tasks(s, queue, "succeeded") == 1)
    check_exact(stack, read, MID_ARGS, MID_KWARGS)
    assert {job["id"]: job for job in api.jobs(queue, "failed")}[first]["retriedBy"] == new_id
    assert new_id in api.ids(queue, "completed")
    entry = assert_audited_ok(api, "retry", queue, first)
    assert "arguments from the message" in entry["detail"]

    refused = api.retry(queue, second)
    assert refused.status_code == 409, refused.text
    why = message(refused)
    assert "result_extended" in why and "--result-backend-url" in why
    car.wait_refreshes(2)
    assert stack.calls(large) == []
    assert entries_of(api, "retry", second) == []  # refused before it was recorded
    samples = car.metrics()
    assert tasks(samples, queue, "succeeded") == 1
    assert (counted(samples, "retry", "ok"), counted(samples, "retry", "refused")) == (1, 1)
    assert (counted(samples, "pause", "ok"), counted(samples, "resume", "ok")) == (1, 1)
    assert_audited_ok(api, "pause", queue, None)
    assert_audited_ok(api, "resume", queue, None)


#: Values a JSON decoder built for display alters (orjson reads integers past 64 bits as
#: floats, and a lone surrogate as U+FFFD), nested in a list and a dict.
ALTERED_ARGS: list[Any] = [
    2**64 + 1, [-(2**63) - 1, "lone \ud800 surrogate"], {"n": 12345678901234567890123},
]


def test_values_a_display_decoder_alters_are_retried_exactly_or_not_at_all(
    stack: Stack,
) -> None:
    """Integers past 64 bits and lone surrogates, from the result backend and from a
    message: the retry runs them exactly (202), or does not run at all (409)."""
    queue = "altered-values"
    results = stack.redis.url_for_db(1)
    car, _worker, api = stack.start(
        (queue,), "--result-backend-url", results,
        extra_env={"TEST_RESULT_BACKEND": results},
    )
    assert api.pause(queue).status_code == 202
    in_meta, in_message = stack.close_gate("gate-meta"), stack.close_gate("gate-message")
    from_meta = stack.publish(queue, GATED, in_meta, *ALTERED_ARGS)
    from_message = stack.publish(queue, GATED, in_message, *ALTERED_ARGS)
    car.wait_for(lambda s: queue_counts(s, queue)["paused"] == 2)
    assert len(api.jobs(queue, "paused")) == 2  # both messages decoded
    assert api.resume(queue).status_code == 202
    car.wait_for(lambda s: tasks(s, queue, "failed") == 2)
    stack.redis.client(1).delete(f"celery-task-meta-{from_message}")
    stack.open_gates(in_meta, in_message)
    ran = 0
    for job, gate in ((from_meta, in_meta), (from_message, in_message)):
        answer = api.retry(queue, job)
        assert answer.status_code in (202, 409), answer.text
        if answer.status_code == 202:
            ran += 1
            assert wait_until(functools.partial(stack.calls, gate), timeout=15)
            check_exact(stack, gate, ALTERED_ARGS, {})
            [[args, _kwargs]] = stack.calls(gate)
            assert type(args[0]) is int and type(args[2]["n"]) is int
        else:
            assert "result_extended" in message(answer)
    car.wait_refreshes(2)
    assert len(stack.calls(in_meta)) + len(stack.calls(in_message)) == ran
    assert tasks(car.metrics(), queue, "succeeded") == ran


# -- 3. cancel ------------------------------------------------------------------------------


def test_cancel_of_delayed_paused_and_active_jobs_and_a_409_for_a_completed_one(
    stack: Stack,
) -> None:
    """A cancelled delayed job never runs; a cancelled paused message leaves its list; a
    running job stops only with terminate; a completed job cannot be cancelled."""
    queue, held = "cancelling", "held"
    car, _worker, api = stack.start((queue, held))
    assert api.pause(held).status_code == 202

    delayed = stack.publish(queue, GATED, "gate-delayed", countdown=4)
    car.wait_for(lambda s: queue_counts(s, queue)["delayed"] == 1)
    assert api.ids(queue, "delayed") == [delayed]
    answer = api.cancel(queue, delayed)
    assert answer.status_code == 202, answer.text
    assert answer.json()["previousState"] == "delayed"
    assert (answer.json()["job"]["id"], answer.json()["job"]["state"]) == (delayed, "revoked")
    # One full refresh after the answer (the second snapshot begun after it) shows it gone.
    samples = car.wait_refreshes(2)
    assert queue_counts(samples, queue)["delayed"] == 0
    assert api.ids(queue, "delayed") == []

    kept, dropped = (stack.publish(held, GATED, gate) for gate in ("gate-kept", "gate-dropped"))
    car.wait_for(lambda s: queue_counts(s, held)["paused"] == 2)
    answer = api.cancel(held, dropped)
    assert answer.status_code == 202, answer.text
    assert answer.json()["previousState"] == "paused"
    assert stack.llen(held) == 1
    assert api.ids(held, "paused") == [kept]

    running = stack.publish(queue, "tests.sleep", 60)
    car.wait_for(lambda s: queue_counts(s, queue)["active"] == 1)
    answer = api.cancel(queue, running)
    assert answer.status_code == 202, answer.text
    assert (answer.json()["previousState"], answer.json()["job"]["state"]) == ("active", "active")
    samples = car.wait_refreshes(2)
    assert queue_counts(samples, queue)["active"] == 1
    assert api.ids(queue, "active") == [running]
    answer = api.cancel(queue, running, {"terminate": True, "signal": "SIGTERM"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["job"]["state"] == "revoked"
    samples = car.wait_for(lambda s: queue_counts(s, queue)["active"] == 0)
    assert tasks(samples, queue, "succeeded", "tests.sleep") == 0

    done = stack.publish(queue, "tests.add", 1, 2)
    car.wait_for(lambda s: tasks(s, queue, "succeeded", "tests.add") == 1)
    refused = api.cancel(queue, done)
    assert refused.status_code == 409, refused.text
    assert message(refused) == (
        "cannot cancel a completed job: cancel applies to waiting, paused, delayed, active jobs"
    )

    assert api.resume(held).status_code == 202
    assert wait_until(lambda: stack.calls("gate-kept") != [], timeout=15)
    # The delayed job's countdown is over: the worker discarded it.
    samples = car.wait_for(lambda s: tasks(s, queue, "revoked") == 1, timeout=15)
    assert stack.calls("gate-delayed") == [] and stack.calls("gate-dropped") == []
    assert tasks(samples, queue, "succeeded") == 0
    assert stack.llen(held) == 0
    for job in (delayed, dropped):
        assert_audited_ok(api, "cancel", queue if job == delayed else held, job)
    cancels = entries_of(api, "cancel", running)
    assert [e["params"] for e in cancels] == [{"terminate": True, "signal": "SIGTERM"}, {}]
    assert all((e["key"], e["outcome"]) == (ADMIN.name, "ok") for e in cancels)
    samples = car.wait_refreshes(2)  # a snapshot begun after the last action
    assert (counted(samples, "cancel", "ok"), counted(samples, "cancel", "refused")) == (4, 1)


# -- 4. remove --------------------------------------------------------------------------------


def test_remove_takes_out_the_exact_message_and_a_failed_job_for_good(stack: Stack) -> None:
    """DELETE of a paused job removes that one message, not another with the same task id;
    DELETE of a failed job drops it from the Jobs API and the saved history."""
    held, failing = "removing", "failing"
    car, _worker, api = stack.start((held, failing))
    assert api.pause(held).status_code == 202
    twin = "same-task-id-for-two-messages"
    stack.publish(held, GATED, "gate-twin-a", task_id=twin)
    stack.publish(held, GATED, "gate-twin-b", task_id=twin)
    last = stack.publish(held, GATED, "gate-last")
    car.wait_for(lambda s: queue_counts(s, held)["paused"] == 3)
    assert stack.llen(held) == 3

    answer = api.remove(held, twin)
    assert (answer.status_code, answer.json()) == (200, {"removed": twin}), answer.text
    left = stack.list_messages(held)
    assert len(left) == 2 and stack.llen(held) == 2
    [kept_twin] = [m for m in left if m["id"] == twin]
    kept_gate = kept_twin["args"][0]
    removed_gate = ({"gate-twin-a", "gate-twin-b"} - {kept_gate}).pop()
    assert {job["id"] for job in api.jobs(held, "paused")} == {twin, last}
    samples = car.wait_refreshes(2)
    assert queue_counts(samples, held)["paused"] == 2
    assert api.page(held, "paused")["pagination"]["totalJobs"] == 2
    assert_audited_ok(api, "remove", held, twin)

    assert api.resume(held).status_code == 202
    assert wait_until(
        lambda: stack.calls("gate-last") != [] and stack.calls(kept_gate) != [], timeout=15
    )
    samples = car.wait_for(lambda s: tasks(s, held, "succeeded") == 2)
    assert stack.llen(held) == 0 and api.ids(held, "paused") == []
    car.wait_refreshes(2)
    assert stack.calls(removed_gate) == []
    assert len(stack.calls(kept_gate)) == len(stack.calls("gate-last")) == 1

    gone, stays = (stack.publish(failing, "tests.fail", text) for text in ("gone", "stays"))
    car.wait_for(lambda s: queue_counts(s, failing)["failed"] == 2)
    saved = f"celery-jobs-exporter:jobs:failed:{failing}"
    assert wait_until(lambda: _saved_ids(stack, saved) == {gone, stays}, timeout=10)
    answer = api.remove(failing, gone)
    assert (answer.status_code, answer.json()) == (200, {"removed": gone}), answer.text
    assert _saved_ids(stack, saved) == {stays}
    samples = car.wait_refreshes(2)  # the Jobs API and /metrics show the next snapshot
    assert queue_counts(samples, failing)["failed"] == 1
    assert api.ids(failing, "failed") == [stays]
    assert_audited_ok(api, "remove", failing, gone)
    assert (counted(samples, "remove", "ok"), counted(samples, "remove", "refused")) == (2, 0)

    car.stop()  # a new sidecar loads the saved history: the removed job stays gone
    again = stack.sidecar()
    api = ActionsClient(again.base_url, ADMIN)
    again.wait_for(lambda s: queue_counts(s, failing)["failed"] == 1)
    assert api.ids(failing, "failed") == [stays]
    repeat = api.remove(failing, gone)
    assert repeat.status_code == 404, repeat.text
    assert len(entries_of(api, "remove")) == 2  # the log is kept in Redis


def _saved_ids(stack: Stack, key: str) -> set[str]:
    raws = stack.client.lrange(key, 0, -1)
    assert isinstance(raws, list)
    return {json.loads(raw)["id"] for raw in raws}


# -- 6. purge ---------------------------------------------------------------------------------


def test_purge_needs_its_confirmation_then_empties_every_priority_list(stack: Stack) -> None:
    """Without or with a wrong confirmation: 400 and nothing purged; then 0 waiting/paused."""
    queue = "purging"
    car, _worker, api = stack.start((queue,))
    assert api.pause(queue).status_code == 202
    for priority in (0, 1, 3, 5, 6, 9, 9, 0):
        stack.publish(queue, "tests.add", 1, priority, priority=priority)
    assert all(stack.client.llen(queue + s) for s in PRIORITY_SUFFIXES)
    car.wait_for(lambda s: queue_counts(s, queue)["paused"] == 8)

    for body in (None, {}, {"confirm": "other"}, {"confirm": queue.upper()}, {"confirm": None}):
        refused = api.purge(queue, body)
        assert refused.status_code == 400, (body, refused.text)
        assert "confirm" in message(refused)
    wrong_type = api.request(
        "POST", f"/jobs/queues/{queue}/purge", content=f"confirm={queue}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert wrong_type.status_code == 415, wrong_type.text
    assert stack.llen(queue) == 8

    answer = api.with_prefix("/api/v1").purge(queue, {"confirm": queue})
    assert (answer.status_code, answer.json()) == (200, {"purged": 8}), answer.text
    assert stack.llen(queue) == 0
    samples = car.wait_refreshes(2)
    counts = queue_counts(samples, queue)
    assert (counts["waiting"], counts["paused"]) == (0, 0)
    assert api.jobs(queue, "paused") == [] and api.jobs(queue, "waiting") == []
    entry = assert_audited_ok(api, "purge", queue, None)
    assert entry["params"] == {"confirm": queue} and "8" in entry["detail"]
    assert (counted(samples, "purge", "ok"), counted(samples, "purge", "refused")) == (1, 5)
    assert api.resume(queue).status_code == 202
    samples = car.wait_refreshes(2)
    assert tasks(samples, queue, "succeeded", "tests.add") == 0


# -- 8. read-only -----------------------------------------------------------------------------


def test_a_read_jobs_key_and_read_only_mode_get_403_and_change_nothing(stack: Stack) -> None:
    """Every action route, under both prefixes: 403 for a read:jobs key, and for any key
    under --read-only; Redis is byte for byte the same; the GET routes work."""
    queue, failing = "guarded", "guarded-failed"
    car, worker, admin = stack.start((queue, failing))
    # Without history: two sidecars on one Redis would both save the failed job.
    frozen = stack.sidecar("--read-only", "--no-history")
    assert admin.pause(queue).status_code == 202
    waiting = stack.publish(queue, GATED, "gate-guarded")
    failed = stack.publish(failing, "tests.fail", "kept")
    car.wait_for(
        lambda s: queue_counts(s, queue)["paused"] == 1
        and queue_counts(s, failing)["failed"] == 1
    )
    frozen.wait_for(lambda s: queue_counts(s, failing)["failed"] == 1)
    saved = f"celery-jobs-exporter:jobs:failed:{failing}"
    assert wait_until(lambda: stack.client.llen(saved) == 1, timeout=10)
    car.wait_refreshes(1)
    before = redis_state(stack.client)
    consumed = active_queues(stack.app, worker.hostname)
    assert consumed == {failing}

    refusals = 0
    for base, key in ((car, READER), (frozen, ADMIN), (frozen, READER)):
        for prefix in ("/v1", "/api/v1"):
            api = ActionsClient(base.base_url, key, prefix)
            for method, route, body in ACTION_ROUTES:
                for target_queue, job in ((queue, waiting), (failing, failed)):
                    path = route.format(q=target_queue, id=job)
                    sent = {k: str(v).format(q=target_queue) if isinstance(v, str) else v
                            for k, v in (body or {}).items()} or None
                    answer = api.request(method, path, sent)
                    assert answer.status_code == 403, (base.base_url, key.name, path, answer.text)
                    if key is READER:  # the key is checked first
                        assert "manage:all" in message(answer)
                    else:
                        assert "--read-only" in message(answer)
                    refusals += 1
    assert refusals == 3 * 2 * len(ACTION_ROUTES) * 2
    car.wait_refreshes(2)
    assert redis_state(stack.client) == before
    assert active_queues(stack.app, worker.hostname) == consumed
    assert stack.llen(queue) == 1 and stack.calls("gate-guarded") == []

    for base in (car, frozen):
        reader = ActionsClient(base.base_url, READER)
        assert reader.get("/jobs/queues").status_code == 200
        assert reader.ids(queue, "paused") == [waiting]
        assert reader.ids(failing, "failed") == [failed]
        found = reader.get("/jobs/search", q="kept")
        assert found.status_code == 200, found.text
        assert [job["id"] for job in found.json()["jobs"]] == [failed]
        entries = reader.audit()
        assert [(e["action"], e["key"], e["outcome"]) for e in entries] == [
            ("pause", ADMIN.name, "ok")
        ]
        samples = base.metrics()
        assert sum(v for (n, _), v in samples.items() if n == "celery_exporter_actions_total") == (
            1 if base is car else 0
        )
    no_key = ActionsClient(car.base_url, None).pause(queue)
    assert no_key.status_code == 401, no_key.text
