"""The tracker's parts on their own: stream counters, liveness, outbox and routes."""

from __future__ import annotations

from exporter.core.tracker.liveness import MAX_WORKERS, Liveness
from exporter.core.tracker.outbox import Outbox
from exporter.core.tracker.routes import MAX_ROUTES, Routes
from exporter.core.tracker.stream import StreamBook
from exporter.model.jobs import Job, RetentionLimits
from exporter.protocol.cardinality import QueueAdmission
from exporter.protocol.events import Event


def heartbeat(hostname: str, processed: int, active: int = 0, pid: int = 1) -> Event:
    return Event(type="worker-heartbeat", hostname=hostname, timestamp=1.0,
                 processed=processed, active=active, pid=pid)


def finished(task_id: str, queue: str, state: str, at: float) -> Job:
    job = Job(task_id)
    job.queue, job.state, job.finished_at = queue, state, at
    return job


def test_stream_counts_time_lost_from_a_working_subscription_to_the_next() -> None:
    now = [100.0]
    stream = StreamBook(monotonic=lambda: now[0])
    stream.mark(False)  # never connected yet: nothing was lost
    now[0] = 105.0
    assert stream.disconnected_seconds() == 0.0
    stream.mark(True)
    now[0] = 110.0
    stream.mark(False)
    now[0] = 113.0
    assert stream.disconnected_seconds() == 3.0  # the ongoing loss counts
    stream.mark(True, reconnected=True)
    now[0] = 120.0
    assert (stream.disconnected_seconds(), stream.reconnects, stream.connected) == (3.0, 1, True)


def test_liveness_infers_missed_starts_from_the_processed_counter() -> None:
    liveness = Liveness(clock=lambda: 50.0)
    assert liveness.heard(heartbeat("w@h", processed=10), "w@h") == 0  # the baseline
    liveness.started("w@h")
    liveness.started("w@h")
    # 5 more processed, 2 starts seen, 1 still running: 2 starts were missed.
    assert liveness.heard(heartbeat("w@h", processed=15, active=1), "w@h") == 2
    assert liveness.heard(heartbeat("w@h", processed=15, active=1), "w@h") == 0  # once
    assert liveness.heard(heartbeat("w@h", processed=15, pid=2), "w@h") == 0  # new pid
    seen = liveness.seen()["w@h"]
    assert (seen.online, seen.last_seen, seen.processed) == (True, 50.0, 15)


def test_liveness_goodbye_and_bound() -> None:
    liveness = Liveness(clock=lambda: 1.0)
    for n in range(MAX_WORKERS + 1):
        liveness.heard(heartbeat(f"w{n}@h", processed=0), f"w{n}@h")
    liveness.offline("w1@h")
    workers = liveness.seen()
    assert len(workers) == MAX_WORKERS and "w0@h" not in workers  # least recent forgotten
    assert workers["w1@h"].online is False
    assert "w1@h" not in liveness.online() and "w2@h" in liveness.online()


def test_outbox_keeps_the_newest_within_retention_and_takes_everything() -> None:
    outbox = Outbox(RetentionLimits(completed=2, failed=1))
    for n in range(3):
        outbox.put(finished(f"c{n}", "q", "succeeded", float(n)))
        outbox.put(finished(f"f{n}", "q", "failed", float(n)))
    taken = outbox.take()
    assert sorted(job.id for job in taken) == ["c1", "c2", "f2"]
    assert outbox.take() == []


def test_outbox_gives_back_behind_newer_jobs_within_retention() -> None:
    outbox = Outbox(RetentionLimits(completed=3, failed=3))
    old = [finished(f"old{n}", "q", "succeeded", float(n)) for n in range(2)]
    outbox.put(finished("new", "q", "succeeded", 10.0))
    outbox.give_back(old)
    assert [job.id for job in outbox.take()] == ["old0", "old1", "new"]
    for n in range(3):
        outbox.put(finished(f"newer{n}", "q", "succeeded", 20.0 + n))
    outbox.give_back(old)  # full of newer jobs: they stay
    assert [job.id for job in outbox.take()] == ["newer0", "newer1", "newer2"]


def test_routes_guess_a_queue_from_the_task_name_then_the_worker() -> None:
    routes = Routes(QueueAdmission(2))
    routes.route("app.add", "math")
    routes.consumed({"w@h": ("only",), "v@h": ("a", "b")})
    by_name, by_worker, unknown = Job("1"), Job("2"), Job("3")
    by_name.name = "app.add"
    by_worker.hostname = "w@h"
    unknown.hostname = "v@h"
    assert routes.queue_of(by_name) == "math"
    assert routes.queue_of(by_worker) == "only"
    assert routes.queue_of(unknown) is None  # "unknown" is past the two admitted queues
    assert routes.seen() == {"math", "only"}


def test_routes_remember_a_bounded_number_of_task_names() -> None:
    routes = Routes(QueueAdmission(10))
    for n in range(MAX_ROUTES + 1):
        routes.route(f"task{n}", "q")
    job = Job("1")
    job.name = f"task{MAX_ROUTES}"
    assert routes.queue_of(job) == "unknown"
    job = Job("2")
    job.name = "task0"
    assert routes.queue_of(job) == "q"
