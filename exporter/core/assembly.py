"""How a Snapshot's queues, workers and placements are built from one refresh's readings.

Statuses are disjoint: a task id found in several places counts once, in the first
of active, delayed, prefetched (waiting) that holds it. docs/statuses.md says what
each status means on Celery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.core.heads import HeadAge
from exporter.model.readings import BrokerReading, WorkersReading
from exporter.model.snapshot import QueueState, TaskPlacement, WorkerState
from exporter.model.tracking import TrackerView
from exporter.protocol.cardinality import QueueAdmission
from exporter.protocol.replies import WorkerReply, WorkerTask
from exporter.protocol.routing import resolve_queue


@dataclass(frozen=True)
class SnapshotInputs:
    """What the refresher gathered for one snapshot."""

    broker: BrokerReading | None
    workers: WorkersReading | None
    workers_healthy: bool
    #: Each worker's queues per its last complete reply.
    known_worker_queues: Mapping[str, tuple[str, ...]]
    known_worker_replied_at: Mapping[str, float]
    tracker: TrackerView
    configured_queues: Iterable[str]
    worker_timeout: float
    now: float
    forget_after: float = 3600.0
    admission: QueueAdmission | None = None
    #: Ids of messages in the unacked hash held by workers declared down: they wait
    #: there until the visibility timeout puts them back in their queue's list.
    stranded: frozenset[str] = frozenset()
    #: The age of each queue's next job in its lists (core.heads).
    head_ages: Mapping[str, HeadAge] = field(default_factory=dict)
    #: Each worker's pool size per the last reply that gave it (`stats`).
    known_worker_concurrency: Mapping[str, int] = field(default_factory=dict)


def live_workers(inputs: SnapshotInputs) -> dict[str, WorkerState]:
    """Every known worker, up if it answered this round or heartbeats recently."""
    replies: Mapping[str, WorkerReply] = inputs.workers.replies if inputs.workers else {}
    seen = inputs.tracker.workers
    states: dict[str, WorkerState] = {}
    for hostname in sorted(set(replies) | set(seen) | set(inputs.known_worker_queues)):
        reply = replies.get(hostname)
        heartbeat = seen.get(hostname)
        heartbeat_fresh = bool(
            heartbeat
            and heartbeat.online
            and inputs.now - heartbeat.last_seen <= inputs.worker_timeout
        )
        went_offline = bool(heartbeat and not heartbeat.online)
        if reply is not None:
            up = not went_offline or heartbeat_fresh
        elif not inputs.workers_healthy:
            # Inspection is failing: keep what we knew unless the worker said goodbye.
            up = not went_offline
        else:
            up = heartbeat_fresh
        reply_is_current = reply is not None and inputs.workers_healthy
        if went_offline and not reply_is_current and not heartbeat_fresh:
            continue  # said goodbye (a planned stop): not reported as down
        last_seen = inputs.now if reply else max(
            heartbeat.last_seen if heartbeat else 0.0,
            inputs.known_worker_replied_at.get(hostname, 0.0),
        ) or None
        if not up and (last_seen is None or inputs.now - last_seen > inputs.forget_after):
            continue
        # A reply missing some answers (one came after the deadline) is no news about
        # what it did not answer: queues and pool size are then the last ones known.
        known_queues = inputs.known_worker_queues.get(hostname)
        if reply is not None and (reply.complete or known_queues is None):
            queues = reply.queues
        else:
            queues = known_queues or ()
        concurrency = reply.concurrency if reply is not None else None
        if concurrency is None:
            concurrency = inputs.known_worker_concurrency.get(hostname)
        states[hostname] = WorkerState(
            hostname=hostname,
            up=up,
            queues=queues,
            active=len(reply.active) if reply else (heartbeat.active or 0 if heartbeat else 0),
            concurrency=concurrency,
            last_seen=last_seen,
        )
    return states


def place_tasks(inputs: SnapshotInputs) -> list[TaskPlacement]:
    """Assign every in-flight task id to exactly one of active, delayed and prefetched."""
    bindings = inputs.broker.bound_queues if inputs.broker else {}
    # Ended per the events, though a reply taken a moment earlier may still hold it.
    finished = inputs.tracker.recently_finished
    placed: dict[str, TaskPlacement] = {}

    def place(placement: TaskPlacement) -> None:
        if placement.task_id not in finished:
            placed.setdefault(placement.task_id, placement)

    def queue_of(task: WorkerTask) -> str:
        return resolve_queue(task.exchange, task.routing_key, bindings)

    replies = inputs.workers.replies.values() if inputs.workers else ()
    for reply in replies:
        for task in reply.active:
            place(TaskPlacement(task.task_id, task.name, queue_of(task), "active",
                                started_at=task.started_at, hostname=reply.hostname))
    for job in inputs.tracker.active:
        if job.queue is not None:
            place(TaskPlacement(job.task_id, job.name, job.queue, "active",
                                started_at=job.started_at, hostname=job.hostname))
    now = inputs.now
    for reply in replies:
        for task in reply.scheduled:
            if task.eta is not None and task.eta > now:
                place(TaskPlacement(task.task_id, task.name, queue_of(task), "delayed",
                                    eta=task.eta, hostname=reply.hostname))
    unacked = inputs.broker.unacked if inputs.broker else ()
    for entry in unacked:  # a dead worker's, ETA or not: waiting to be put back
        if entry.task_id in inputs.stranded:
            place(TaskPlacement(entry.task_id, entry.name, entry.queue, "prefetched",
                                eta=entry.eta))
    for entry in unacked:
        if entry.eta is not None and entry.eta > now:
            place(TaskPlacement(entry.task_id, entry.name, entry.queue, "delayed", eta=entry.eta))
    for reply in replies:
        for task in reply.reserved:
            place(TaskPlacement(task.task_id, task.name, queue_of(task), "prefetched",
                                hostname=reply.hostname))
    for entry in unacked:
        place(TaskPlacement(entry.task_id, entry.name, entry.queue, "prefetched", eta=entry.eta))
    return list(placed.values())


def build_queue_states(
    inputs: SnapshotInputs,
    workers: Mapping[str, WorkerState],
    placements: Iterable[TaskPlacement],
) -> dict[str, QueueState]:
    """Counts per queue and status, consumers and prefetched, for every known queue."""
    broker = inputs.broker
    lists = broker.waiting_in_lists if broker else {}
    names = set(inputs.configured_queues) | set(lists) | inputs.tracker.queues_seen
    names |= set(inputs.tracker.retained)
    if broker:
        names |= broker.queues
    consumers: dict[str, int] = {}
    capacity: dict[str, int] = {}
    for worker in workers.values():
        names.update(worker.queues)
        if worker.up:
            for queue in worker.queues:
                consumers[queue] = consumers.get(queue, 0) + 1
                capacity[queue] = capacity.get(queue, 0) + (worker.concurrency or 0)
    by_queue: dict[str, dict[str, int]] = {}
    running_since: dict[str, float] = {}
    for placement in placements:
        names.add(placement.queue)
        tally = by_queue.setdefault(placement.queue, {})
        tally[placement.status] = tally.get(placement.status, 0) + 1
        if placement.status == "active" and placement.started_at is not None:
            earliest = running_since.get(placement.queue)
            if earliest is None or placement.started_at < earliest:
                running_since[placement.queue] = placement.started_at
    if inputs.admission is not None:
        names = inputs.admission.admitted(names)  # past --max-queues: not reported

    states: dict[str, QueueState] = {}
    for name in sorted(names):
        tally = by_queue.get(name, {})
        in_lists = lists.get(name, 0)
        prefetched = tally.get("prefetched", 0)
        consumed = consumers.get(name, 0) > 0
        completed, failed = inputs.tracker.retained.get(name, (0, 0))
        counts = {
            "waiting": prefetched + (in_lists if consumed else 0),
            "active": tally.get("active", 0),
            "delayed": tally.get("delayed", 0),
            "paused": 0 if consumed else in_lists,
            "completed": completed,
            "failed": failed,
        }
        head = inputs.head_ages.get(name) if in_lists else None
        states[name] = QueueState(
            name, counts, consumers.get(name, 0), prefetched, capacity.get(name, 0),
            oldest_age=head.seconds if head else 0.0,
            oldest_age_lower_bound=head.lower_bound if head else False,
            oldest_active_age=(
                max(0.0, inputs.now - running_since[name]) if name in running_since else 0.0
            ),
        )
    return states
