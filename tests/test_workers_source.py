"""One round of inspect broadcasts against a real redis-server and a real worker.

A round lasts --inspect-timeout when nobody answers (not a second more: kombu's
pending BRPOP is short once the server takes fractional timeouts), ends early once
every expected worker answered, and all rounds share one reply queue: kombu keeps a
binding in Redis for each reply queue ever declared.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from exporter.sources.workers import REPLY_POLL_SECONDS, WorkersSource, make_inspect_app
from testkit.celery_worker import CeleryWorker
from testkit.redis_server import RedisServer

TIMEOUT = 0.3
#: Scheduling slack on a busy 2-core machine; kombu's old 1 s wait would exceed it.
SLACK = 0.35
REPLY_BINDINGS = "_kombu.binding.reply.celery.pidbox"


def test_a_round_nobody_answers_lasts_the_inspect_timeout(redis_server: RedisServer) -> None:
    app = make_inspect_app(redis_server.url, {})
    source = WorkersSource(app, TIMEOUT)
    try:
        first = source.read()  # learns the server's version
        rounds = [source.read() for _ in range(5)]
    finally:
        app.close()
    assert first.replies == {} and all(r.replies == {} for r in rounds)
    durations = [round(r.duration, 3) for r in rounds]
    print(f"rounds with no worker: first {first.duration:.3f} s, then {durations} s")
    assert all(TIMEOUT <= d <= TIMEOUT + REPLY_POLL_SECONDS + SLACK for d in durations), durations
    assert redis_server.client().scard(REPLY_BINDINGS) == 1  # one reply queue for every round


def test_a_round_ends_once_the_expected_worker_answered_everything(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    worker = celery_worker_factory(redis_server.url, queues=("celery",), concurrency=2)
    app = make_inspect_app(redis_server.url, {})
    source = WorkersSource(app, 5.0)
    try:
        rounds = [source.read(expected_workers=[worker.hostname]) for _ in range(3)]
    finally:
        app.close()
    for reading in rounds:
        assert set(reading.replies) == {worker.hostname}
        assert reading.replies[worker.hostname].concurrency == 2
        assert reading.replies[worker.hostname].complete
    durations = [round(r.duration, 3) for r in rounds]
    print(f"rounds answered by one worker: {durations} s")
    assert max(durations) < 1.0, durations  # far under the 5 s deadline
    assert redis_server.client().scard(REPLY_BINDINGS) == 1


def test_items_of_the_reply_queue_that_are_no_replies_cost_only_themselves(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """Anyone with access to Redis can push to the (now stable) reply queue: each bad item
    is counted and skipped, and the worker's real answers still make a complete reply."""
    worker = celery_worker_factory(redis_server.url, queues=("celery",), concurrency=1)
    app = make_inspect_app(redis_server.url, {})
    source = WorkersSource(app, 5.0)
    client = redis_server.client()
    try:
        source.read(expected_workers=[worker.hostname])  # declares the reply queue
        [member] = client.smembers(REPLY_BINDINGS)
        assert isinstance(member, bytes)
        reply_queue = member.split(b"\x06\x16")[-1]
        envelope = {"body": "e30=", "content-encoding": "utf-8", "headers": {},
                    "properties": {"body_encoding": "base64", "delivery_tag": "t"}}
        poison = [
            b"not json",
            json.dumps({"body": "x"}).encode(),  # no properties
            json.dumps({**envelope, "content-type": "application/x-python-serialize"}).encode(),
            json.dumps({**envelope, "content-type": "application/json",
                        "body": "bm90IGpzb24="}).encode(),  # "not json"
            json.dumps({**envelope, "content-type": "application/json",
                        "headers": ["ticket"]}).encode(),
            json.dumps({**envelope, "content-type": "application/json",
                        "headers": {"ticket": ["a"]}}).encode(),
        ]
        client.rpush(reply_queue, *poison)
        reading = source.read(expected_workers=[worker.hostname])
    finally:
        app.close()
    assert reading.replies[worker.hostname].complete
    assert reading.replies[worker.hostname].concurrency == 1
    # Three items no kombu message, two bodies it may not or cannot decode; the reply with
    # a ticket of the wrong type decodes and is ignored like any stranger's reply.
    assert reading.malformed == 5
    assert client.llen(reply_queue) == 0
