"""Exact calls (task name, args, kwargs) of jobs whose message the sidecar has read.

A retry must run a task with the arguments it was first called with. Events carry
only clipped reprs; a task message carries the real values. Each message the sidecar
decodes anyway (an unacked entry, a Jobs API page, an action's lookup) leaves its
call here, bounded by count and by size, newest kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

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
        """Keep the call of a decoded message whose body was read in full."""
        if message.name is None or message.body_error is not None:
            return
        args, kwargs = message.args, message.kwargs
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            return
        try:
            body = orjson.dumps([list(args), kwargs])
        except TypeError:  # not JSON (a pickled body's objects): no exact copy to keep
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
        """The call of `task_id`, if a message of it was read."""
        with self._lock:
            kept = self._calls.get(task_id)
        if kept is None:
            return None
        name, body = kept
        args, kwargs = orjson.loads(body)
        return ExactCall(name, args, kwargs)
