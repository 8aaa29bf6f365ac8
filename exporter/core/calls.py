"""Exact calls (task name, args, kwargs) of jobs whose message the sidecar has read.

A retry must run a task with the arguments it was first called with. Events carry
only clipped reprs; a task message carries the real values. Each JSON message the
sidecar decodes anyway (an unacked entry, a Jobs API page, an action's lookup) leaves
its body here, as published, bounded by count and by size, newest kept. The body is
decoded again with the standard library's JSON, which keeps every value exactly
(integers of any size, floats, lone surrogates), when a retry asks for it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.protocol.messages import TaskMessage

MAX_CALLS = 20_000
MAX_CALL_BYTES = 64 * 1024
MAX_TOTAL_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ExactCall:
    """How a task was called, exactly."""

    name: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]


def exact_json(data: bytes | str) -> Any:
    """JSON decoded without loss (ValueError if it is not JSON)."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("nested too deep") from exc


class CallBook:
    """The newest calls seen in messages, by task id; thread-safe."""

    def __init__(
        self,
        max_calls: int = MAX_CALLS,
        max_call_bytes: int = MAX_CALL_BYTES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        self._max_calls = max_calls
        self._max_call_bytes = max_call_bytes
        self._max_total = max_total_bytes
        self._calls: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, message: TaskMessage) -> None:
        """Keep the JSON body of a decoded protocol 2 message, as it was published."""
        body = message.exact_body
        if message.name is None or message.body_error is not None or body is None:
            return
        if len(body) > self._max_call_bytes:
            return
        with self._lock:
            old = self._calls.pop(message.task_id, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._calls[message.task_id] = (message.name, body)
            self._bytes += len(body)
            while len(self._calls) > self._max_calls or self._bytes > self._max_total:
                _id, (_name, dropped) = self._calls.popitem(last=False)
                self._bytes -= len(dropped)

    def get(self, task_id: str) -> ExactCall | None:
        """The call of `task_id`, if a message of it was read (and reads as a call)."""
        with self._lock:
            kept = self._calls.get(task_id)
        if kept is None:
            return None
        name, body = kept
        try:
            decoded = exact_json(body)
        except ValueError:
            return None
        if not (isinstance(decoded, list) and len(decoded) >= 2
                and isinstance(decoded[0], list) and isinstance(decoded[1], dict)):
            return None
        return ExactCall(name, decoded[0], decoded[1])
