"""Celery's own formats made in-process for the unit tests, and model values with defaults.

No broker and no worker run here:

- `publish` returns a task message exactly as a producer writes it into a queue's
  Redis list. A real Celery app publishes on kombu's in-memory transport, which
  prepares the message with the same virtual channel code as the Redis transport
  (base64 body, `delivery_info`, `delivery_tag`); kombu's Redis `_put` then stores
  `dumps(message)`, which is what `publish` returns. kombu's own routing decides
  the queue it lands in.
- `inspect_bodies` returns the bodies of the five inspect commands as the mailbox
  delivers them: Celery's own remote-control handlers (`celery.worker.control`) run
  over real `Request`s built from published messages, and each answer goes through
  the mailbox's JSON serializer.
- `tracker_view`, `broker_reading`, `reply` and the like fill in the model types
  with defaults, so a test states only what it is about.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.concurrency.thread import TaskPool
from celery.utils.collections import AttributeDict
from celery.worker import state as worker_state
from celery.worker.control import Panel
from celery.worker.request import Request
from celery.worker.worker import WorkController
from kombu import serialization
from kombu.asynchronous.timer import Timer
from kombu.transport import memory
from kombu.utils import json as kombu_json

from exporter.model.readings import BrokerReading, UnackedTask, WorkersReading
from exporter.model.stats import TaskStatsData
from exporter.model.tracking import TrackerView
from exporter.protocol.replies import COMMANDS, WorkerReply, WorkerTask

#: A fixed "now" for the model values (seconds since the epoch).
NOW = 1_700_000_000.0
#: The task names the producer app registers.
TASK_NAMES = ("app.send", "app.build")


# -- messages, as a producer writes them ------------------------------------------------


def _send(*args: Any, **kwargs: Any) -> None:
    """The body of every test task (never run: the tests only publish)."""


def producer_app(*, protocol: int = 2, queues: Sequence[Any] = ()) -> Celery:
    """A Celery app publishing on kombu's in-memory transport (no broker, no worker).

    `queues` are kombu Queues for `task_queues`, declared and bound as a worker
    consuming them would, for messages routed through exchanges of their own.
    """
    app = Celery("producer", broker="memory://", set_as_current=False)
    app.conf.task_protocol = protocol
    app.conf.accept_content = ["json", "msgpack", "yaml", "pickle"]
    if queues:
        app.conf.task_queues = list(queues)
        with app.connection_for_write() as connection:
            for queue in queues:
                queue(connection.default_channel).declare()
    for name in TASK_NAMES:
        app.task(name=name)(_send)
    return app


@dataclass(frozen=True)
class Published:
    """One published message: its task id, the queue kombu routed it to, its bytes there."""

    task_id: str
    queue: str
    raw: bytes


def publish(app: Celery, name: str = "app.send", **options: Any) -> Published:
    """Publish one task through Celery; return where it landed and its Redis list bytes.

    `options` are `send_task`'s (args, kwargs, queue, countdown, priority,
    serializer, compression, routing_key, retries, ...).
    """
    lists: dict[str, Any] = memory.Channel.queues
    for pending in lists.values():
        pending.queue.clear()
    task_id: str = app.send_task(name, **options).id
    landed = [(queue, pending.get_nowait()) for queue, pending in lists.items() if pending.qsize()]
    assert len(landed) == 1, f"expected one message, kombu delivered {len(landed)}"
    queue, message = landed[0]
    text: str = kombu_json.dumps(message)  # type: ignore[no-untyped-call]  # what Redis holds
    return Published(task_id, queue, text.encode())


def request_of(app: Celery, raw: bytes, hostname: str) -> Any:
    """The worker-side `Request` for a message read from a list (as a worker builds it)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        payload = kombu_json.loads(raw)  # type: ignore[no-untyped-call]
        message = channel.Message(payload, channel=channel)
        return Request(message, app=app, hostname=hostname)


def start(request: Any, started_at: float, pid: int = 4242) -> Any:
    """Mark a request accepted by the pool, as `Request.on_accepted` records it."""
    request.time_start = started_at
    request.worker_pid = pid
    return request


# -- inspect replies, as Celery's remote control answers them ---------------------------


@dataclass
class InspectedWorker:
    """What one worker holds; `inspect_bodies` makes Celery answer for it."""

    hostname: str
    #: kombu Queues it consumes (`active_queues`).
    queues: Sequence[Any] = ()
    #: Requests running in the pool (`active`).
    active: Sequence[Any] = ()
    #: Requests prefetched and not started (`reserved`).
    reserved: Sequence[Any] = ()
    #: Requests with an ETA, held by the worker's timer (`scheduled`).
    scheduled: Sequence[Any] = ()
    concurrency: int = 4
    #: The commands this worker answered within the round.
    answers: Collection[str] = COMMANDS


class _Controller:
    """The part of a WorkController the `stats` command reads."""

    def __init__(self, app: Celery, concurrency: int) -> None:
        self._app = app
        self._concurrency = concurrency

    def stats(self) -> dict[str, Any]:
        """WorkController.stats: its info, the pool's real info, prefetch and rusage."""
        pool: Any = TaskPool(limit=self._concurrency)
        try:
            pool_info = pool.info
        finally:
            pool.on_stop()
        return {
            "total": {},
            "pid": os.getpid(),
            "clock": str(self._app.clock),
            "uptime": 12,
            "pool": pool_info,
            "prefetch_count": self._concurrency * 4,
            "rusage": WorkController.rusage(self),
        }


def _noop(*args: Any) -> None:
    """The timer entry's function (never called: the timer does not run)."""


def _answers(app: Celery, worker: InspectedWorker) -> dict[str, Any]:
    """Each command's `{hostname: answer}` body, as the mailbox delivers it."""
    timer: Any = Timer()  # type: ignore[no-untyped-call]
    for request in worker.scheduled:
        timer.call_at(request.eta, _noop, (request,), priority=6)  # as the consumer does
    consumer = AttributeDict(
        timer=timer,
        task_consumer=AttributeDict(queues=list(worker.queues)),
        controller=_Controller(app, worker.concurrency),
    )
    state = AttributeDict(app=app, hostname=worker.hostname, consumer=consumer, tset=set)
    running = list(worker.active)
    held = [*running, *worker.reserved]
    worker_state.active_requests.update(running)
    worker_state.reserved_requests.update(held)
    bodies: dict[str, Any] = {}
    try:
        for command in worker.answers:
            answer = Panel.data[command](state)
            content_type, encoding, payload = serialization.dumps(  # type: ignore[no-untyped-call]
                {worker.hostname: answer}, serializer=app.conf.task_serializer
            )
            bodies[command] = serialization.loads(  # type: ignore[no-untyped-call]
                payload, content_type, encoding
            )
    finally:
        for request in held:
            worker_state.active_requests.discard(request)
            worker_state.reserved_requests.discard(request)
    return bodies


def inspect_bodies(app: Celery, workers: Iterable[InspectedWorker]) -> dict[str, dict[str, Any]]:
    """The five commands' bodies of one round: `{command: {hostname: answer}}`."""
    bodies: dict[str, dict[str, Any]] = {command: {} for command in COMMANDS}
    for worker in workers:
        for command, body in _answers(app, worker).items():
            bodies[command].update(body)
    return bodies


# -- model values ---------------------------------------------------------------------


def empty_stats() -> TaskStatsData:
    """No counters and no histograms."""
    return TaskStatsData(outcomes={}, runtime={}, queue_wait={}, folded_task_names=0)


def tracker_view(**changes: Any) -> TrackerView:
    """What the events told: nothing, unless `changes` says otherwise."""
    view = TrackerView(
        retained={},
        retained_jobs={},
        active=(),
        stats=empty_stats(),
        workers={},
        queues_seen=frozenset(),
        events_received=0,
        events_undecodable=0,
        events_lost=0,
        jobs_evicted=0,
        stream_connected=True,
        stream_reconnects=0,
    )
    return dataclasses.replace(view, **changes)


def broker_reading(
    *,
    lists: Mapping[str, int] | None = None,
    unacked: Sequence[UnackedTask] = (),
    queues: Iterable[str] = (),
    bound: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
) -> BrokerReading:
    """A broker read: list lengths per queue and the unacked hash (its queues known too)."""
    lengths = dict(lists or {})
    names = frozenset(queues) | frozenset(lengths) | {entry.queue for entry in unacked}
    return BrokerReading(
        queues=names,
        waiting_in_lists=lengths,
        unacked=tuple(unacked),
        new_malformed=0,
        round_trips=2,
        read_at=NOW,
        bound_queues=dict(bound or {}),
    )


def unacked(task_id: str, queue: str, eta: float | None = None) -> UnackedTask:
    """An entry of the unacked hash."""
    return UnackedTask(f"tag-{task_id}", task_id, "app.send", queue, eta)


def task(
    task_id: str, queue: str, *, eta: float | None = None, started_at: float | None = None
) -> WorkerTask:
    """A task in an inspect reply, published the way Celery does by default.

    Celery publishes to a named queue on the default exchange (`""`) with the
    queue's name as routing key.
    """
    return WorkerTask(task_id, "app.send", "", queue, eta=eta, started_at=started_at)


def reply(
    hostname: str,
    queues: Sequence[str] = (),
    *,
    active: Sequence[WorkerTask] = (),
    reserved: Sequence[WorkerTask] = (),
    scheduled: Sequence[WorkerTask] = (),
    concurrency: int | None = 4,
    complete: bool = True,
) -> WorkerReply:
    """One worker's answers to a round."""
    return WorkerReply(
        hostname=hostname,
        queues=tuple(queues),
        active=tuple(active),
        reserved=tuple(reserved),
        scheduled=tuple(scheduled),
        concurrency=concurrency,
        complete=complete,
    )


def workers_reading(*replies: WorkerReply, read_at: float = NOW) -> WorkersReading:
    """One inspect round's replies."""
    return WorkersReading({r.hostname: r for r in replies}, read_at=read_at, duration=0.05)
