"""Snapshot assembly: live workers, one status per task id, and the counts of every queue.

docs/statuses.md is the contract: statuses are disjoint (active, then delayed, then
prefetched), list messages are waiting when a live worker consumes the queue and
paused when none does, prefetched jobs stay waiting, and a dead worker's unacked
messages wait to be put back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from kombu.entity import Exchange, Queue

from exporter.core.assembly import SnapshotInputs, build_queue_states, live_workers, place_tasks
from exporter.model.readings import BrokerReading, UnackedTask, WorkersReading
from exporter.model.snapshot import STATUSES, QueueState, TaskPlacement, WorkerState
from exporter.model.tracking import ActiveJob, TrackerView, WorkerSeen
from exporter.protocol.cardinality import QueueAdmission
from exporter.protocol.replies import WorkerTask, assemble_replies
from tests.unit.builders import (
    NOW,
    InspectedWorker,
    broker_reading,
    inspect_bodies,
    producer_app,
    publish,
    reply,
    request_of,
    start,
    task,
    tracker_view,
    unacked,
    workers_reading,
)

WORKER_TIMEOUT = 30.0
FUTURE = NOW + 600.0
PAST = NOW - 600.0


def inputs(
    *,
    broker: BrokerReading | None = None,
    workers: WorkersReading | None = None,
    workers_healthy: bool = True,
    tracker: TrackerView | None = None,
    configured: Sequence[str] = (),
    **changes: Any,
) -> SnapshotInputs:
    """One refresh's readings; an empty broker and a healthy, empty inspect round by default."""
    made = SnapshotInputs(
        broker=broker if broker is not None else broker_reading(),
        workers=workers if workers is not None else workers_reading(),
        workers_healthy=workers_healthy,
        known_worker_queues={},
        known_worker_replied_at={},
        tracker=tracker if tracker is not None else tracker_view(),
        configured_queues=configured,
        worker_timeout=WORKER_TIMEOUT,
        now=NOW,
    )
    return dataclasses.replace(made, **changes)


def snapshot(made: SnapshotInputs) -> tuple[dict[str, WorkerState], list[TaskPlacement],
                                            dict[str, QueueState]]:
    """Workers, placements and queue states, in the refresher's order."""
    workers = live_workers(made)
    placements = place_tasks(made)
    return workers, placements, build_queue_states(made, workers, placements)


def statuses(placements: Sequence[TaskPlacement]) -> dict[str, str]:
    return {p.task_id: p.status for p in placements}


def seen(hostname: str, last_seen: float, *, online: bool = True,
         active: int | None = None) -> WorkerSeen:
    return WorkerSeen(hostname, last_seen, online, active, None)


def counts(waiting: int = 0, active: int = 0, delayed: int = 0, paused: int = 0,
           completed: int = 0, failed: int = 0) -> dict[str, int]:
    return {"waiting": waiting, "active": active, "delayed": delayed, "paused": paused,
            "completed": completed, "failed": failed}


# -- one task id, one status ----------------------------------------------------------

#: Where one task id "t" is found (inspect active/scheduled/reserved, unacked hash,
#: events), and the single status it gets.
PLACES: list[tuple[str, set[str], str]] = [
    ("everywhere", {"active", "scheduled", "reserved", "unacked-eta", "events"}, "active"),
    ("running per the events only", {"events"}, "active"),
    ("scheduled and unacked", {"scheduled", "reserved", "unacked-eta"}, "delayed"),
    ("unacked with a future eta only", {"unacked-eta"}, "delayed"),
    ("reserved and unacked", {"reserved", "unacked"}, "prefetched"),
    ("unacked without eta only", {"unacked"}, "prefetched"),
    ("unacked with a past eta", {"unacked-past-eta"}, "prefetched"),
]


@pytest.mark.parametrize(("where", "status"), [(p[1], p[2]) for p in PLACES],
                         ids=[p[0] for p in PLACES])
def test_a_task_id_counts_once_in_the_first_status_that_holds_it(
    where: set[str], status: str
) -> None:
    held = reply(
        "celery@a", ("emails",),
        active=[task("t", "emails", started_at=NOW - 5)] if "active" in where else [],
        scheduled=[task("t", "emails", eta=FUTURE)] if "scheduled" in where else [],
        reserved=[task("t", "emails")] if "reserved" in where else [],
    )
    entries = [unacked("t", "emails", FUTURE)] if "unacked-eta" in where else []
    entries += [unacked("t", "emails")] if "unacked" in where else []
    entries += [unacked("t", "emails", PAST)] if "unacked-past-eta" in where else []
    running = (ActiveJob("t", "app.send", "emails", "celery@a", NOW - 5),)
    made = inputs(
        broker=broker_reading(unacked=entries),
        workers=workers_reading(held),
        tracker=tracker_view(active=running if "events" in where else ()),
    )
    _workers, placements, queues = snapshot(made)

    assert statuses(placements) == {"t": status}
    shown = {"prefetched": "waiting"}.get(status, status)
    assert queues["emails"].counts == counts(**{shown: 1})
    assert queues["emails"].prefetched == (status == "prefetched")


def test_statuses_are_disjoint_and_add_up_to_the_in_flight_ids() -> None:
    """Six ids spread over overlapping sources: each counts once, in its first status."""
    held = reply(
        "celery@a", ("emails",),
        active=[task("run-1", "emails", started_at=NOW - 3)],
        scheduled=[task("eta-1", "emails", eta=FUTURE), task("run-1", "emails", eta=FUTURE)],
        reserved=[task("pre-1", "emails"), task("eta-1", "emails")],
    )
    entries = [
        unacked("run-1", "emails"), unacked("eta-1", "emails", FUTURE),
        unacked("eta-2", "emails", FUTURE), unacked("pre-1", "emails"),
        unacked("pre-2", "emails"),
    ]
    events = (ActiveJob("run-2", "app.send", "emails", "celery@a", NOW - 1),
              ActiveJob("run-1", "app.send", "emails", "celery@a", NOW - 3))
    made = inputs(broker=broker_reading(lists={"emails": 4}, unacked=entries),
                  workers=workers_reading(held), tracker=tracker_view(active=events))
    _workers, placements, queues = snapshot(made)

    assert statuses(placements) == {
        "run-1": "active", "run-2": "active", "eta-1": "delayed", "eta-2": "delayed",
        "pre-1": "prefetched", "pre-2": "prefetched",
    }
    assert queues["emails"].counts == counts(waiting=2 + 4, active=2, delayed=2)
    assert queues["emails"].prefetched == 2


def test_a_placement_keeps_what_its_first_source_says() -> None:
    """The active placement comes from the reply: its start, its worker."""
    held = reply("celery@a", ("emails",), active=[task("t", "emails", started_at=NOW - 7)])
    events = (ActiveJob("t", "app.send", "emails", "celery@b", NOW - 1),)
    made = inputs(workers=workers_reading(held), tracker=tracker_view(active=events))
    [placement] = place_tasks(made)
    assert (placement.started_at, placement.hostname) == (NOW - 7, "celery@a")


def test_ids_the_events_say_ended_are_not_placed_even_when_a_reply_holds_them() -> None:
    held = reply("celery@a", ("emails",), active=[task("done", "emails", started_at=NOW - 2)],
                 reserved=[task("next", "emails")])
    made = inputs(
        broker=broker_reading(unacked=[unacked("done", "emails")]),
        workers=workers_reading(held),
        tracker=tracker_view(recently_finished=frozenset({"done"})),
    )
    _workers, placements, queues = snapshot(made)
    assert statuses(placements) == {"next": "prefetched"}
    assert queues["emails"].counts == counts(waiting=1)


def test_a_job_running_per_the_events_needs_a_queue_to_be_placed() -> None:
    """Events other than task-sent name no queue: the reply that holds the job does."""
    events = (ActiveJob("t", "app.send", None, "celery@a", NOW - 2),)
    alone = inputs(tracker=tracker_view(active=events))
    assert place_tasks(alone) == []

    held = reply("celery@a", ("emails",), active=[task("t", "emails", started_at=NOW - 2)])
    [placement] = place_tasks(dataclasses.replace(alone, workers=workers_reading(held)))
    assert (placement.queue, placement.status) == ("emails", "active")


def test_an_eta_that_passed_is_waiting_not_delayed() -> None:
    """The worker's timer still lists the job, but its ETA is over: it waits for a slot."""
    held = reply("celery@a", ("emails",), scheduled=[task("t", "emails", eta=NOW - 1)])
    made = inputs(broker=broker_reading(unacked=[unacked("t", "emails", NOW - 1)]),
                  workers=workers_reading(held))
    _workers, placements, queues = snapshot(made)
    assert statuses(placements) == {"t": "prefetched"}
    assert queues["emails"].counts == counts(waiting=1)


def test_a_dead_worker_s_unacked_messages_wait_even_with_a_future_eta() -> None:
    """Stranded messages wait for the visibility timeout: neither delayed nor active."""
    entries = [unacked("eta", "emails", FUTURE), unacked("ran", "emails"),
               unacked("other", "emails", FUTURE)]
    made = inputs(broker=broker_reading(unacked=entries), stranded=frozenset({"eta", "ran"}))
    _workers, placements, queues = snapshot(made)
    assert statuses(placements) == {"eta": "prefetched", "ran": "prefetched",
                                    "other": "delayed"}
    assert queues["emails"].counts == counts(waiting=2, delayed=1)


def test_a_live_worker_s_reply_wins_over_a_stranded_entry() -> None:
    """The job runs again on a worker that is up: it is active, not waiting."""
    held = reply("celery@b", ("emails",), active=[task("t", "emails", started_at=NOW - 1)])
    made = inputs(broker=broker_reading(unacked=[unacked("t", "emails", FUTURE)]),
                  workers=workers_reading(held), stranded=frozenset({"t"}))
    assert statuses(place_tasks(made)) == {"t": "active"}


def test_reply_tasks_are_placed_in_the_queue_their_binding_names() -> None:
    """A task published on exchange `mail` with routing key `mail.send` is in `emails`."""
    routed = WorkerTask("t", "app.send", "mail", "mail.send", started_at=NOW - 1)
    held = reply("celery@a", ("emails",), active=[routed])
    made = inputs(broker=broker_reading(bound={("mail", "mail.send"): ("emails",)}),
                  workers=workers_reading(held))
    _workers, placements, queues = snapshot(made)
    assert [(p.queue, p.status) for p in placements] == [("emails", "active")]
    assert "mail.send" not in queues
    assert queues["emails"].counts["active"] == 1


def test_celery_s_own_replies_place_each_job_once() -> None:
    """Real Celery inspect answers for a worker holding a job of each kind."""
    app = producer_app()
    try:
        running = publish(app, args=(1,), queue="emails")
        later = publish(app, args=(2,), queue="emails", countdown=3600)
        next_up = publish(app, args=(3,), queue="emails")
        worker = InspectedWorker(
            "celery@a",
            queues=[Queue("emails", Exchange("emails"), routing_key="emails")],  # type: ignore[no-untyped-call]
            active=[start(request_of(app, running.raw, "celery@a"), NOW - 4)],
            scheduled=[request_of(app, later.raw, "celery@a")],
            reserved=[request_of(app, next_up.raw, "celery@a")],
        )
        replies, malformed = assemble_replies(inspect_bodies(app, [worker]))
    finally:
        app.close()
    assert malformed == 0
    made = inputs(broker=broker_reading(lists={"emails": 2}),
                  workers=workers_reading(*replies.values()))
    workers, placements, queues = snapshot(made)
    assert sorted(p.status for p in placements) == ["active", "delayed", "prefetched"]
    assert queues["emails"].counts == counts(waiting=1 + 2, active=1, delayed=1)
    assert (queues["emails"].consumers, workers["celery@a"].concurrency) == (1, 4)


# -- waiting, paused, consumers -------------------------------------------------------


def test_list_messages_wait_in_a_consumed_queue_and_are_paused_in_another() -> None:
    made = inputs(
        broker=broker_reading(lists={"consumed": 3, "orphan": 5}),
        workers=workers_reading(reply("celery@a", ("consumed",)), reply("celery@b", ("consumed",))),
    )
    _workers, _placements, queues = snapshot(made)
    assert queues["consumed"].counts == counts(waiting=3)
    assert queues["consumed"].consumers == 2
    assert queues["orphan"].counts == counts(paused=5)
    assert queues["orphan"].consumers == 0


def test_prefetched_jobs_stay_waiting_in_a_paused_queue() -> None:
    """The worker that holds them runs them, even after its consumer was cancelled."""
    held = reply("celery@a", ("elsewhere",), reserved=[task("t", "cancelled")])
    made = inputs(broker=broker_reading(lists={"cancelled": 4}), workers=workers_reading(held))
    _workers, _placements, queues = snapshot(made)
    assert queues["cancelled"].counts == counts(waiting=1, paused=4)
    assert queues["cancelled"].prefetched == 1


def test_a_worker_that_is_down_consumes_nothing_but_its_queues_stay_known() -> None:
    made = inputs(
        broker=broker_reading(lists={"solo": 3}),
        tracker=tracker_view(workers={"celery@dead": seen("celery@dead", NOW - 60)}),
        known_worker_queues={"celery@dead": ("solo", "rare")},
    )
    workers, _placements, queues = snapshot(made)
    assert workers["celery@dead"].up is False
    assert queues["solo"].counts == counts(paused=3)
    assert queues["rare"].counts == counts()
    assert queues["solo"].consumers == queues["rare"].consumers == 0


def test_every_known_queue_reports_all_six_statuses() -> None:
    """Each source of queue names, and zero for every empty status."""
    made = inputs(
        configured=("configured",),
        broker=broker_reading(lists={"listed": 0}, queues={"bound"},
                              unacked=[unacked("u", "unacked-in")]),
        workers=workers_reading(reply("celery@a", ("consumed",))),
        tracker=tracker_view(
            queues_seen=frozenset({"sent-to"}),
            retained={"finished": (2, 1)},
            active=(ActiveJob("r", "app.send", "running-in", "celery@a", NOW),),
        ),
    )
    _workers, _placements, queues = snapshot(made)
    assert set(queues) == {"configured", "listed", "bound", "unacked-in", "consumed",
                           "sent-to", "finished", "running-in"}
    for state in queues.values():
        assert tuple(state.counts) == STATUSES
        assert all(value >= 0 for value in state.counts.values())
    assert queues["configured"].counts == counts()
    assert queues["finished"].counts == counts(completed=2, failed=1)
    assert queues["running-in"].counts == counts(active=1)


def test_queues_past_max_queues_are_not_reported() -> None:
    """Configured queues always, the others first come, first served (--max-queues)."""
    admission = QueueAdmission(2, ("configured",))
    assert admission.admit("early")
    made = inputs(
        configured=("configured",),
        broker=broker_reading(lists={"early": 1, "late": 7}),
        workers=workers_reading(reply("celery@a", ("early", "late"),
                                      active=[task("t", "late", started_at=NOW)])),
        admission=admission,
    )
    _workers, _placements, queues = snapshot(made)
    assert set(queues) == {"configured", "early"}
    assert admission.refused == 1


# -- live workers ---------------------------------------------------------------------


def test_a_worker_that_answered_is_up_with_what_it_said() -> None:
    held = reply("celery@a", ("emails", "reports"), concurrency=8,
                 active=[task("1", "emails", started_at=NOW), task("2", "reports", started_at=NOW)])
    stale = seen("celery@a", NOW - 600, active=5)  # the reply is newer than any heartbeat
    made = inputs(workers=workers_reading(held),
                  tracker=tracker_view(workers={"celery@a": stale}))
    assert live_workers(made) == {
        "celery@a": WorkerState("celery@a", True, ("emails", "reports"), 2, 8, NOW),
    }


def test_a_reply_missing_answers_keeps_the_queues_and_pool_size_last_known() -> None:
    """`stats` or `active_queues` came after the deadline: the worker did not stop
    consuming nor lose its pool, so capacity and paused/waiting do not blink."""
    late = reply("celery@a", (), concurrency=None, complete=False,
                 active=[task("1", "emails", started_at=NOW)])
    made = inputs(workers=workers_reading(late),
                  known_worker_queues={"celery@a": ("emails",)},
                  known_worker_concurrency={"celery@a": 8})
    workers, _, queues = snapshot(made)
    assert workers["celery@a"] == WorkerState("celery@a", True, ("emails",), 1, 8, NOW)
    assert queues["emails"].capacity == 8
    first = inputs(workers=workers_reading(late))  # nothing known yet: what it said
    assert live_workers(first)["celery@a"] == WorkerState("celery@a", True, (), 1, None, NOW)
    answered = reply("celery@a", ("reports",), concurrency=2)  # a complete reply wins
    made = dataclasses.replace(made, workers=workers_reading(answered))
    assert live_workers(made)["celery@a"] == WorkerState("celery@a", True, ("reports",), 0, 2, NOW)
    silent = inputs(  # no reply at all this round, alive per its heartbeat
        tracker=tracker_view(workers={"celery@a": seen("celery@a", NOW - 10, active=3)}),
        known_worker_queues={"celery@a": ("emails",)}, known_worker_concurrency={"celery@a": 8},
    )
    assert live_workers(silent)["celery@a"].concurrency == 8


def test_a_recent_heartbeat_keeps_a_silent_worker_up() -> None:
    """No reply this round (it was busy), but a heartbeat within --worker-timeout."""
    made = inputs(
        tracker=tracker_view(workers={"celery@a": seen("celery@a", NOW - 10, active=3)}),
        known_worker_queues={"celery@a": ("emails",)},
    )
    assert live_workers(made)["celery@a"] == WorkerState(
        "celery@a", True, ("emails",), 3, None, NOW - 10
    )


def test_a_worker_silent_past_the_timeout_is_down_since_it_was_last_heard() -> None:
    made = inputs(
        tracker=tracker_view(workers={"celery@a": seen("celery@a", NOW - 100)}),
        known_worker_queues={"celery@a": ("emails",)},
        known_worker_replied_at={"celery@a": NOW - 40},
    )
    worker = live_workers(made)["celery@a"]
    assert (worker.up, worker.last_seen, worker.queues) == (False, NOW - 40, ("emails",))


def test_a_worker_down_longer_than_forget_after_is_no_longer_reported() -> None:
    made = inputs(
        tracker=tracker_view(workers={"celery@gone": seen("celery@gone", NOW - 7200),
                                      "celery@recent": seen("celery@recent", NOW - 120)}),
        forget_after=3600.0,
    )
    assert set(live_workers(made)) == {"celery@recent"}


def test_a_worker_that_said_goodbye_is_not_reported() -> None:
    """worker-offline is a planned stop: not a dead worker, and no longer a consumer."""
    made = inputs(
        broker=broker_reading(lists={"emails": 2}),
        tracker=tracker_view(workers={"celery@a": seen("celery@a", NOW - 1, online=False)}),
        known_worker_queues={"celery@a": ("emails",)},
    )
    workers, _placements, queues = snapshot(made)
    assert workers == {}
    assert queues["emails"].counts == counts(paused=2)


def test_failing_inspection_keeps_the_consumers_it_knew() -> None:
    """A broken inspect round does not flip every queue to paused."""
    made = dataclasses.replace(
        inputs(
            broker=broker_reading(lists={"emails": 2}),
            workers_healthy=False,
            known_worker_queues={"celery@a": ("emails",)},
            known_worker_replied_at={"celery@a": NOW - 300},
        ),
        workers=None,
    )
    workers, _placements, queues = snapshot(made)
    assert workers["celery@a"].up
    assert queues["emails"].counts == counts(waiting=2)


def test_failing_inspection_still_drops_a_worker_that_said_goodbye() -> None:
    made = dataclasses.replace(
        inputs(
            workers_healthy=False,
            tracker=tracker_view(workers={"celery@a": seen("celery@a", NOW - 1, online=False)}),
            known_worker_queues={"celery@a": ("emails",)},
        ),
        workers=None,
    )
    assert live_workers(made) == {}


def test_a_goodbye_wins_over_the_last_good_reading_while_inspection_fails() -> None:
    last_good = workers_reading(reply("celery@a", ("emails",)), read_at=NOW - 60)
    made = inputs(
        workers=last_good,
        workers_healthy=False,
        tracker=tracker_view(workers={"celery@a": seen("celery@a", NOW - 1, online=False)}),
        known_worker_queues={"celery@a": ("emails",)},
    )
    assert live_workers(made) == {}


def test_no_broker_reading_yet_still_reports_the_configured_queues() -> None:
    made = dataclasses.replace(inputs(configured=("emails",)), broker=None)
    _workers, placements, queues = snapshot(made)
    assert placements == []
    assert queues == {"emails": QueueState("emails", counts(), 0, 0)}


def test_unacked_entries_are_kept_apart_from_a_reply_for_another_id() -> None:
    """A reply's id and an unacked entry's id differ: both are counted."""
    held = reply("celery@a", ("emails",), reserved=[task("a", "emails")])
    made = inputs(broker=broker_reading(unacked=[unacked("b", "emails")]),
                  workers=workers_reading(held))
    assert statuses(place_tasks(made)) == {"a": "prefetched", "b": "prefetched"}


def test_unacked_task_fields_reach_the_placement() -> None:
    entry = UnackedTask("tag", "t", "app.build", "reports", FUTURE)
    [placement] = place_tasks(inputs(broker=broker_reading(unacked=[entry])))
    assert placement == TaskPlacement("t", "app.build", "reports", "delayed", eta=FUTURE)


def test_worker_reply_without_a_reading_of_the_broker() -> None:
    """Bindings are unknown without a broker read: the routing key names the queue."""
    held = reply("celery@a", ("emails",), reserved=[WorkerTask("t", None, "mail", "mail.send")])
    made = dataclasses.replace(inputs(workers=workers_reading(held)), broker=None)
    [placement] = place_tasks(made)
    assert placement.queue == "mail.send"


def test_replies_are_independent_of_one_another() -> None:
    """Two workers hold different jobs of one queue: both count, consumers add up."""
    made = inputs(workers=workers_reading(
        reply("celery@a", ("emails",), active=[task("1", "emails", started_at=NOW)]),
        reply("celery@b", ("emails",), active=[task("2", "emails", started_at=NOW)]),
    ))
    workers, _placements, queues = snapshot(made)
    assert queues["emails"].counts == counts(active=2)
    assert queues["emails"].consumers == 2
    assert [w.active for w in workers.values()] == [1, 1]


def test_capacity_sums_the_pool_sizes_of_live_consumers() -> None:
    """Two workers on `emails` (-c 2, -c 3), one on `reports` whose size is unknown."""
    made = inputs(
        workers=workers_reading(
            reply("celery@a", ("emails",), concurrency=2),
            reply("celery@b", ("emails", "reports"), concurrency=3),
            reply("celery@c", ("reports",), concurrency=None),
        ),
        configured=("idle",),
    )
    workers, _placements, queues = snapshot(made)
    assert {h: w.concurrency for h, w in workers.items()} == {
        "celery@a": 2, "celery@b": 3, "celery@c": None,
    }
    assert {name: q.capacity for name, q in queues.items()} == {
        "emails": 5, "reports": 3, "idle": 0,
    }


def test_a_worker_that_is_down_adds_no_capacity() -> None:
    """Known to consume `emails`, silent for ten minutes: down, so no capacity."""
    made = inputs(workers=workers_reading(), known_worker_queues={"celery@a": ("emails",)},
                  known_worker_replied_at={"celery@a": PAST})
    _workers, _placements, queues = snapshot(made)
    assert queues["emails"].capacity == 0
    assert queues["emails"].consumers == 0


def test_the_oldest_active_age_is_the_longest_running_job_per_queue() -> None:
    made = inputs(
        workers=workers_reading(
            reply("celery@a", ("emails",), active=(
                task("t1", "emails", started_at=NOW - 40),
                task("t2", "emails", started_at=NOW - 5),
            )),
            reply("celery@b", ("reports",)),
        ),
    )
    _workers, _placements, queues = snapshot(made)
    assert queues["emails"].oldest_active_age == pytest.approx(40.0)
    assert queues["reports"].oldest_active_age == 0.0
