"""Fill a private Redis the way a Celery app on the Redis transport leaves it.

Queues are lists (a tenth of the messages of every tenth queue in the priority-3
sub-list), bound in `_kombu.binding.celery`; Celery's internal binding tables exist
too; the `unacked` hash and `unacked_index` sorted set hold messages taken by
workers, as kombu writes them: JSON `[message, exchange, routing_key]`.
"""

from __future__ import annotations

import json
import time
import uuid

import redis

from testkit.messages import task_message

SEP = "\x06\x16"
BINDING_TABLE = "_kombu.binding.celery"
#: Tables Celery itself creates (events, remote control): the exporter must skip them.
INTERNAL_TABLES = (
    "_kombu.binding.celeryev",
    "_kombu.binding.celery.pidbox",
    "_kombu.binding.reply.celery.pidbox",
)
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
#: Small messages: only LLEN is ever read from the queue lists.
SMALL_MESSAGE = b'{"m":"0123456789"}'
PUSH_CHUNK = 1000
COMMANDS_PER_PIPELINE = 100


def queue_name(index: int) -> str:
    """The name of queue `index`."""
    return f"queue.{index:04d}"


def task_name(index: int) -> str:
    """The task routed to queue `index`."""
    return f"app.tasks.task_{index:04d}"


def fill_queues(client: redis.Redis, queues: int, per_queue: int) -> int:
    """Bind `queues` queues and LPUSH `per_queue` small messages into each; returns the total."""
    pipe = client.pipeline(transaction=False)
    pending = 0
    total = 0
    pipe.sadd(INTERNAL_TABLES[0], f"worker.#{SEP}{SEP}celeryev.receiver")
    pipe.sadd(INTERNAL_TABLES[1], f"{SEP}{SEP}celery@bench.celery.pidbox")
    pipe.sadd(INTERNAL_TABLES[2], f"reply{SEP}{SEP}reply.celery.pidbox")
    for index in range(queues):
        queue = queue_name(index)
        pipe.sadd(BINDING_TABLE, f"{queue}{SEP}{SEP}{queue}")
        in_step3 = per_queue // 10 if index % 10 == 0 else 0
        for key, count in ((queue, per_queue - in_step3), (f"{queue}{SEP}3", in_step3)):
            for start in range(0, count, PUSH_CHUNK):
                pipe.lpush(key, *[SMALL_MESSAGE] * min(PUSH_CHUNK, count - start))
                pending += 1
                if pending >= COMMANDS_PER_PIPELINE:
                    pipe.execute()
                    pending = 0
        total += per_queue
    pipe.execute()
    return total


def unacked_entry(task: str, queue: str, *, eta: float | None) -> tuple[str, bytes]:
    """A (delivery tag, hash value) pair like kombu's `unacked` hash holds (protocol 2)."""
    tag = str(uuid.uuid4())
    message = task_message(task, queue, args=(7, 35), eta=eta, delivery_tag=tag)
    return tag, json.dumps([message, "", queue]).encode()


def add_unacked(client: redis.Redis, count: int, queues: int, *, start: int = 0) -> list[str]:
    """Add `count` unacked entries (one in five with an ETA an hour ahead); returns their tags."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    tags = []
    for number in range(start, start + count):
        index = number % queues
        eta = now + 3600 if number % 5 == 0 else None
        tag, value = unacked_entry(task_name(index), queue_name(index), eta=eta)
        pipe.hset(UNACKED, tag, value)
        pipe.zadd(UNACKED_INDEX, {tag: now})
        tags.append(tag)
    pipe.execute()
    return tags


def ack(client: redis.Redis, tags: list[str]) -> None:
    """Remove entries as kombu does when a worker acknowledges them."""
    if tags:
        pipe = client.pipeline(transaction=False)
        pipe.hdel(UNACKED, *tags)
        pipe.zrem(UNACKED_INDEX, *tags)
        pipe.execute()
