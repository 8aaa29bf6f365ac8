"""Read the broker (Redis) side of Celery: queues, their list lengths, and the unacked hash.

Every read is pipelined: one refresh costs two round trips (plus a SCAN for binding
tables every discovery interval), and its work grows with the number of queues and
unacked entries, never with the number of waiting messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from exporter.model.readings import BrokerReading, UnackedTask
from exporter.protocol.cardinality import QueueAdmission
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.keys import TransportOptions, glob_escape
from exporter.protocol.limits import DEFAULT_LIMITS, InputLimits
from exporter.protocol.messages import TaskMessage, parse_unacked_entry
from exporter.protocol.routing import resolve_queue
from exporter.protocol.skips import SkipLog
from exporter.sources.redis import as_text

log = logging.getLogger(__name__)

BINDING_PREFIX = "_kombu.binding."
#: Exchanges whose bindings are Celery internals, not task queues.
INTERNAL_EXCHANGE_SUFFIXES = (".pidbox",)
INTERNAL_EXCHANGES = frozenset({"celeryev"})


#: The identity of the message workers take next from a queue: the last element of
#: its first non-empty priority sub-list (kombu LPUSHes, workers RPOP), as its task id
#: (protocol 2 headers), else the SHA-1 of its bytes. One LINDEX per sub-list and one
#: decode of one message: O(1) in the queue's length. False when the queue is empty.
HEAD_OF_QUEUE = """
for i = 1, #KEYS do
  local raw = redis.call('LINDEX', KEYS[i], -1)
  if raw then
    local ok, message = pcall(cjson.decode, raw)
    if ok and type(message) == 'table' and type(message.headers) == 'table'
        and type(message.headers.id) == 'string' and #message.headers.id <= 1024 then
      return message.headers.id
    end
    return 'sha1:' .. redis.sha1hex(raw)
  end
end
return false
"""


def is_internal_exchange(exchange: str) -> bool:
    """Whether an exchange carries Celery's own traffic (events, remote control)."""
    return exchange in INTERNAL_EXCHANGES or exchange.endswith(INTERNAL_EXCHANGE_SUFFIXES)


class BrokerSource:
    """Reads queue state from the broker; holds only caches, never writes to Redis."""

    def __init__(
        self,
        client: redis.Redis,
        transport: TransportOptions,
        *,
        configured_queues: Iterable[str] = (),
        discovery_interval: float = 30.0,
        admission: QueueAdmission | None = None,
        limits: InputLimits = DEFAULT_LIMITS,
        on_message: Callable[[TaskMessage], None] | None = None,
    ) -> None:
        self._client = client
        self._transport = transport
        self._configured = frozenset(configured_queues)
        self._discovery_interval = discovery_interval
        self._binding_keys: list[str] = []
        self._discovered_at = float("-inf")
        self._unacked_cache: dict[bytes, UnackedTask | None] = {}
        self._admission = admission
        self._limits = limits
        self._skips = SkipLog("unacked")
        #: SHA of HEAD_OF_QUEUE once loaded (again after a Redis restart forgot it).
        self._head_sha: str | None = None
        #: Told each new unacked message, body decoded (the exact calls a retry needs).
        self._on_message = on_message

    def read(self, extra_queues: Iterable[str] = ()) -> BrokerReading:
        """Read every known queue's lists and the unacked hash; raises redis errors."""
        started = time.monotonic()
        round_trips = 0
        if started - self._discovered_at >= self._discovery_interval:
            round_trips += self._discover_binding_keys()
            self._discovered_at = started

        prefix = self._transport.global_keyprefix
        pipe = self._client.pipeline(transaction=False)
        for key in self._binding_keys:
            pipe.smembers(key)
        pipe.hkeys(prefix + self._transport.unacked_key)
        replies = pipe.execute(raise_on_error=False)
        round_trips += 1

        bound_queues = self._parse_bindings(replies[:-1])
        tags_reply = replies[-1]
        tags: list[bytes] = tags_reply if isinstance(tags_reply, list) else []
        queues = set(self._configured) | set(extra_queues)
        for names in bound_queues.values():
            queues.update(names)
        queue_list = sorted(queues)
        if self._admission is not None:  # past --max-queues: not read, not reported
            queue_list = [queue for queue in queue_list if self._admission.admit(queue)]
            queues = set(queue_list)

        new_tags = [t for t in tags if t not in self._unacked_cache]
        steps = len(self._transport.priority_steps)
        if self._head_sha is None:
            self._head_sha = str(self._client.script_load(HEAD_OF_QUEUE))
            round_trips += 1
        pipe = self._client.pipeline(transaction=False)
        for queue in queue_list:
            keys = self._transport.queue_keys(queue)
            for key in keys:
                pipe.llen(key)
            pipe.evalsha(self._head_sha, len(keys), *keys)
        if new_tags:
            pipe.hmget(prefix + self._transport.unacked_key, new_tags)
        replies = pipe.execute(raise_on_error=False)
        round_trips += 1

        waiting: dict[str, int] = {}
        heads: dict[str, str] = {}
        per_queue = steps + 1
        for index, queue in enumerate(queue_list):
            lengths = replies[index * per_queue : index * per_queue + steps]
            waiting[queue] = sum(n for n in lengths if isinstance(n, int))
            head = replies[index * per_queue + steps]
            if isinstance(head, bytes) and head:
                heads[queue] = head.decode("utf-8", "replace")
            elif isinstance(head, redis.exceptions.NoScriptError):
                self._head_sha = None  # Redis restarted: loaded again at the next read
        new_malformed = 0
        if new_tags:
            values = replies[-1] if isinstance(replies[-1], list) else []
            new_malformed = self._remember_unacked(new_tags, values, bound_queues)
        self._forget_unacked(tags)
        unacked = tuple(task for task in self._unacked_cache.values() if task is not None)
        return BrokerReading(
            queues=frozenset(queues) | {task.queue for task in unacked},
            waiting_in_lists=waiting,
            unacked=unacked,
            new_malformed=new_malformed,
            round_trips=round_trips,
            read_at=time.time(),
            bound_queues=bound_queues,
            heads=heads,
        )

    def _discover_binding_keys(self) -> int:
        """Find kombu binding tables with SCAN (cursor-based, never KEYS)."""
        prefix = self._transport.global_keyprefix + BINDING_PREFIX
        keys: set[str] = set()
        cursor: int = 0
        round_trips = 0
        while True:
            cursor, batch = self._client.scan(
                cursor=cursor, match=glob_escape(prefix) + "*", count=1000
            )
            round_trips += 1
            for raw in batch:
                key = as_text(raw)
                if not is_internal_exchange(key[len(prefix) :]):
                    keys.add(key)
            if cursor == 0:
                break
        default_table = prefix + "celery"
        keys.add(default_table)
        self._binding_keys = sorted(keys)
        return round_trips

    def _parse_bindings(self, replies: list[Any]) -> dict[tuple[str, str], tuple[str, ...]]:
        """Map (exchange, routing key) to the queues bound to it."""
        prefix_len = len(self._transport.global_keyprefix + BINDING_PREFIX)
        sep = self._transport.sep
        bound: dict[tuple[str, str], list[str]] = {}
        for key, members in zip(self._binding_keys, replies, strict=True):
            if not isinstance(members, set | list):
                continue
            exchange = key[prefix_len:]
            for raw in members:
                member = as_text(raw)
                parts = member.split(sep)
                if len(parts) != 3 or not parts[2]:
                    continue
                routing_key, _pattern, queue = parts
                bound.setdefault((exchange, routing_key), []).append(queue)
        return {k: tuple(sorted(set(v))) for k, v in bound.items()}

    def _remember_unacked(
        self,
        tags: list[bytes],
        values: list[Any],
        bound_queues: Mapping[tuple[str, str], tuple[str, ...]],
    ) -> int:
        malformed = 0
        for tag, value in zip(tags, values, strict=False):
            if value is None:
                continue  # acknowledged between HKEYS and HMGET
            try:
                message = parse_unacked_entry(
                    value, self._limits, with_body=self._on_message is not None
                )
            except MalformedMessage as exc:
                malformed += 1
                self._unacked_cache[tag] = None
                self._skips.skipped(f"entry {tag[:64]!r}: {exc}")
                continue
            if self._on_message is not None:
                self._on_message(message)
            queue = resolve_queue(message.exchange, message.routing_key, bound_queues)
            self._unacked_cache[tag] = UnackedTask(
                delivery_tag=tag.decode("utf-8", "replace"),
                task_id=message.task_id,
                name=message.name,
                queue=queue,
                eta=message.eta,
            )
        return malformed

    def _forget_unacked(self, current_tags: list[bytes]) -> None:
        current = set(current_tags)
        for tag in [t for t in self._unacked_cache if t not in current]:
            del self._unacked_cache[tag]


class QueuePager:
    """Reads one page of a queue's waiting messages, next to run first, in O(limit).

    Workers pop the priority sub-lists in the order of `priority_steps`, and each list
    from its right end (kombu LPUSHes, then RPOPs), so the next message to run is the
    last element of the first non-empty sub-list.
    """

    def __init__(self, client: redis.Redis, transport: TransportOptions) -> None:
        self._client = client
        self._transport = transport

    def page(self, queue: str, offset: int, limit: int) -> tuple[list[bytes], int]:
        """Up to `limit` raw messages starting `offset` places from the head, and the total."""
        keys = self._transport.queue_keys(queue)
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        lengths = [n if isinstance(n, int) else 0 for n in pipe.execute(raise_on_error=False)]
        total = sum(lengths)
        if limit <= 0 or offset >= total:
            return [], total
        ranges: list[tuple[str, int, int]] = []
        skip, wanted = offset, limit
        for key, length in zip(keys, lengths, strict=True):
            if wanted <= 0:
                break
            if skip >= length:
                skip -= length
                continue
            take = min(wanted, length - skip)
            # From the right end: positions skip .. skip+take-1 counted from the head.
            ranges.append((key, -(skip + take), -(skip + 1)))
            wanted -= take
            skip = 0
        pipe = self._client.pipeline(transaction=False)
        for key, start, stop in ranges:
            pipe.lrange(key, start, stop)
        messages: list[bytes] = []
        for chunk in pipe.execute(raise_on_error=False):
            if isinstance(chunk, list):
                messages.extend(reversed(chunk))
        return messages, total
