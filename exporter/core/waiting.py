"""Pages of a queue's waiting messages, decoded and joined with what the events told."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from exporter.model.jobs import Job
from exporter.model.readings import WaitingMessage
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import InputLimits
from exporter.protocol.messages import TaskMessage, load_envelope, parse_task_message


class Pager(Protocol):
    """Reads raw messages of a queue, next to run first (sources.broker.QueuePager)."""

    def page(self, queue: str, offset: int, limit: int) -> tuple[list[bytes], int]: ...


class WaitingPages:
    """Reads one page of a queue's list; an undecodable message costs only its own entry."""

    def __init__(
        self,
        pager: Pager,
        limits: InputLimits,
        lookup: Callable[[Iterable[str]], Mapping[str, Job]],
        on_message: Callable[[TaskMessage], None] | None = None,
    ) -> None:
        self._pager = pager
        self._limits = limits
        self._lookup = lookup
        self._on_message = on_message

    def page(self, queue: str, offset: int, limit: int) -> list[WaitingMessage]:
        """Up to `limit` messages from `offset` places after the head (reads the broker)."""
        raws, _total = self._pager.page(queue, offset, limit)
        decoded: list[WaitingMessage] = []
        for raw in raws:
            try:
                envelope = load_envelope(raw, self._limits)
                message = parse_task_message(envelope, with_body=True, limits=self._limits)
            except MalformedMessage as exc:
                decoded.append(WaitingMessage(raw, None, str(exc)))
            else:
                decoded.append(WaitingMessage(raw, message))
                if self._on_message is not None:
                    self._on_message(message)
        known = self._lookup(m.message.task_id for m in decoded if m.message is not None)
        return [
            WaitingMessage(m.raw, m.message, job=known.get(m.message.task_id))
            if m.message is not None
            else m
            for m in decoded
        ]
