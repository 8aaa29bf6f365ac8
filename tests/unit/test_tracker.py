"""TaskTracker fed with REAL Celery events captured from a real worker.

`testkit/data/payloads.jsonl` holds the raw pub/sub payloads of a worker running
the capture script's task mix: tests.add on `celery` and on `bench`, tests.fail,
tests.flaky_fail (autoretry, max_retries=2), tests.ingest and tests.sleep(0.1).
Expectations are computed from the decoded events themselves by a small,
independent model below, not hard-coded.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from exporter.core.taskstats import OTHER_TASK, TaskStats
from exporter.core.tracker import OUTCOMES, TaskTracker
from exporter.model.jobs import MAX_TRACEBACK, Job, RetentionLimits, clip
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.events import decode_event_message, events_from
from testkit.payloads import load_payloads

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
FINISHING = ("task-succeeded", "task-failed", "task-retried", "task-revoked", "task-rejected")
Event = dict[str, Any]


def nonzero(outcomes: dict[tuple[str, str, str], int]) -> dict[tuple[str, str, str], int]:
    """The counters that moved; every pair seen also has its other outcomes at 0."""
    pairs = {(queue, task) for queue, task, _ in outcomes}
    for queue, task in pairs:
        assert {o for q, t, o in outcomes if (q, t) == (queue, task)} == set(OUTCOMES)
    return {key: value for key, value in outcomes.items() if value}


def load_batches() -> list[list[Event]]:
    """Every captured payload, decoded by the exporter's own decoder, in capture order."""
    return [[as_dict(e) for e in decode_event_message(p.raw)] for p in load_payloads()]


def as_dict(event: Any) -> Event:
    """A decoded event as a plain mapping of the fields it has (for the model below)."""
    return {k: v for k, v in msgspec.structs.asdict(event).items() if v is not None}


def apply(tracker: TaskTracker, events: Iterable[Event], undecodable: int = 0) -> None:
    """Hand events over as the stream does: each checked at the boundary, bad ones counted."""
    good = []
    for event in events:
        try:
            good.extend(events_from([event]))
        except MalformedMessage:
            undecodable += 1
    tracker.apply_batch(good, undecodable)


BATCHES = load_batches()
EVENTS = [event for batch in BATCHES for event in batch]


def make_tracker(
    *,
    completed: int = 1000,
    failed: int = 1000,
    max_age: float = 0.0,
    max_task_names: int = 500,
    max_tracked_jobs: int = 100_000,
    clock: Callable[[], float] | None = None,
) -> TaskTracker:
    """A tracker with the given limits (and optionally a fixed clock)."""
    stats = TaskStats(
        max_task_names=max_task_names, runtime_buckets=BUCKETS, queue_wait_buckets=BUCKETS
    )
    limits = RetentionLimits(completed=completed, failed=failed, max_age=max_age)
    if clock is None:
        return TaskTracker(limits=limits, stats=stats, max_tracked_jobs=max_tracked_jobs)
    return TaskTracker(
        limits=limits, stats=stats, max_tracked_jobs=max_tracked_jobs, clock=clock
    )


def feed(tracker: TaskTracker, batches: Iterable[list[Event]]) -> None:
    """Apply batches as the event stream does (one call per pub/sub payload)."""
    for batch in batches:
        apply(tracker, copy.deepcopy(batch))


def rewrite(batches: list[list[Event]], copy_index: int, shift: float) -> list[list[Event]]:
    """A copy of the stream whose task uuids are new and timestamps later by `shift`."""
    result: list[list[Event]] = []
    for batch in batches:
        new_batch: list[Event] = []
        for event in batch:
            event = copy.deepcopy(event)
            if "uuid" in event:
                event["uuid"] = f"{event['uuid']}#{copy_index}"
            event["timestamp"] = float(event["timestamp"]) + shift
            new_batch.append(event)
        result.append(new_batch)
    return result


@dataclass
class Model:
    """What the events say, computed plainly."""

    queue: dict[str, str] = field(default_factory=dict)
    name: dict[str, str] = field(default_factory=dict)
    started: Counter[str] = field(default_factory=Counter)
    started_at: dict[str, float] = field(default_factory=dict)
    finished: list[tuple[str, str]] = field(default_factory=list)  # (outcome, uuid)
    finished_at: dict[str, float] = field(default_factory=dict)
    failures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    runtimes: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, events: Iterable[Event]) -> Model:
        model = cls()
        for event in events:
            kind, uuid = event["type"], event.get("uuid")
            if uuid is None:
                continue
            if event.get("name"):
                model.name[uuid] = event["name"]
            if kind == "task-sent":
                model.queue[uuid] = event["queue"]
            elif kind == "task-started":
                model.started[uuid] += 1
                model.started_at[uuid] = event["timestamp"]
            elif kind in FINISHING:
                outcome = kind.removeprefix("task-")
                model.finished.append((outcome, uuid))
                if kind in ("task-failed", "task-retried"):
                    model.failures.setdefault(uuid, []).append(
                        (event["exception"], event["traceback"])
                    )
                if kind in ("task-succeeded", "task-failed"):
                    model.finished_at[uuid] = event["timestamp"]
                    runtime = event.get("runtime")
                    if runtime is None:
                        runtime = event["timestamp"] - model.started_at[uuid]
                    key = (model.queue[uuid], model.name[uuid])
                    model.runtimes.setdefault(key, []).append(runtime)
        return model

    def outcomes(self, label: Callable[[str], str] = str) -> dict[tuple[str, str, str], int]:
        counts: Counter[tuple[str, str, str]] = Counter()
        for outcome, uuid in self.finished:
            counts[(self.queue[uuid], label(self.name[uuid]), outcome)] += 1
        return dict(counts)

    def finished_ids(self, queue: str, outcome: str) -> list[str]:
        return [u for o, u in self.finished if o == outcome and self.queue[u] == queue]


MODEL = Model.of(EVENTS)


def by_id(jobs: Iterable[Job]) -> dict[str, Job]:
    return {job.id: job for job in jobs}


def the_uuid(name: str) -> str:
    (uuid,) = {u for u, n in MODEL.name.items() if n == name}
    return uuid


# -- the capture itself -------------------------------------------------------------------


def test_capture_has_the_expected_mix() -> None:
    """The capture holds what the capture script ran (guards the other tests' premises)."""
    kinds = Counter(event["type"] for event in EVENTS)
    for kind in ("task-sent", "task-received", "task-started", "task-succeeded",
                 "task-failed", "task-retried", "worker-online", "worker-heartbeat",
                 "worker-offline"):
        assert kinds[kind] > 0, kind
    assert set(MODEL.queue.values()) == {"celery", "bench"}
    assert MODEL.started[the_uuid("tests.flaky_fail")] == 3


# -- real stream -------------------------------------------------------------------------


def test_real_stream_retention_counters_and_histograms() -> None:
    """Retained counts, outcome counters and histograms agree with the events."""
    tracker = make_tracker()
    feed(tracker, BATCHES)
    view = tracker.view()

    expected_retained = {
        queue: (
            len(MODEL.finished_ids(queue, "succeeded")),
            len(MODEL.finished_ids(queue, "failed")),
        )
        for queue in set(MODEL.queue.values())
    }
    assert view.retained == expected_retained
    assert view.retained == {"celery": (2, 2), "bench": (2, 0)}

    assert nonzero(view.stats.outcomes) == MODEL.outcomes()
    retried = {k: v for k, v in view.stats.outcomes.items() if k[2] == "retried" and v}
    assert retried == {("celery", "tests.flaky_fail", "retried"): 2}

    assert set(view.stats.runtime) == set(MODEL.runtimes)
    for key, runtimes in MODEL.runtimes.items():
        histogram = view.stats.runtime[key]
        assert histogram.count == len(runtimes), key
        assert histogram.total == pytest.approx(sum(runtimes)), key
        assert histogram.bounds == BUCKETS
    assert sum(h.count for h in view.stats.runtime.values()) == sum(
        1 for outcome, _ in MODEL.finished if outcome in ("succeeded", "failed")
    )

    starts_per_queue = Counter(MODEL.queue[u] for u in MODEL.started.elements())
    assert {q: h.count for q, h in view.stats.queue_wait.items()} == dict(starts_per_queue)

    assert view.events_received == len(EVENTS)
    assert view.events_undecodable == 0
    assert view.events_lost == 0
    assert view.jobs_evicted == 0
    assert view.queues_seen == frozenset({"celery", "bench"})
    assert view.active == ()
    assert view.stats.folded_task_names == 0


def test_real_stream_worker_liveness() -> None:
    """worker-online and heartbeats mark the worker up; worker-offline marks it down."""
    tracker = make_tracker()
    hostname = next(e["hostname"] for e in EVENTS if e["type"] == "worker-online")
    offline_at = next(i for i, b in enumerate(BATCHES) if b[0]["type"] == "worker-offline")
    feed(tracker, BATCHES[:offline_at])
    before = tracker.view().workers[hostname]
    last_heartbeat = [e for e in EVENTS if e["type"] == "worker-heartbeat"][-1]
    assert before.online is True
    assert before.processed == last_heartbeat["processed"]
    assert before.active == last_heartbeat["active"]
    feed(tracker, BATCHES[offline_at:])
    assert tracker.view().workers[hostname].online is False


def test_queue_comes_from_task_sent() -> None:
    """Every finished job is filed under the queue its task-sent event named."""
    tracker = make_tracker()
    feed(tracker, BATCHES)
    for queue in ("celery", "bench"):
        for status in ("completed", "failed"):
            for job in tracker.store.newest_first(queue, status):
                assert job.queue == MODEL.queue[job.id] == queue


def test_flaky_task_attempts_and_failures() -> None:
    """The flaky task ran 3 times; its job keeps 2 retry and 1 final failure tracebacks."""
    tracker = make_tracker()
    feed(tracker, BATCHES)
    uuid = the_uuid("tests.flaky_fail")
    failed = by_id(tracker.store.newest_first("celery", "failed"))
    job = failed[uuid]

    assert job.state == "failed"
    assert job.name == "tests.flaky_fail"
    assert job.attempts == MODEL.started[uuid] == 3
    assert job.failures is not None
    kinds = [e["type"] for e in EVENTS if e.get("uuid") == uuid and e["type"] in FINISHING]
    assert kinds == ["task-retried", "task-retried", "task-failed"]
    assert len(job.failures) == 3
    expected = [(clip(exc), clip(tb, MAX_TRACEBACK)) for exc, tb in MODEL.failures[uuid]]
    assert job.failure_texts() == expected
    for exception, traceback in job.failure_texts():
        assert exception == "ValueError('flaky boom')"
        assert traceback is not None and traceback.startswith("Traceback (most recent call last)")
        assert "ValueError: flaky boom" in traceback
    assert job.finished_at == MODEL.finished_at[uuid]
    assert job.sent_at == min(
        e["timestamp"] for e in EVENTS if e.get("uuid") == uuid and e["type"] == "task-sent"
    )

    # Each attempt's traceback was decoded from its own event, yet equal texts are
    # compressed once and share one packed copy.
    texts = {tb for _exc, tb in job.failure_texts()}
    assert len(texts) < len(job.failures)  # the retries failed the same way
    assert len({id(tb) for _exc, tb in job.failures}) == len(texts)

    plain = failed[the_uuid("tests.fail")]
    assert plain.attempts == 1
    assert plain.failures is not None and len(plain.failures) == 1
    assert plain.failures[0][0] == "ValueError('boom')"


def test_succeeded_job_details() -> None:
    """A completed job keeps its name, args, result, host and times from the events."""
    tracker = make_tracker()
    feed(tracker, BATCHES)
    uuid = the_uuid("tests.ingest")
    events = {e["type"]: e for e in EVENTS if e.get("uuid") == uuid}
    job = by_id(tracker.store.newest_first("bench", "completed"))[uuid]
    assert job.state == "succeeded"
    assert job.name == "tests.ingest"
    assert job.kwargs == clip(events["task-received"]["kwargs"])
    assert "src-42" in (job.kwargs or "")
    assert job.result == clip(events["task-succeeded"]["result"])
    assert job.hostname == events["task-succeeded"]["hostname"]
    assert job.sent_at == events["task-sent"]["timestamp"]
    assert job.received_at == events["task-received"]["timestamp"]
    assert job.started_at == events["task-started"]["timestamp"]
    assert job.finished_at == events["task-succeeded"]["timestamp"]
    assert job.attempts == 1
    assert job.failures is None


# -- retention -------------------------------------------------------------------------


@pytest.mark.parametrize(("completed", "failed", "copies"), [(5, 3, 6), (1, 1, 3), (4, 50, 5)])
def test_retention_keeps_exactly_the_newest(completed: int, failed: int, copies: int) -> None:
    """Past the limits, exactly the newest finished jobs per queue are kept, newest first."""
    tracker = make_tracker(completed=completed, failed=failed)
    stream: list[list[Event]] = []
    for index in range(copies):
        stream.extend(rewrite(BATCHES, index, shift=index * 10.0))
    feed(tracker, stream)
    model = Model.of(e for batch in stream for e in batch)

    for queue in ("celery", "bench"):
        for status, outcome, limit in (
            ("completed", "succeeded", completed),
            ("failed", "failed", failed),
        ):
            ids = model.finished_ids(queue, outcome)
            expected = list(reversed(ids))[:limit]
            kept = [job.id for job in tracker.store.newest_first(queue, status)]
            assert kept == expected, (queue, status)
    view = tracker.view()
    for queue in ("celery", "bench"):
        assert view.retained.get(queue, (0, 0)) == (
            min(completed, len(model.finished_ids(queue, "succeeded"))),
            min(failed, len(model.finished_ids(queue, "failed"))),
        )
    # Counters never forget: every copy is counted.
    assert nonzero(view.stats.outcomes) == model.outcomes()
    assert view.stats.outcomes[("celery", "tests.add", "succeeded")] == copies


def test_retention_zero_keeps_nothing_but_counts() -> None:
    """A zero limit keeps no job, yet outcomes are still counted."""
    tracker = make_tracker(completed=0, failed=0)
    feed(tracker, BATCHES)
    view = tracker.view()
    assert all(counts == (0, 0) for counts in view.retained.values())
    assert len(tracker.store) == 0
    assert nonzero(view.stats.outcomes) == MODEL.outcomes()


def test_retention_max_age_prunes_old_jobs() -> None:
    """With a maximum age, jobs that finished before now - max_age are forgotten."""
    now = MODEL.finished_at[the_uuid("tests.sleep")] + 0.2
    max_age = 0.25
    tracker = make_tracker(max_age=max_age, clock=lambda: now)
    feed(tracker, BATCHES)
    view = tracker.view()
    cutoff = now - max_age
    for queue in ("celery", "bench"):
        for status, outcome in (("completed", "succeeded"), ("failed", "failed")):
            expected = [
                u for u in reversed(MODEL.finished_ids(queue, outcome))
                if MODEL.finished_at[u] >= cutoff
            ]
            kept = [job.id for job in tracker.store.newest_first(queue, status)]
            assert kept == expected, (queue, status)
    # The cut-off falls inside the capture: some jobs went, some stayed.
    assert 0 < len(tracker.store) < len(MODEL.finished_at)
    assert sum(c + f for c, f in view.retained.values()) == len(tracker.store)


# -- bounded tracking ------------------------------------------------------------------


def _sent_and_started(count: int) -> tuple[list[list[Event]], list[str]]:
    """`count` tasks sent and started, made from the real task-sent/task-started events."""
    sent = next(e for e in EVENTS if e["type"] == "task-sent")
    started = next(e for e in EVENTS if e["type"] == "task-started" and e["uuid"] == sent["uuid"])
    stream: list[list[Event]] = []
    ids: list[str] = []
    for index in range(count):
        uuid = f"{sent['uuid']}#{index}"
        ids.append(uuid)
        stream.append([{**sent, "uuid": uuid, "timestamp": sent["timestamp"] + index}])
        stream.append([{**started, "uuid": uuid, "timestamp": started["timestamp"] + index}])
    return stream, ids


def test_max_tracked_jobs_evicts_oldest() -> None:
    """Past max_tracked_jobs, the oldest in-flight jobs are forgotten and counted."""
    limit, total = 3, 10
    tracker = make_tracker(max_tracked_jobs=limit)
    stream, ids = _sent_and_started(total)
    feed(tracker, stream)
    view = tracker.view()
    assert view.jobs_evicted == total - limit
    assert sorted(job.task_id for job in view.active) == sorted(ids[-limit:])


def test_finishing_an_untracked_job_evicts_nothing() -> None:
    """The end of a job that is not tracked must not push a running job out of the table.

    The finished job leaves the table at once; it never counts against the limit.
    """
    limit = 3
    tracker = make_tracker(max_tracked_jobs=limit)
    stream, ids = _sent_and_started(limit + 2)
    feed(tracker, stream)
    evicted_before = tracker.view().jobs_evicted
    running = sorted(job.task_id for job in tracker.view().active)
    assert running == sorted(ids[-limit:])

    succeeded = next(e for e in EVENTS if e["type"] == "task-succeeded")
    # ids[0] was evicted earlier and now ends; so does a job never seen at all.
    for uuid in (ids[0], "never-seen-before"):
        apply(tracker, [{**succeeded, "uuid": uuid, "timestamp": succeeded["timestamp"]}])

    view = tracker.view()
    assert sorted(job.task_id for job in view.active) == running
    assert view.jobs_evicted == evicted_before


def test_task_names_fold_into_other() -> None:
    """Beyond max_task_names distinct names, later names are labelled `other`."""
    limit = 2
    tracker = make_tracker(max_task_names=limit)
    feed(tracker, BATCHES)
    view = tracker.view()

    # A name takes a label slot when first seen: its task-sent creates its counters.
    first_seen: list[str] = []
    for event in EVENTS:
        if event["type"] == "task-sent" and event["name"] not in first_seen:
            first_seen.append(event["name"])
    kept = set(first_seen[:limit])

    def label(name: str) -> str:
        return name if name in kept else OTHER_TASK

    assert nonzero(view.stats.outcomes) == MODEL.outcomes(label)
    assert view.stats.folded_task_names == len(first_seen) - limit
    assert {task for _, task in view.stats.runtime} == kept | {OTHER_TASK}
    assert {task for _, task, _ in view.stats.outcomes} == kept | {OTHER_TASK}
    # Folding labels only: jobs keep their real names.
    names = {job.name for job in tracker.store.newest_first("celery", "failed")}
    assert names == {"tests.fail", "tests.flaky_fail"}


# -- heartbeat gap accounting ------------------------------------------------------------


def _heartbeat(processed: int, active: int, shift: float, **extra: Any) -> Event:
    template = next(e for e in EVENTS if e["type"] == "worker-heartbeat")
    return {
        **template,
        "processed": processed,
        "active": active,
        "timestamp": template["timestamp"] + shift,
        **extra,
    }


def test_no_loss_when_nothing_was_dropped() -> None:
    """The capture's own heartbeats agree with its task-started events."""
    heartbeats = [e for e in EVENTS if e["type"] == "worker-heartbeat"]
    assert heartbeats[-1]["processed"] == sum(MODEL.started.values())
    tracker = make_tracker()
    feed(tracker, BATCHES)
    assert tracker.view().events_lost == 0


@pytest.mark.parametrize("dropped", [1, 3, 5])
def test_dropped_task_started_events_are_counted_lost(dropped: int) -> None:
    """Dropping task-started events shows as events_lost once a heartbeat arrives."""
    offline_at = next(i for i, b in enumerate(BATCHES) if b[0]["type"] == "worker-offline")
    first_heartbeat = next(
        i for i, b in enumerate(BATCHES) if b[0]["type"] == "worker-heartbeat"
    )
    stream: list[list[Event]] = []
    to_drop = dropped
    for batch in BATCHES[:offline_at]:
        kept: list[Event] = []
        for event in batch:
            if event["type"] == "task-started" and to_drop > 0:
                to_drop -= 1
                continue
            kept.append(event)
        stream.append(kept)
    assert to_drop == 0

    tracker = make_tracker()
    feed(tracker, stream[:first_heartbeat])
    assert tracker.view().events_lost == 0  # nothing known before a heartbeat
    feed(tracker, stream[first_heartbeat:])
    assert tracker.view().events_lost == dropped

    # Later heartbeats say more tasks ran than were seen starting.
    processed = BATCHES[first_heartbeat][0]["processed"]
    apply(tracker, [_heartbeat(processed + 4, active=1, shift=10)])
    assert tracker.view().events_lost == dropped + 3  # one is still running (active=1)
    apply(tracker, [_heartbeat(processed + 4, active=0, shift=12)])
    assert tracker.view().events_lost == dropped + 4
    apply(tracker, [_heartbeat(processed + 4, active=0, shift=14)])
    assert tracker.view().events_lost == dropped + 4  # the same gap is counted once

    # A started event seen later closes nothing already reported, and adds nothing.
    started = next(e for e in EVENTS if e["type"] == "task-started")
    apply(tracker, [{**started, "uuid": "late", "timestamp": started["timestamp"] + 15}])
    apply(tracker, [_heartbeat(processed + 5, active=0, shift=16)])
    assert tracker.view().events_lost == dropped + 4


def test_worker_restart_resets_the_gap_baseline() -> None:
    """A new pid (worker restarted) or a smaller `processed` starts a new baseline."""
    tracker = make_tracker()
    feed(tracker, BATCHES[: next(
        i for i, b in enumerate(BATCHES) if b[0]["type"] == "worker-heartbeat"
    )])
    base = _heartbeat(100, active=0, shift=0, pid=999_999)
    apply(tracker, [base])
    assert tracker.view().events_lost == 0  # new pid: new baseline, no loss
    apply(tracker, [_heartbeat(102, active=0, shift=1, pid=999_999)])
    assert tracker.view().events_lost == 2
    apply(tracker, [_heartbeat(1, active=0, shift=2, pid=999_999)])
    apply(tracker, [_heartbeat(1, active=0, shift=3, pid=999_999)])
    assert tracker.view().events_lost == 2


# -- malformed events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "refused_at_the_boundary"),
    [
        ({"type": "task-sent"}, False),
        ({"type": "task-started", "uuid": "x", "timestamp": "noon"}, True),
        ({"type": "task-succeeded", "uuid": "x"}, False),
        ({"type": "worker-heartbeat"}, False),
        ({"type": ["task-sent"]}, True),
        ({"type": {"nested": "type"}}, True),
        ({"type": "task-started", "uuid": "x", "timestamp": 1, "hostname": ["x"]}, True),
        ({"type": "task-received", "uuid": "x", "timestamp": 1, "name": ["x"]}, True),
        ({"type": "task-sent", "uuid": "x", "timestamp": 1, "eta": "soon"}, False),
    ],
    ids=["no-uuid", "bad-timestamp", "no-timestamp", "no-hostname", "type-list", "type-dict",
         "hostname-list", "name-list", "bad-eta"],
)
def test_malformed_event_is_counted_and_the_batch_goes_on(
    event: Event, refused_at_the_boundary: bool
) -> None:
    """A malformed event is counted undecodable; the events after it still apply.

    Wrong types are refused by the typed decoder, before the tracker sees them; a
    well-typed event that lacks what its kind needs is refused by the tracker.
    """
    tracker = make_tracker()
    good = next(e for e in EVENTS if e["type"] == "task-sent")
    apply(tracker, [event, good], undecodable=2)
    view = tracker.view()
    assert view.events_undecodable == 3
    assert view.events_received == (1 if refused_at_the_boundary else 2)
    assert good["queue"] in view.queues_seen
    assert [job.task_id for job in view.active] == []


def test_unknown_event_types_are_received_but_ignored() -> None:
    """Events of other types count as received and change nothing else."""
    tracker = make_tracker()
    apply(tracker, [{"type": "task-custom", "uuid": "u"}, {"type": "something"}])
    view = tracker.view()
    assert view.events_received == 2
    assert view.events_undecodable == 0
    assert view.queues_seen == frozenset()


def test_a_task_sent_event_that_arrives_after_the_start_decides_the_queue() -> None:
    """task-sent is published on the client's connection, the start on the worker's.

    Under load the start can arrive first; the queue wait then waits for the task-sent
    (its queue and publish time), rather than a guess from another task of that name.
    """
    tracker = make_tracker()
    apply(tracker, [
        {"type": "task-sent", "uuid": "a", "name": "tests.add", "queue": "other",
         "timestamp": 100.0},
        {"type": "task-received", "uuid": "b", "name": "tests.add", "hostname": "w@h",
         "timestamp": 102.0},
        {"type": "task-started", "uuid": "b", "hostname": "w@h", "timestamp": 103.0},
        {"type": "task-sent", "uuid": "b", "name": "tests.add", "queue": "celery",
         "timestamp": 101.0},
    ])
    view = tracker.view()
    assert view.stats.queue_wait["celery"].count == 1
    assert view.stats.queue_wait["celery"].total == pytest.approx(2.0)  # 103 - 101
    assert "other" not in view.stats.queue_wait
    [running] = view.active
    assert (running.task_id, running.queue) == ("b", "celery")
    [job] = tracker.lookup(["b"]).values()
    assert job.state == "started"


def test_a_start_without_task_sent_events_is_recorded_at_once() -> None:
    """An app that sends no task-sent events: the wait counts from task-received."""
    tracker = make_tracker()
    apply(tracker, [
        {"type": "task-received", "uuid": "b", "name": "tests.add", "hostname": "w@h",
         "timestamp": 102.0},
        {"type": "task-started", "uuid": "b", "hostname": "w@h", "timestamp": 102.5},
    ])
    assert tracker.view().stats.queue_wait["unknown"].count == 1


# -- workers that die while their jobs run --------------------------------------------


def _running(tracker: TaskTracker, task_id: str, hostname: str = "w@h") -> None:
    apply(tracker, [
        {"type": "task-sent", "uuid": task_id, "name": "tests.sleep", "queue": "beta",
         "timestamp": 100.0},
        {"type": "task-received", "uuid": task_id, "name": "tests.sleep", "hostname": hostname,
         "timestamp": 101.0},
        {"type": "task-started", "uuid": task_id, "hostname": hostname, "timestamp": 102.0},
    ])


def test_a_dead_workers_running_jobs_are_lost_unless_their_message_is_in_the_broker() -> None:
    tracker = make_tracker()
    _running(tracker, "gone")
    _running(tracker, "acks-late")
    _running(tracker, "elsewhere", hostname="other@h")
    held = tracker.declare_lost("w@h", 200.0, in_broker={"acks-late"})
    assert held == {"gone", "acks-late"}
    view = tracker.view()
    assert [job.task_id for job in view.active] == ["elsewhere"]
    _completed, failed = view.retained_jobs["beta"]
    [lost] = failed
    assert (lost.id, lost.state, lost.finished_at) == ("gone", "failed", 200.0)
    assert lost.failure_texts() == [("WorkerLost('worker w@h stopped while the job ran')", None)]
    assert view.stats.outcomes[("beta", "tests.sleep", "lost")] == 1
    assert view.stats.outcomes[("beta", "tests.sleep", "failed")] == 0
    assert tracker.declare_lost("w@h", 300.0, in_broker=set()) == {"acks-late"}
    assert tracker.view().stats.outcomes[("beta", "tests.sleep", "lost")] == 1


def test_a_lost_job_whose_real_end_arrives_is_recorded_once_with_it() -> None:
    """A worker only cut off: its job succeeds after all; counted once, as lost, and recovered."""
    tracker = make_tracker()
    _running(tracker, "cut-off")
    tracker.declare_lost("w@h", 200.0, in_broker=set())
    tracker.revive(["cut-off"])  # its next inspect reply shows it running
    view = tracker.view()
    assert [job.task_id for job in view.active] == ["cut-off"]
    assert view.retained["beta"] == (0, 0)
    apply(tracker, [{"type": "task-succeeded", "uuid": "cut-off", "hostname": "w@h",
                     "result": "600", "runtime": 500.0, "timestamp": 602.0}])
    view = tracker.view()
    assert view.retained["beta"] == (1, 0)
    [done], _failed = view.retained_jobs["beta"]
    assert done.state == "succeeded" and done.failures == []
    assert view.stats.outcomes[("beta", "tests.sleep", "lost")] == 1
    assert view.stats.outcomes[("beta", "tests.sleep", "succeeded")] == 0
    assert view.stats.recovered[("beta", "tests.sleep")] == 1


def test_a_lost_job_failing_for_real_replaces_the_lost_record() -> None:
    tracker = make_tracker()
    _running(tracker, "late-failure")
    tracker.declare_lost("w@h", 200.0, in_broker=set())
    apply(tracker, [{"type": "task-failed", "uuid": "late-failure", "hostname": "w@h",
                     "exception": "ValueError('boom')", "traceback": "tb", "timestamp": 300.0}])
    _completed, failed = tracker.view().retained_jobs["beta"]
    [job] = failed
    assert job.failure_texts() == [("ValueError('boom')", "tb")]
    assert job.finished_at == 300.0
