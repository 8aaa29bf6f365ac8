"""The synthetic Celery event stream of the event-stream benchmarks (events, memory).

It is built from the payloads a real worker published (`testkit/data/payloads.jsonl`):
every message keeps the captured kombu envelope and event fields; only uuids,
timestamps, hostnames, pids, clocks, queues and task names are rewritten. Each shard
is made as ready-made RESP ``PUBLISH`` commands (`publishers.py` writes them).
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from testkit.payloads import EVENT_CHANNEL_PREFIX, events_by_type, load_payloads
from testkit.republish import Envelope, envelopes, resp_publish

HEARTBEAT_INTERVAL = 2.0
QUEUE_NAMES = (
    "default", "emails", "billing", "reports", "ingest",
    "webhooks", "media", "search", "notifications", "exports",
)
TASK_VERBS = ("send", "sync", "build", "import", "refresh")
TASK_NOUNS = ("invoice", "report", "thumbnail", "index")

Event = dict[str, Any]


# -- the captured templates ----------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    """Captured events and envelopes, one of each kind the synthetic stream needs."""

    pairs: tuple[tuple[Event, Event], ...]
    started: Event
    succeeded: tuple[Event, ...]
    failed: tuple[Event, ...]
    heartbeat: Event
    sent_envelope: Envelope
    multi_envelope: Envelope
    heartbeat_envelope: Envelope


def load_templates() -> Templates:
    """Read the captured payloads and pick the templates of the synthetic stream."""
    payloads = load_payloads()
    by_type, by_key = events_by_type(payloads), envelopes(payloads)
    received = {e["uuid"]: e for e in by_type["task-received"] if not e.get("retries")}
    pairs = tuple(
        (sent, received[sent["uuid"]])
        for sent in by_type["task-sent"]
        if not sent.get("retries") and sent["uuid"] in received
    )
    return Templates(
        pairs=pairs,
        started=by_type["task-started"][0],
        succeeded=tuple(by_type["task-succeeded"]),
        failed=tuple(by_type["task-failed"]),
        heartbeat=by_type["worker-heartbeat"][0],
        sent_envelope=by_key["task.sent"],
        multi_envelope=by_key["task.multi"],
        heartbeat_envelope=by_key["worker.heartbeat"],
    )


# -- the synthetic stream --------------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    """The shape of the synthetic stream; one shard per publisher process."""

    rate: float
    shard: int = 0
    shards: int = 1
    queues: int = 10
    task_names: int = 20
    workers: int = 8
    failure_ratio: float = 0.1
    unique_tracebacks: bool = False
    seed: int = 7


@dataclass(slots=True)
class _Task:
    uuid: str
    name: str
    queue: str
    failed: bool
    pair: tuple[Event, Event]
    started_at: float = 0.0


@dataclass(slots=True)
class _Worker:
    hostname: str
    pid: int
    clock: int = 0
    processed: int = 0
    last_heartbeat: float = 0.0
    to_start: _Task | None = None
    to_finish: _Task | None = None
    buffer: list[Event] = field(default_factory=list)


@dataclass
class Batch:
    """Pre-encoded RESP PUBLISH commands and the number of events each one carries."""

    commands: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Events in the batch."""
        return sum(self.counts)

    @property
    def nbytes(self) -> int:
        """Bytes the batch writes to Redis."""
        return sum(len(c) for c in self.commands)


def task_names(count: int) -> list[str]:
    """Realistic task names, `count` of them."""
    names = [f"app.tasks.{verb}_{noun}" for noun in TASK_NOUNS for verb in TASK_VERBS]
    names += [f"app.tasks.job_{i}" for i in range(len(names), count)]
    return names[:count]


def queue_names(count: int) -> list[str]:
    """Queue names, `count` of them."""
    return [QUEUE_NAMES[i] if i < len(QUEUE_NAMES) else f"queue-{i}" for i in range(count)]


class StreamGenerator:
    """Makes the messages of one shard: each task sent, received, started, then ended.

    Task-sent goes alone on ``task.sent`` (a dict body, from a producer); each worker's
    events go on ``task.multi`` as lists of 1-3 events, the way prefork workers batch
    them. Each worker runs a 3-stage pipeline (receive, start, finish) and sends a
    heartbeat every 2 s of stream time with its cumulative ``processed`` counter.
    """

    def __init__(self, templates: Templates, config: StreamConfig) -> None:
        self._t = templates
        self._c = config
        self._rng = random.Random(config.seed * 1000 + config.shard)
        owned = [w for w in range(config.workers) if w % config.shards == config.shard]
        if not owned:
            raise ValueError("more publisher shards than workers")
        self._workers = [_Worker(f"celery@worker-{w:02d}", 30_000 + w) for w in owned]
        self._producers = [(f"gen{20_000 + p}@web-{p}", 20_000 + p) for p in range(4)]
        self._producer_clock = 0
        names = task_names(config.task_names)
        queues = queue_names(config.queues)
        self._routes = [(name, queues[i % len(queues)]) for i, name in enumerate(names)]
        self._now = time.time()
        self._step_seconds = config.shards / config.rate
        self._channels = {
            kind: f"{EVENT_CHANNEL_PREFIX}{kind}".encode()
            for kind in ("task.sent", "task.multi", "worker.heartbeat")
        }

    def take(self, events: int, *, final: bool = False) -> Batch:
        """At least `events` events of the stream; `final` also ends every task in flight."""
        batch = Batch()
        emitted = 0
        while emitted < events:
            emitted += self._step(batch)
        if final:
            for worker in self._workers:
                while worker.to_start is not None or worker.to_finish is not None:
                    self._advance(worker, None)
                    self._flush(worker, batch)
                self._heartbeat(worker, batch)
        return batch

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _step(self, batch: Batch) -> int:
        rng = self._rng
        worker = self._workers[rng.randrange(len(self._workers))]
        name, queue = self._routes[rng.randrange(len(self._routes))]
        pair = self._t.pairs[rng.randrange(len(self._t.pairs))]
        task = _Task(self._uuid(), name, queue, rng.random() < self._c.failure_ratio, pair)
        before = len(batch.counts)
        self._send(task, batch)
        self._advance(worker, task)
        self._flush(worker, batch)
        if self._now - worker.last_heartbeat >= HEARTBEAT_INTERVAL:
            self._heartbeat(worker, batch)
        emitted = sum(batch.counts[before:])
        self._now += emitted * self._step_seconds
        return emitted

    def _send(self, task: _Task, batch: Batch) -> None:
        hostname, pid = self._producers[self._rng.randrange(len(self._producers))]
        self._producer_clock += 1
        event = dict(task.pair[0])
        event.update(
            hostname=hostname, pid=pid, clock=self._producer_clock, uuid=task.uuid,
            root_id=task.uuid, name=task.name, queue=task.queue, routing_key=task.queue,
            timestamp=self._now,
        )
        self._publish(batch, "task.sent", self._t.sent_envelope, event, hostname, 1)

    def _advance(self, worker: _Worker, task: _Task | None) -> None:
        """One pipeline step of a worker: finish one task, start one, receive `task`."""
        now = self._now
        if worker.to_finish is not None:
            worker.buffer.append(self._finished(worker, worker.to_finish, now + 0.0004))
        if worker.to_start is not None:
            worker.to_start.started_at = now + 0.0002
            worker.buffer.append(self._worker_event(
                worker, self._t.started, worker.to_start.uuid, worker.to_start.started_at,
            ))
            worker.processed += 1
        if task is not None:
            received = self._worker_event(worker, task.pair[1], task.uuid, now + 0.0003)
            received.update(name=task.name, root_id=task.uuid)
            worker.buffer.append(received)
        worker.to_finish, worker.to_start = worker.to_start, task

    def _finished(self, worker: _Worker, task: _Task, now: float) -> Event:
        if task.failed:
            template = self._t.failed[self._rng.randrange(len(self._t.failed))]
            event = self._worker_event(worker, template, task.uuid, now)
            if self._c.unique_tracebacks:
                event["exception"] = f"{template['exception']} [{task.uuid}]"
                event["traceback"] = template["traceback"].rstrip("\n") + f" [{task.uuid}]\n"
            return event
        template = self._t.succeeded[self._rng.randrange(len(self._t.succeeded))]
        event = self._worker_event(worker, template, task.uuid, now)
        event["runtime"] = now - task.started_at
        return event

    def _worker_event(self, worker: _Worker, template: Event, task_id: str, ts: float) -> Event:
        worker.clock += 1
        event = dict(template)
        event.update(
            hostname=worker.hostname, pid=worker.pid, clock=worker.clock, uuid=task_id,
            timestamp=ts,
        )
        return event

    def _flush(self, worker: _Worker, batch: Batch) -> None:
        """Send the worker's buffered events as task.multi lists of 1 to 3 events."""
        events = worker.buffer
        while events:
            size = self._rng.randint(1, 3)
            chunk, events = events[:size], events[size:]
            self._publish(
                batch, "task.multi", self._t.multi_envelope, chunk, worker.hostname, len(chunk)
            )
        worker.buffer = []

    def _heartbeat(self, worker: _Worker, batch: Batch) -> None:
        worker.clock += 1
        worker.last_heartbeat = self._now
        event = dict(self._t.heartbeat)
        event.update(
            hostname=worker.hostname, pid=worker.pid, clock=worker.clock, timestamp=self._now,
            active=1 if worker.to_finish is not None else 0, processed=worker.processed,
        )
        self._publish(
            batch, "worker.heartbeat", self._t.heartbeat_envelope, event, worker.hostname, 1
        )

    def _publish(
        self, batch: Batch, kind: str, envelope: Envelope, body: object, hostname: str, n: int
    ) -> None:
        encoded = base64.b64encode(json.dumps(body).encode()).decode()
        data = envelope.render(encoded, hostname, self._uuid()).encode()
        batch.commands.append(resp_publish(self._channels[kind], data))
        batch.counts.append(n)
