"""TaskTracker as a whole: one lock per batch, and its parts wired together."""

from __future__ import annotations

import threading
from types import TracebackType

from exporter.core.taskstats import TaskStats
from exporter.core.tracker import OUTCOMES, TaskTracker
from exporter.model.jobs import RetentionLimits
from exporter.protocol.events import Event

NOW = 1_000.0


class CountingLock:
    """A lock that counts how often it is taken."""

    def __init__(self) -> None:
        self.taken = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()
        self.taken += 1

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()


def make_tracker() -> TaskTracker:
    stats = TaskStats(max_task_names=10, runtime_buckets=[1.0], queue_wait_buckets=[1.0])
    return TaskTracker(limits=RetentionLimits(), stats=stats, clock=lambda: NOW)


def task(kind: str, task_id: str, at: float, **fields: object) -> Event:
    return Event(type=kind, uuid=task_id, timestamp=at, hostname="w@h", **fields)  # type: ignore[arg-type]


def run(task_id: str, at: float, queue: str = "q", end: str = "task-succeeded") -> list[Event]:
    return [
        task("task-sent", task_id, at, name="app.job", queue=queue),
        task("task-received", task_id, at + 0.1),
        task("task-started", task_id, at + 0.2),
        task(end, task_id, at + 1.0),
    ]


def test_a_batch_takes_the_lock_once_whatever_its_size() -> None:
    tracker = make_tracker()
    lock = CountingLock()
    tracker.lock = lock  # type: ignore[assignment]
    tracker.apply_batch([event for n in range(50) for event in run(f"t{n}", NOW + n)])
    assert lock.taken == 1
    assert tracker.view().events_received == 200


def test_events_without_their_keys_are_counted_undecodable_and_skipped() -> None:
    tracker = make_tracker()
    tracker.apply_batch(
        [
            Event(type="task-started", uuid="x"),  # no timestamp
            Event(type="worker-heartbeat"),  # no hostname
            Event(type="task-sent", uuid="y", timestamp=NOW, eta="not a date"),
            Event(type="something-else"),
        ],
        undecodable=2,
    )
    view = tracker.view()
    assert (view.events_received, view.events_undecodable, view.active) == (4, 5, ())


def test_finished_jobs_reach_the_store_the_stats_and_the_outbox() -> None:
    tracker = make_tracker()
    tracker.apply_batch(run("b", NOW + 5, end="task-failed") + run("a", NOW))
    view = tracker.view()
    assert view.retained == {"q": (1, 1)}
    assert {o for (_, _, o) in view.stats.outcomes} == set(OUTCOMES)
    assert view.stats.outcomes[("q", "app.job", "failed")] == 1
    assert [job.id for job in tracker.take_unsaved()] == ["a", "b"]  # oldest first
    assert tracker.take_unsaved() == []


def test_a_job_dropped_from_active_keeps_its_name_for_an_end_that_comes_late() -> None:
    """A reply no longer held it (its pool process was killed), then its task-failed came
    from the worker's next batch: counted as a failure of its task, in its queue."""
    tracker = make_tracker()
    started, ended = run("k", NOW, end="task-failed")[:3], run("k", NOW, end="task-failed")[3]
    tracker.apply_batch(started)
    tracker.drop_active(["k"])
    assert tracker.active() == ()
    tracker.apply_batch([ended])
    view = tracker.view()
    assert view.stats.outcomes[("q", "app.job", "failed")] == 1
    assert view.retained == {"q": (0, 1)}
    [job] = tracker.take_unsaved()
    assert (job.id, job.name, job.state) == ("k", "app.job", "failed")


def test_heartbeats_reveal_missed_starts_in_the_stream_counters() -> None:
    tracker = make_tracker()
    beat = {"type": "worker-heartbeat", "hostname": "w@h", "timestamp": NOW, "pid": 7}
    tracker.apply_batch([Event(**beat, processed=0, active=0)])  # type: ignore[arg-type]
    tracker.apply_batch(run("seen", NOW))
    tracker.apply_batch([Event(**beat, processed=4, active=0)])  # type: ignore[arg-type]
    assert tracker.view().events_lost == 3


def test_a_worker_saying_goodbye_stops_its_jobs_being_active() -> None:
    tracker = make_tracker()
    tracker.apply_batch(run("r", NOW)[:3])
    assert [job.task_id for job in tracker.active()] == ["r"]
    tracker.apply_batch([Event(type="worker-offline", hostname="w@h", timestamp=NOW)])
    assert tracker.active() == ()
    assert tracker.online_workers() == frozenset()
    assert tracker.workers_seen()["w@h"].online is False


def test_targeted_reads_agree_with_the_view() -> None:
    tracker = make_tracker()
    tracker.apply_batch(
        [
            Event(type="worker-online", hostname="w@h", timestamp=NOW),
            *run("done", NOW),
            *run("running", NOW + 2, queue="other")[:3],
        ]
    )
    view = tracker.view()
    assert tracker.active() == view.active
    assert tracker.workers_seen() == view.workers
    assert tracker.queues_seen() == view.queues_seen == {"q", "other"}
    assert tracker.online_workers() == {w.hostname for w in view.workers.values() if w.online}


def test_a_lost_job_revived_runs_again_and_its_real_end_is_a_recovery() -> None:
    tracker = make_tracker()
    tracker.apply_batch(run("j", NOW)[:3])
    assert tracker.declare_lost("w@h", NOW + 5, in_broker=set()) == {"j"}
    view = tracker.view()
    assert (view.active, view.retained) == ((), {"q": (0, 1)})
    assert view.stats.outcomes[("q", "app.job", "lost")] == 1
    tracker.revive(["j"])
    assert [job.task_id for job in tracker.active()] == ["j"]
    assert tracker.view().retained == {"q": (0, 0)}
    tracker.apply_batch(run("j", NOW)[3:])
    view = tracker.view()
    assert view.stats.recovered[("q", "app.job")] == 1
    assert view.stats.outcomes[("q", "app.job", "succeeded")] == 0
