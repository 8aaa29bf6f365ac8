"""The workers' replies to inspect broadcasts, checked entry by entry.

Each worker answers `active`, `reserved`, `scheduled`, `active_queues` and `stats`
with a JSON body kombu has already decoded. Every task entry, queue entry and the
pool size is checked against a typed struct on its own: a bad entry is skipped and
counted, the rest of that worker's reply (and every other worker's) is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import MAX_IDENTIFIER, Identifier, Timestamp, clean_tree, valid_text
from exporter.protocol.messages import convert, parse_eta
from exporter.protocol.skips import SkipLog

log = logging.getLogger(__name__)

COMMANDS = ("active", "reserved", "scheduled", "active_queues", "stats")
#: Entries read per list of one worker's reply (a worker prefetches far fewer).
MAX_ENTRIES = 100_000

SKIPPED = SkipLog("inspect")


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


class _DeliveryInfo(msgspec.Struct):
    exchange: Identifier | None = None
    routing_key: Identifier | None = None


class _Request(msgspec.Struct):
    id: Identifier
    name: Identifier | None = None
    type: Identifier | None = None
    delivery_info: _DeliveryInfo | None = None
    time_start: Timestamp | None = None


class _Scheduled(msgspec.Struct):
    request: _Request
    eta: str | Timestamp | None = None


class _Queue(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IDENTIFIER)]


class _Pool(msgspec.Struct):
    max_concurrency: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = msgspec.field(
        name="max-concurrency", default=None
    )


class _Stats(msgspec.Struct):
    pool: _Pool | None = None


def assemble_replies(bodies: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, WorkerReply], int]:
    """Combine the five commands' `{hostname: reply}` bodies into one reply per worker.

    Returns the replies and how many entries (or whole workers, for a hostname that
    is not one) were skipped as malformed.
    """
    hostnames: set[str] = set()
    for body in bodies.values():
        hostnames.update(body)
    replies: dict[str, WorkerReply] = {}
    counter = _Counter()
    for hostname in sorted(hostnames):
        if not isinstance(hostname, str) or len(hostname) > MAX_IDENTIFIER:
            counter.skip(f"worker name {str(hostname)[:64]!r}")
            continue
        replies[valid_text(hostname)] = _worker_reply(hostname, bodies, counter)
    return replies, counter.count


class _Counter:
    """Counts and reports the entries skipped in one round."""

    def __init__(self) -> None:
        self.count = 0

    def skip(self, reason: str) -> None:
        self.count += 1
        SKIPPED.skipped(reason)


def _entries(value: Any, kind: type[Any], what: str, counter: _Counter) -> list[Any]:
    """Each entry of a reply list checked on its own; bad ones skipped and counted."""
    if value is None:
        return []
    if not isinstance(value, list):
        counter.skip(f"{what} is not a list")
        return []
    checked = []
    for entry in value[:MAX_ENTRIES]:
        try:
            checked.append(convert(clean_tree(entry), kind, what))
        except MalformedMessage as exc:
            counter.skip(str(exc))
    return checked


def _task(request: _Request, eta: float | None = None) -> WorkerTask:
    delivery = request.delivery_info or _DeliveryInfo()
    return WorkerTask(
        task_id=request.id,
        name=request.name or request.type,
        exchange=delivery.exchange,
        routing_key=delivery.routing_key,
        eta=eta,
        started_at=request.time_start,
    )


def _scheduled(entry: _Scheduled, counter: _Counter) -> WorkerTask | None:
    try:
        return _task(entry.request, parse_eta(entry.eta))
    except MalformedMessage as exc:
        counter.skip(str(exc))
        return None


def _worker_reply(
    hostname: str, bodies: Mapping[str, Mapping[str, Any]], counter: _Counter
) -> WorkerReply:
    def body(command: str) -> Any:
        return bodies[command].get(hostname)

    concurrency = None
    stats = body("stats")
    if stats is not None:
        try:
            pool = convert(clean_tree(stats), _Stats, "stats").pool
            concurrency = pool.max_concurrency if pool else None
        except MalformedMessage as exc:
            counter.skip(str(exc))
    scheduled = (
        _scheduled(entry, counter)
        for entry in _entries(body("scheduled"), _Scheduled, "scheduled entry", counter)
    )
    return WorkerReply(
        hostname=valid_text(hostname),
        queues=tuple(sorted({
            q.name for q in _entries(body("active_queues"), _Queue, "queue entry", counter)
        })),
        active=tuple(_task(r) for r in _entries(body("active"), _Request, "active", counter)),
        reserved=tuple(
            _task(r) for r in _entries(body("reserved"), _Request, "reserved", counter)
        ),
        scheduled=tuple(task for task in scheduled if task is not None),
        concurrency=concurrency,
        complete=all(hostname in bodies[c] for c in COMMANDS),
    )
