"""A refresh takes one frozen tracker view, after all of its writes to the tracker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from exporter.config.settings import Settings
from exporter.core.refresher import Refresher
from exporter.core.taskstats import TaskStats
from exporter.core.tracker import TaskTracker
from exporter.model.jobs import RetentionLimits
from exporter.model.readings import BrokerReading, WorkersReading
from exporter.protocol.events import Event
from exporter.protocol.replies import WorkerReply, WorkerTask

WRITES = ("learn_routes", "revive", "drop_active", "declare_lost")
HOST = "w@h"
LONG_AGO = 1_000.0  # event timestamps and the heartbeat's clock: far in the past


class FakeBroker:
    """An empty broker; remembers which extra queues it was asked about."""

    def __init__(self) -> None:
        self.asked: list[frozenset[str]] = []

    def read(self, extra_queues: Iterable[str] = ()) -> BrokerReading:
        self.asked.append(frozenset(extra_queues))
        return BrokerReading(frozenset(), {}, (), 0, 1, time.time())


class FakeWorkers:
    """Answers with the replies set by the test; remembers which workers it expected."""

    def __init__(self) -> None:
        self.replies: dict[str, WorkerReply] = {}
        self.expected: list[frozenset[str]] = []

    def read(self, expected_workers: Iterable[str] = ()) -> WorkersReading:
        self.expected.append(frozenset(expected_workers))
        return WorkersReading(dict(self.replies), read_at=time.time(), duration=0.01)


def running(*task_ids: str) -> WorkerReply:
    tasks = tuple(WorkerTask(t, "app.job", "", "q", started_at=LONG_AGO) for t in task_ids)
    return WorkerReply(HOST, ("q",), tasks, (), (), 4, complete=True)


def started(task_id: str) -> list[Event]:
    return [
        Event(type="task-sent", uuid=task_id, timestamp=LONG_AGO, name="app.job", queue="q"),
        Event(type="task-started", uuid=task_id, timestamp=LONG_AGO, hostname=HOST),
    ]


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def tracker(calls: list[str]) -> TaskTracker:
    """A tracker whose heartbeats are stale at once, recording its views and writes."""
    stats = TaskStats(max_task_names=10, runtime_buckets=[1.0], queue_wait_buckets=[1.0])
    tracker = TaskTracker(limits=RetentionLimits(), stats=stats, clock=lambda: LONG_AGO)

    def recorded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return method(*args, **kwargs)
        return call

    for name in ("view", *WRITES):
        setattr(tracker, name, recorded(name, getattr(tracker, name)))
    return tracker


@pytest.fixture
def sources() -> tuple[FakeBroker, FakeWorkers]:
    return FakeBroker(), FakeWorkers()


@pytest.fixture
def refresher(
    tracker: TaskTracker, sources: tuple[FakeBroker, FakeWorkers]
) -> Iterator[Refresher]:
    settings = Settings(
        broker_url="redis://127.0.0.1:1/0", refresh_interval=2.0, inspect_timeout=0.5,
        worker_timeout=5.0, history=False,
    )
    broker, workers = sources
    refresher = Refresher(settings, broker, workers, tracker)  # type: ignore[arg-type]
    yield refresher
    refresher.stop()


def refresh(refresher: Refresher, calls: list[str]) -> dict[str, int]:
    """One refresh: exactly one view, taken after every write; the queue's counts."""
    calls.clear()
    snapshot = refresher.refresh_once()
    assert calls.count("view") == 1, calls
    assert calls[-1] == "view", calls
    return dict(snapshot.queues["q"].counts)


def test_each_refresh_takes_one_view_after_its_writes(
    refresher: Refresher, tracker: TaskTracker, calls: list[str],
    sources: tuple[FakeBroker, FakeWorkers],
) -> None:
    broker, workers = sources
    tracker.apply_batch([Event(type="worker-online", hostname=HOST, timestamp=LONG_AGO)])
    tracker.apply_batch(started("kept") + started("ended"))

    # The worker runs "kept" only: "ended" finished unseen and is dropped.
    workers.replies = {HOST: running("kept")}
    counts = refresh(refresher, calls)
    assert "drop_active" in calls and "declare_lost" not in calls
    assert counts["active"] == 1
    assert workers.expected[-1] == {HOST} and "q" in broker.asked[-1]  # read before the view

    # The worker stops answering and its heartbeat is stale: its job is lost.
    workers.replies = {}
    counts = refresh(refresher, calls)
    assert "declare_lost" in calls
    assert (counts["active"], counts["failed"]) == (0, 1)  # the one view saw the loss

    counts = refresh(refresher, calls)  # still down: declared once
    assert "declare_lost" not in calls
    assert (counts["active"], counts["failed"]) == (0, 1)

    # It was only cut off: it answers again, still running the job.
    workers.replies = {HOST: running("kept")}
    counts = refresh(refresher, calls)
    assert (counts["active"], counts["failed"]) == (1, 0)
    assert "revive" in calls


def test_a_refresh_without_worker_inspection_takes_one_view(
    tracker: TaskTracker, calls: list[str]
) -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", history=False, queues=("q",))
    refresher = Refresher(settings, FakeBroker(), None, tracker)  # type: ignore[arg-type]
    try:
        tracker.apply_batch(started("r"))
        assert refresh(refresher, calls)["active"] == 1
        assert refresh(refresher, calls)["active"] == 1
    finally:
        refresher.stop()
