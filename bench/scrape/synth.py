"""Realistic broker state and Celery events for the scrape benchmark.

Queues are Redis lists holding a few protocol-2 task messages, bound in kombu's
`_kombu.binding.celery` table. Events are built from the captured payloads in
testkit/data/payloads.jsonl (same envelope and event fields, new ids, names, queues
and timestamps): task-sent on task.sent, worker events as task.multi lists.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from testkit.exposition import SampleKey, sample_key
from testkit.messages import task_message
from testkit.payloads import EVENT_CHANNEL_PREFIX, first_events, load_payloads

SEP = "\x06\x16"
BINDING_TABLE = "_kombu.binding.celery"
#: Queue waits and runtimes (seconds) cycled through so histograms spread over buckets.
WAITS = (0.002, 0.02, 0.2, 1.5, 8.0)
RUNTIMES = (0.004, 0.03, 0.12, 0.7, 3.0, 20.0)
#: task-received, task-started and the outcome of two tasks per task.multi message.
EVENTS_PER_MULTI = 6

Event = dict[str, Any]


@dataclass(frozen=True)
class Layout:
    """How many queues and task names; task i is routed to queue i % queues."""

    queues: int
    tasks: int

    @property
    def label(self) -> str:
        """E.g. `200x200`."""
        return f"{self.queues}x{self.tasks}"

    def queue(self, index: int) -> str:
        """The name of queue `index`."""
        return f"queue_{index:03d}"

    def task(self, index: int) -> str:
        """The name of task `index`."""
        return f"bench.tasks.task_{index:03d}"

    def route(self, task_index: int) -> str:
        """The queue a task name is routed to."""
        return self.queue(task_index % self.queues)

    def messages_in(self, queue_index: int) -> int:
        """How many messages wait in a queue (1 to 7)."""
        return queue_index % 7 + 1


@dataclass(frozen=True)
class Templates:
    """A captured kombu event envelope and the first captured event of each type."""

    envelope: dict[str, Any]
    events: dict[str, Event]


def load_templates() -> Templates:
    """The first captured task.multi envelope and the first captured event of each type."""
    multi = next((p for p in load_payloads() if p.routing_key == "task.multi"), None)
    if multi is None:
        raise RuntimeError("no task.multi payload captured to use as a template")
    return Templates(multi.envelope(), first_events())


def populate_broker(client: redis.Redis, layout: Layout) -> int:
    """Bind every queue in kombu's table and push a few messages; returns messages pushed."""
    pipe = client.pipeline(transaction=False)
    total = 0
    for index in range(layout.queues):
        queue = layout.queue(index)
        pipe.sadd(BINDING_TABLE, f"{queue}{SEP}{SEP}{queue}")
        count = layout.messages_in(index)
        pipe.lpush(
            queue,
            *(json.dumps(task_message(layout.task(index), queue)).encode() for _ in range(count)),
        )
        total += count
    pipe.execute()
    return total


class EventFactory:
    """Builds kombu-encoded event messages from the captured templates."""

    def __init__(self, templates: Templates) -> None:
        self._templates = templates
        self._clock = itertools.count(1)

    def event(self, kind: str, **fields: Any) -> Event:
        """A copy of the captured event of this type with some fields replaced."""
        event = copy.deepcopy(self._templates.events[kind])
        event.update(fields, clock=next(self._clock))
        return event

    def encode(self, routing_key: str, body: Event | Sequence[Event]) -> tuple[str, bytes]:
        """The (channel, payload) Celery would publish for this body."""
        first = body if isinstance(body, dict) else body[0]
        envelope = copy.deepcopy(self._templates.envelope)
        envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        envelope["headers"]["hostname"] = first["hostname"]
        envelope["properties"]["delivery_tag"] = str(uuid.uuid4())
        envelope["properties"]["delivery_info"]["routing_key"] = routing_key
        return EVENT_CHANNEL_PREFIX + routing_key, json.dumps(envelope).encode()


def event_messages(
    layout: Layout, templates: Templates, *, runs: int, now: float
) -> list[tuple[str, bytes]]:
    """One worker-online, then `runs` rounds of every task name; the last round fails."""
    factory = EventFactory(templates)
    messages = [factory.encode("worker.online", factory.event("worker-online", timestamp=now))]
    for run in range(runs):
        worker_events: list[Event] = []
        for index in range(layout.tasks):
            task_id = str(uuid.uuid4())
            name, queue = layout.task(index), layout.route(index)
            sent_at = now - 600 + run * 60 + index * 1e-3
            started_at = sent_at + WAITS[(index + run) % len(WAITS)]
            runtime = RUNTIMES[(3 * index + run) % len(RUNTIMES)]
            sent = factory.event(
                "task-sent", uuid=task_id, root_id=task_id, name=name, queue=queue,
                routing_key=queue, timestamp=sent_at,
            )
            messages.append(factory.encode("task.sent", sent))
            worker_events.append(factory.event(
                "task-received", uuid=task_id, root_id=task_id, name=name,
                timestamp=sent_at + 0.001,
            ))
            worker_events.append(factory.event("task-started", uuid=task_id, timestamp=started_at))
            if run == runs - 1:
                worker_events.append(factory.event(
                    "task-failed", uuid=task_id, timestamp=started_at + runtime
                ))
            else:
                worker_events.append(factory.event(
                    "task-succeeded", uuid=task_id, runtime=runtime,
                    timestamp=started_at + runtime,
                ))
        for chunk in _chunks(worker_events, EVENTS_PER_MULTI):
            messages.append(factory.encode("task.multi", chunk))
    return messages


def publish(client: redis.Redis, messages: Sequence[tuple[str, bytes]]) -> None:
    """PUBLISH every message in order; raises if nobody was subscribed."""
    for chunk in _chunks(list(messages), 500):
        pipe = client.pipeline(transaction=False)
        for channel, data in chunk:
            pipe.publish(channel, data)
        receivers = pipe.execute()
        if min(receivers) < 1:
            raise RuntimeError("an event was published with no subscriber")


def expected_series(layout: Layout, runs: int) -> dict[SampleKey, float]:
    """Samples (name and labels) /metrics must show once every event is applied."""
    expected: dict[SampleKey, float] = {}
    for index in range(layout.queues):
        key = sample_key("celery_queue_jobs", queue=layout.queue(index), status="paused")
        expected[key] = float(layout.messages_in(index))
    for index in range(layout.tasks):
        labels = {"queue": layout.route(index), "task": layout.task(index)}
        expected[sample_key("celery_task_runtime_seconds_count", **labels)] = float(runs)
        expected[sample_key("celery_tasks_total", outcome="succeeded", **labels)] = float(
            runs - 1
        )
        expected[sample_key("celery_tasks_total", outcome="failed", **labels)] = 1.0
    return expected


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
