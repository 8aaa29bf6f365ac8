"""Ask the workers what they hold: one round of remote-control broadcasts per refresh.

The five inspect commands (active, reserved, scheduled, active_queues, stats) are
published together and their replies collected by one consumer within one bounded
wait, which ends early once every expected worker has answered all five.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.messaging import Consumer
from kombu.utils.uuid import uuid

from exporter.sources.messages import MalformedMessage, parse_eta

log = logging.getLogger(__name__)

COMMANDS = ("active", "reserved", "scheduled", "active_queues", "stats")


@dataclass(frozen=True, slots=True)
class WorkerTask:
    """A task a worker holds (running, prefetched or waiting for its ETA)."""

    task_id: str
    name: str | None
    exchange: str | None
    routing_key: str | None
    eta: float | None = None
    started_at: float | None = None


@dataclass(frozen=True)
class WorkerReply:
    """Everything one worker answered in one round."""

    hostname: str
    queues: tuple[str, ...]
    active: tuple[WorkerTask, ...]
    reserved: tuple[WorkerTask, ...]
    scheduled: tuple[WorkerTask, ...]
    concurrency: int | None
    complete: bool


@dataclass(frozen=True)
class WorkersReading:
    """The replies of one round, by worker hostname."""

    replies: Mapping[str, WorkerReply]
    read_at: float
    duration: float
    malformed: int = 0


class WorkersSource:
    """Broadcasts inspect commands through Celery's own remote-control mailbox."""

    def __init__(self, app: Celery, timeout: float) -> None:
        self._app = app
        self._timeout = timeout

    def read(self, expected_workers: Iterable[str] = ()) -> WorkersReading:
        """One broadcast round; returns early when every expected worker answered."""
        started = time.monotonic()
        expected = frozenset(expected_workers)
        tickets = {uuid(): command for command in COMMANDS}
        bodies: dict[str, dict[str, Any]] = {command: {} for command in COMMANDS}

        with self._app.connection_for_write() as connection:
            mailbox = self._app.control.mailbox(connection)
            channel = connection.default_channel

            def on_reply(body: Any, message: Any) -> None:
                command = tickets.get(message.headers.get("ticket"))
                if command is not None and isinstance(body, dict):
                    bodies[command].update(body)

            consumer = Consumer(  # type: ignore[no-untyped-call]
                channel, [mailbox.reply_queue], accept=["json"], no_ack=True,
                callbacks=[on_reply],
            )
            with consumer:
                for ticket, command in tickets.items():
                    mailbox._publish(
                        command, {}, reply_ticket=ticket, channel=channel,
                        timeout=self._timeout,
                    )
                deadline = started + self._timeout
                while (remaining := deadline - time.monotonic()) > 0:
                    if expected and all(expected <= bodies[c].keys() for c in COMMANDS):
                        break
                    try:
                        connection.drain_events(timeout=min(remaining, 0.05))
                    except TimeoutError:
                        continue
        replies, malformed = assemble_replies(bodies)
        return WorkersReading(
            replies=replies,
            read_at=time.time(),
            duration=time.monotonic() - started,
            malformed=malformed,
        )


def assemble_replies(bodies: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, WorkerReply], int]:
    """Combine the five commands' `{hostname: reply}` bodies into one reply per worker."""
    hostnames: set[str] = set()
    for body in bodies.values():
        hostnames.update(body)
    replies: dict[str, WorkerReply] = {}
    malformed = 0
    for hostname in sorted(hostnames):
        try:
            replies[hostname] = _worker_reply(hostname, bodies)
        except (MalformedMessage, TypeError, ValueError, AttributeError) as exc:
            malformed += 1
            log.warning("skipping malformed inspect reply from %s: %s", hostname, exc)
    return replies, malformed


def _worker_reply(hostname: str, bodies: Mapping[str, Mapping[str, Any]]) -> WorkerReply:
    queues_body = bodies["active_queues"].get(hostname)
    stats = bodies["stats"].get(hostname)
    concurrency = None
    if isinstance(stats, dict):
        pool = stats.get("pool")
        if isinstance(pool, dict) and isinstance(pool.get("max-concurrency"), int):
            concurrency = pool["max-concurrency"]
    return WorkerReply(
        hostname=hostname,
        queues=tuple(
            sorted(q["name"] for q in queues_body or () if isinstance(q, dict) and q.get("name"))
        ),
        active=tuple(_request(r) for r in _list(bodies["active"].get(hostname))),
        reserved=tuple(_request(r) for r in _list(bodies["reserved"].get(hostname))),
        scheduled=tuple(_scheduled(s) for s in _list(bodies["scheduled"].get(hostname))),
        concurrency=concurrency,
        complete=all(hostname in bodies[c] for c in COMMANDS),
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _request(info: Any) -> WorkerTask:
    if not isinstance(info, dict) or not info.get("id"):
        raise MalformedMessage("request without an id")
    delivery = info.get("delivery_info") or {}
    started = info.get("time_start")
    return WorkerTask(
        task_id=str(info["id"]),
        name=info.get("name") or info.get("type"),
        exchange=delivery.get("exchange"),
        routing_key=delivery.get("routing_key"),
        started_at=float(started) if isinstance(started, int | float) else None,
    )


def _scheduled(entry: Any) -> WorkerTask:
    if not isinstance(entry, dict):
        raise MalformedMessage("scheduled entry is not an object")
    request = _request(entry.get("request"))
    return WorkerTask(
        task_id=request.task_id,
        name=request.name,
        exchange=request.exchange,
        routing_key=request.routing_key,
        eta=parse_eta(entry.get("eta")),
    )


def make_inspect_app(broker_url: str, transport_options: Mapping[str, Any]) -> Celery:
    """A Celery app used only to talk to the workers' mailbox (it runs no tasks)."""
    app = Celery("celery-jobs-exporter", broker=broker_url, set_as_current=False)
    app.conf.broker_transport_options = dict(transport_options)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_timeout = 5
    app.conf.accept_content = ["json"]
    return app
