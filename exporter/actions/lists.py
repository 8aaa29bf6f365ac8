"""Writes to a queue's broker lists: find one exact message, remove it, purge them all.

kombu LPUSHes a message onto the list of its queue (one list per priority step) and
workers BRPOP from the right end. Removing a message is `LREM key 1 <its exact
bytes>`: atomic against workers popping at the same moment (one of the two gets
it), and it can only remove a message byte for byte equal to the one found, never
another message that carries the same task id.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.keys import TransportOptions
from exporter.protocol.limits import InputLimits
from exporter.protocol.messages import TaskMessage, load_envelope, parse_task_message

#: Messages read per LRANGE while looking for one task id.
SCAN_CHUNK = 500
#: Messages looked at per queue before a search for one id gives up.
DEFAULT_FIND_LIMIT = 100_000


@dataclass(frozen=True)
class FoundMessage:
    """A message found in a queue's list: where it is, its exact bytes, what it says."""

    key: str
    raw: bytes
    message: TaskMessage


@dataclass(frozen=True)
class Lookup:
    """The result of looking for a task id: the message, if found, and how far we looked."""

    found: FoundMessage | None
    scanned: int
    total: int

    @property
    def complete(self) -> bool:
        """Whether every message of the queue was looked at."""
        return self.scanned >= self.total


class QueueLists:
    """Finds, removes and purges messages of a queue's lists (every priority sub-list)."""

    def __init__(
        self, client: redis.Redis, transport: TransportOptions, limits: InputLimits
    ) -> None:
        self._client = client
        self._transport = transport
        self._limits = limits

    def find(self, queue: str, task_id: str, limit: int = DEFAULT_FIND_LIMIT) -> Lookup:
        """The first message of `queue` with this task id, looking at up to `limit` messages."""
        needle = task_id.encode("utf-8", "surrogatepass")
        scanned = 0
        total = 0
        keys = self._transport.queue_keys(queue)
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        lengths = [int(n) for n in pipe.execute()]
        total = sum(lengths)
        for key, length in zip(keys, lengths, strict=True):
            start = 0
            while start < length and scanned < limit:
                stop = min(start + SCAN_CHUNK, length, start + limit - scanned) - 1
                chunk: list[bytes] = self._client.lrange(key, start, stop)  # type: ignore[assignment]
                scanned += len(chunk)
                for raw in chunk:
                    if needle not in raw:  # cheap test before decoding
                        continue
                    message = self._decode(raw)
                    if message is not None and message.task_id == task_id:
                        return Lookup(FoundMessage(key, raw, message), scanned, total)
                if not chunk:
                    break
                start = stop + 1
        return Lookup(None, scanned, total)

    def remove(self, found: FoundMessage) -> bool:
        """Remove exactly this message; False if a worker took it (or it left) meanwhile."""
        return int(self._client.lrem(found.key, 1, found.raw)) == 1  # type: ignore[arg-type]

    def purge(self, queue: str) -> int:
        """Delete every message of `queue` (every priority sub-list) at once; how many."""
        keys = self._transport.queue_keys(queue)
        pipe = self._client.pipeline(transaction=True)
        for key in keys:
            pipe.llen(key)
        pipe.delete(*keys)
        replies = pipe.execute()
        return sum(int(n) for n in replies[: len(keys)])

    def _decode(self, raw: bytes) -> TaskMessage | None:
        try:
            envelope = load_envelope(raw, self._limits)
            return parse_task_message(envelope, with_body=True, limits=self._limits)
        except MalformedMessage:
            return None
