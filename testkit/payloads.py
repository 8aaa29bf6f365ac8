"""The Celery event payloads a real worker published, captured once and loaded one way.

`data/payloads.jsonl` holds one pub/sub message per line, ``{"channel": ..., "data":
...}``, ``data`` being the payload exactly as Redis delivered it: a kombu envelope (JSON)
whose body (base64 JSON) is one event, or a list of them on ``task.multi``. It comes
from `bench/events/capture.py`: a worker of `testkit.celery_app` running a task mix
(tests.add on ``celery`` and on ``bench``, tests.fail, tests.flaky_fail with two
autoretries, tests.ingest, tests.sleep(0.1)), then stopped to send ``worker-offline``.

The events here are decoded with the standard library only, independently of the
exporter's decoder; a test of that decoder feeds it `Payload.raw`.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAYLOADS = Path(__file__).resolve().parent / "data" / "payloads.jsonl"
#: The channel prefix of Celery's events on database 0 (kombu's fanout of `celeryev`).
EVENT_CHANNEL_PREFIX = "/0.celeryev/"
#: The event types the capture holds (the capture fails without one of each).
EVENT_TYPES = (
    "task-sent",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "worker-online",
    "worker-heartbeat",
    "worker-offline",
)

Event = dict[str, Any]


def decode_body(data: str) -> list[Event]:
    """The event(s) of one raw payload: its body is one event, or a list of them."""
    envelope = json.loads(data)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode("utf-8")
    decoded = json.loads(body)
    return decoded if isinstance(decoded, list) else [decoded]


@dataclass(frozen=True)
class Payload:
    """One captured pub/sub message."""

    channel: str
    data: str

    @property
    def routing_key(self) -> str:
        """The channel's last part: ``task.sent``, ``task.multi``, ``worker.heartbeat``..."""
        return self.channel.rsplit("/", 1)[1]

    @property
    def raw(self) -> bytes:
        """The payload's bytes, as the exporter's event stream receives them."""
        return self.data.encode()

    def envelope(self) -> dict[str, Any]:
        """The kombu envelope (a new dict at each call)."""
        envelope: dict[str, Any] = json.loads(self.data)
        return envelope

    def events(self) -> list[Event]:
        """Its events, decoded (new dicts at each call)."""
        return decode_body(self.data)


@functools.cache
def _load(path: Path) -> tuple[Payload, ...]:
    payloads = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                payloads.append(Payload(str(record["channel"]), str(record["data"])))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{number}: not a captured payload: {exc!r}") from exc
    return tuple(payloads)


def load_payloads(path: Path = PAYLOADS) -> tuple[Payload, ...]:
    """Every captured payload, in capture order (read once per path)."""
    return _load(path.resolve())


def events_by_type(payloads: Iterable[Payload] | None = None) -> dict[str, list[Event]]:
    """Every captured event by type, each type in capture order."""
    found: dict[str, list[Event]] = {}
    for payload in load_payloads() if payloads is None else payloads:
        for event in payload.events():
            found.setdefault(str(event["type"]), []).append(event)
    return found


def first_events() -> dict[str, Event]:
    """The first captured event of each type."""
    return {kind: events[0] for kind, events in events_by_type().items()}
