"""The persisted job history: saved in bounded chunks, kept when a save fails, loaded back.

A real redis-server refuses writes for a while (`maxmemory` reached, `noeviction`: reads
still work, so the broker is read and the refresh goes on): the jobs that finished
meanwhile must reach the history once writes work again, and the lists must still hold
exactly the newest jobs up to the retention limit.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from exporter.config.settings import Settings
from exporter.core.history import LOAD_CHUNK, SAVE_CHUNK, JobHistory
from exporter.core.refresher import Refresher
from exporter.core.tracker import TaskTracker
from exporter.protocol.events import decode_event_message, events_from
from exporter.serving.runtime import make_tracker
from exporter.sources.broker import BrokerSource
from exporter.sources.redis import connect, parse_endpoint
from testkit.payloads import load_payloads
from testkit.redis_server import RedisServer

PREFIX = "celery-jobs-exporter:"
FAILED_LIMIT = SAVE_CHUNK + 50  # more than one save chunk fits in the retention


def captured(kind: str) -> dict[str, Any]:
    """The first event of a kind that a real worker published."""
    for payload in load_payloads():
        for event in decode_event_message(payload.raw):
            if event.type == kind:
                return msgspec.structs.asdict(event)
    raise AssertionError(f"no {kind} event captured")


def failed_task_events(count: int, queue: str, start: float) -> tuple[list[str], list[Any]]:
    """Sent, started and failed events of `count` tasks (captured ones, new ids)."""
    sent, started, failed = (captured(k) for k in ("task-sent", "task-started", "task-failed"))
    ids: list[str] = []
    events: list[Any] = []
    for index in range(count):
        task_id = str(uuid.uuid4())
        ids.append(task_id)
        at = start + index
        for template, offset in ((sent, 0.0), (started, 0.1), (failed, 0.2)):
            event = copy.deepcopy(template)
            event.update(uuid=task_id, timestamp=at + offset)
            if event["type"] == "task-sent":
                event.update(queue=queue, routing_key=queue)
            events.append(event)
    return ids, events


@pytest.fixture
def refresher_and_tracker(
    redis_server: RedisServer,
) -> Iterator[tuple[Refresher, TaskTracker, JobHistory]]:
    settings = Settings(
        broker_url=redis_server.url, refresh_interval=1.0, inspect_timeout=0.5,
        completed_retention=10, failed_retention=FAILED_LIMIT,
    )
    client = connect(parse_endpoint(settings.broker_url), settings.transport, socket_timeout=2.0)
    tracker = make_tracker(settings)
    history = JobHistory(client, PREFIX, settings.retention)
    broker = BrokerSource(client, settings.transport, configured_queues=(), discovery_interval=0)
    refresher = Refresher(settings, broker, None, tracker, history=history)
    try:
        yield refresher, tracker, history
    finally:
        refresher.stop()
        client.close()


def saved_ids(history: JobHistory) -> list[str]:
    return [job.id for chunk in history.load() for job in chunk]


def test_jobs_a_failed_save_could_not_write_are_saved_by_the_next_one(
    redis_server: RedisServer,
    refresher_and_tracker: tuple[Refresher, TaskTracker, JobHistory],
    caplog: pytest.LogCaptureFixture,
) -> None:
    refresher, tracker, history = refresher_and_tracker
    refresher.refresh_once()  # loads the (empty) history
    before, events = failed_task_events(100, "work", start=1_000.0)
    tracker.apply_batch(events_from(events))
    refresher.refresh_once()
    assert saved_ids(history) == before[::-1]

    admin = redis_server.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # every write is refused with OOM from now on
    during, events = failed_task_events(2 * SAVE_CHUNK, "work", start=2_000.0)
    tracker.apply_batch(events_from(events))
    snapshot = refresher.refresh_once()  # the save fails: the jobs wait for the next one
    assert snapshot.broker_up
    assert any("will retry" in r.getMessage() for r in caplog.records), caplog.text
    assert saved_ids(history) == before[::-1]

    admin.config_set("maxmemory", "0")
    refresher.refresh_once()
    assert saved_ids(history) == (during[::-1] + before[::-1])[:FAILED_LIMIT]
    assert admin.llen(history.key("failed", "work")) == FAILED_LIMIT
    admin.close()


def test_a_save_keeps_exactly_the_newest_jobs_across_chunks(
    redis_server: RedisServer,
    refresher_and_tracker: tuple[Refresher, TaskTracker, JobHistory],
) -> None:
    refresher, tracker, history = refresher_and_tracker
    refresher.refresh_once()
    ids, events = failed_task_events(3 * SAVE_CHUNK + 7, "work", start=1_000.0)
    tracker.apply_batch(events_from(events))
    refresher.refresh_once()
    assert saved_ids(history) == ids[::-1][:FAILED_LIMIT]


def test_load_reads_in_bounded_chunks_newest_first(redis_server: RedisServer) -> None:
    settings = Settings(broker_url=redis_server.url, failed_retention=LOAD_CHUNK + 30)
    tracker = make_tracker(settings)
    client = connect(parse_endpoint(settings.broker_url), settings.transport)
    history = JobHistory(client, PREFIX, settings.retention)
    ids, events = failed_task_events(LOAD_CHUNK + 30, "bulk", start=1_000.0)
    tracker.apply_batch(events_from(events))
    jobs = tracker.take_unsaved()
    for start in range(0, len(jobs), SAVE_CHUNK):
        history.save(jobs[start : start + SAVE_CHUNK])
    chunks = list(history.load())
    assert [len(c) for c in chunks if c] == [LOAD_CHUNK, 30]
    assert [job.id for chunk in chunks for job in chunk] == ids[::-1]
    client.close()


def test_a_retry_link_is_saved_in_place_and_loads_back(
    redis_server: RedisServer,
    refresher_and_tracker: tuple[Refresher, TaskTracker, JobHistory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`retriedBy` survives a restart: saved entries are edited where they are, many in
    one read of the list, even when a save pushes onto it between the read and the
    write; a hostile entry costs nothing but itself."""
    refresher, tracker, history = refresher_and_tracker
    refresher.refresh_once()
    ids, events = failed_task_events(5, "work", start=1_000.0)
    tracker.apply_batch(events_from(events))
    refresher.refresh_once()
    key = history.key("failed", "work")
    admin = redis_server.client()
    hostile = [b'{"id": ["not", "a", "string"]}', b"not json", b'{"id": "%s"' % ids[0].encode()]
    admin.rpush(key, *hostile)
    before = admin.lrange(key, 0, -1)
    reads = 0
    lrange = history._client.lrange

    def counted_lrange(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return lrange(*args)

    monkeypatch.setattr(history._client, "lrange", counted_lrange)
    assert history.mark_retried("work", {ids[1]: "run-2", ids[2]: "run-3"}) == {ids[1], ids[2]}
    assert reads == 1  # the failed list, once; all were found: the completed one is not read
    after = admin.lrange(key, 0, -1)
    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    assert changed == [2, 3]  # newest first: ids[2] and ids[1], and nothing else
    loaded = {job.id: job.retried_by for chunk in history.load() for job in chunk}
    expected = {ids[1]: "run-2", ids[2]: "run-3"}
    assert loaded == {task_id: expected.get(task_id) for task_id in ids}

    # A save lands between the read and the write: the entry moved one place down.
    lookup = history._entries_of

    def lookup_then_save(key: str, task_ids: Any) -> Any:
        found = lookup(key, task_ids)
        if admin.llen(key) == len(before):
            _newer, more = failed_task_events(1, "work", start=2_000.0)
            tracker.apply_batch(events_from(more))
            refresher.refresh_once()
        return found

    monkeypatch.setattr(history, "_entries_of", lookup_then_save)
    assert history.mark_retried("work", {ids[3]: "run-4"}) == {ids[3]}
    loaded = {job.id: job.retried_by for chunk in history.load() for job in chunk}
    assert loaded[ids[3]] == "run-4" and loaded[ids[1]] == "run-2"
    assert len(loaded) == len(ids) + 1 and sum(v is not None for v in loaded.values()) == 3
    assert history.mark_retried("work", {"never-saved": "run-x"}) == set()
    admin.close()
