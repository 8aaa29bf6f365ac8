"""The real EventStream against a private redis-server, fed with REAL captured payloads."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
import pytest
import redis
from celery import Celery

from exporter.core.taskstats import TaskStats
from exporter.core.tracker import TaskTracker
from exporter.model.jobs import RetentionLimits
from exporter.protocol.events import Event as DecodedEvent
from exporter.protocol.keys import TransportOptions
from exporter.sources.events import EventStream
from exporter.sources.redis import connect, parse_endpoint
from testkit.payloads import decode_body, load_payloads
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

Event = dict[str, Any]
EVENT_FIELDS = frozenset(DecodedEvent.__struct_fields__)


def decode_independently(data: str) -> list[Event]:
    """Decode one payload with the standard library only (not the exporter's decoder)."""
    return [plain(event) for event in decode_body(data)]


def plain(event: Mapping[str, Any]) -> Event:
    """The fields of an event the exporter reads (those it has), as a plain mapping."""
    return {k: v for k, v in event.items() if k in EVENT_FIELDS and v is not None}


#: (channel, raw payload) pairs exactly as captured from a real worker.
PAYLOAD_LIST = [(p.channel, p.data) for p in load_payloads()]
EXPECTED_EVENTS = [e for _, data in PAYLOAD_LIST for e in decode_independently(data)]


class Collector:
    """A thread-safe handler and state callback for an EventStream."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.bad = 0
        self.batches = 0
        self.states: list[tuple[bool, bool]] = []

    def handle(self, events: list[DecodedEvent], bad: int) -> None:
        with self.lock:
            self.events.extend(plain(msgspec.structs.asdict(e)) for e in events)
            self.bad += bad
            self.batches += 1

    def on_state(self, connected: bool, reconnected: bool) -> None:
        with self.lock:
            self.states.append((connected, reconnected))

    def count(self) -> int:
        with self.lock:
            return len(self.events)

    def seen(self, state: tuple[bool, bool]) -> bool:
        with self.lock:
            return state in self.states


StreamFactory = Callable[..., "tuple[EventStream, redis.Redis]"]


@pytest.fixture
def start_stream(redis_server: RedisServer) -> Iterator[StreamFactory]:
    """Return ``start(handle, on_state, transport=None, db=0)``: a running, subscribed stream.

    Also returns a publisher client on the same server. Everything is stopped afterwards.
    """
    streams: list[EventStream] = []
    clients: list[redis.Redis] = []

    def start(
        handle: Callable[[list[DecodedEvent], int], None],
        on_state: Callable[[bool, bool], None],
        transport: TransportOptions | None = None,
        db: int = 0,
    ) -> tuple[EventStream, redis.Redis]:
        transport = transport or TransportOptions()
        endpoint = parse_endpoint(redis_server.url_for_db(db))
        client = connect(endpoint, transport, socket_timeout=30.0)
        publisher: redis.Redis = redis_server.client(db=db)
        clients.extend([client, publisher])
        stream = EventStream(
            client, transport.event_channel_pattern(endpoint.db), handle, on_state=on_state
        )
        streams.append(stream)
        stream.start()
        assert wait_until(lambda: publisher.pubsub_numpat() >= 1, timeout=10), (
            "the event stream never subscribed"
        )
        return stream, publisher

    try:
        yield start
    finally:
        for stream in streams:
            stream.stop()
        for client in clients:
            client.close()


def publish_all(publisher: redis.Redis, payloads: list[tuple[str, str]]) -> None:
    for channel, data in payloads:
        publisher.publish(channel, data)


def test_receives_every_captured_event_in_order(start_stream: StreamFactory) -> None:
    """Every event of every captured payload reaches the handler, in publication order."""
    collector = Collector()
    _, publisher = start_stream(collector.handle, collector.on_state)
    publish_all(publisher, PAYLOAD_LIST)
    assert wait_until(lambda: collector.count() >= len(EXPECTED_EVENTS), timeout=10)
    assert collector.events == EXPECTED_EVENTS
    assert collector.bad == 0
    assert collector.states == [(True, False)]
    multi = sum(1 for _, data in PAYLOAD_LIST if len(decode_independently(data)) > 1)
    assert multi > 0  # the capture has task.multi batches of several events


def test_repeated_publication_at_volume(start_stream: StreamFactory) -> None:
    """Many payloads published back to back arrive complete (batched reads)."""
    collector = Collector()
    _, publisher = start_stream(collector.handle, collector.on_state)
    rounds = 200
    pipe = publisher.pipeline(transaction=False)
    for _ in range(rounds):
        for channel, data in PAYLOAD_LIST:
            pipe.publish(channel, data)
    pipe.execute()
    total = rounds * len(EXPECTED_EVENTS)
    assert wait_until(lambda: collector.count() >= total, timeout=30)
    assert collector.count() == total
    assert collector.events[: len(EXPECTED_EVENTS)] == EXPECTED_EVENTS
    assert collector.events[-len(EXPECTED_EVENTS):] == EXPECTED_EVENTS
    assert collector.batches < rounds * len(PAYLOAD_LIST)  # several payloads per batch


def test_garbage_payloads_are_counted_undecodable(start_stream: StreamFactory) -> None:
    """Payloads that are not Celery events are counted; the events around them arrive."""
    collector = Collector()
    _, publisher = start_stream(collector.handle, collector.on_state)
    channel, data = PAYLOAD_LIST[1]
    garbage = [
        b"garbage",
        b"{}",
        b"[1, 2]",
        b"\xff\xfe",
        json.dumps({"body": "!!!not base64", "properties": {"body_encoding": "base64"}}).encode(),
        json.dumps({"body": base64.b64encode(b'{"no": "type"}').decode(),
                    "properties": {"body_encoding": "base64"}}).encode(),
        json.dumps({"body": "x", "content-type": "application/x-python-serialize"}).encode(),
    ]
    publisher.publish(channel, data)
    for payload in garbage:
        publisher.publish(channel, payload)
    publisher.publish(channel, data)
    expected = decode_independently(data) * 2
    assert wait_until(
        lambda: collector.count() >= len(expected) and collector.bad >= len(garbage), timeout=10
    )
    assert collector.events == expected
    assert collector.bad == len(garbage)


def test_feeds_a_tracker_like_the_runtime(start_stream: StreamFactory) -> None:
    """Wired as the runtime wires it, the tracker ends with the capture's outcomes."""
    tracker = TaskTracker(
        limits=RetentionLimits(),
        stats=TaskStats(max_task_names=50, runtime_buckets=[1.0], queue_wait_buckets=[1.0]),
    )

    def on_state(connected: bool, reconnected: bool) -> None:
        tracker.mark_stream(connected, reconnected=reconnected)

    _, publisher = start_stream(tracker.apply_batch, on_state)
    publish_all(publisher, PAYLOAD_LIST)
    assert wait_until(lambda: tracker.view().events_received >= len(EXPECTED_EVENTS), timeout=10)
    view = tracker.view()
    assert view.events_received == len(EXPECTED_EVENTS)
    assert view.stream_connected is True
    assert view.stream_reconnects == 0
    finished = sum(1 for e in EXPECTED_EVENTS if e["type"] in ("task-succeeded", "task-failed"))
    assert sum(c + f for c, f in view.retained.values()) == finished


@pytest.mark.timeout(60)
def test_poison_event_does_not_stop_the_stream(start_stream: StreamFactory) -> None:
    """An event the tracker cannot use (its type is a list) must not end the reader."""
    tracker = TaskTracker(
        limits=RetentionLimits(),
        stats=TaskStats(max_task_names=50, runtime_buckets=[1.0], queue_wait_buckets=[1.0]),
    )
    _, publisher = start_stream(tracker.apply_batch, lambda connected, reconnected: None)
    channel = "/0.celeryev/task.multi"
    publisher.publish(channel, json.dumps({"body": {"type": ["task-sent"]}}))
    assert wait_until(lambda: tracker.view().events_undecodable >= 1, timeout=10)
    publish_all(publisher, PAYLOAD_LIST)
    assert wait_until(
        lambda: tracker.view().events_received >= len(EXPECTED_EVENTS), timeout=10
    ), "the event stream stopped reading after one malformed event"


@pytest.mark.timeout(90)
def test_reconnects_after_the_server_restarts(
    redis_server: RedisServer, start_stream: StreamFactory
) -> None:
    """Killed and restarted, Redis is subscribed to again and new events arrive."""
    collector = Collector()
    tracker = TaskTracker(
        limits=RetentionLimits(),
        stats=TaskStats(max_task_names=50, runtime_buckets=[1.0], queue_wait_buckets=[1.0]),
    )

    def on_state(connected: bool, reconnected: bool) -> None:
        collector.on_state(connected, reconnected)
        tracker.mark_stream(connected, reconnected=reconnected)

    _, publisher = start_stream(collector.handle, on_state)
    publish_all(publisher, PAYLOAD_LIST[:3])
    first = [e for _, d in PAYLOAD_LIST[:3] for e in decode_independently(d)]
    assert wait_until(lambda: collector.count() >= len(first), timeout=10)

    killed_at = time.monotonic()
    redis_server.kill()
    assert wait_until(lambda: collector.seen((False, False)), timeout=15)
    assert tracker.view().stream_connected is False
    # Counted while it lasts: the ongoing outage reaches a full second before Redis is back.
    assert wait_until(lambda: tracker.view().stream_disconnected_seconds >= 1.0, timeout=10)
    redis_server.start()

    assert wait_until(lambda: collector.seen((True, True)), timeout=30), collector.states
    down_for = time.monotonic() - killed_at
    fresh: redis.Redis = redis_server.client()
    try:
        assert wait_until(lambda: fresh.pubsub_numpat() >= 1, timeout=10)
        publish_all(fresh, PAYLOAD_LIST[3:])
    finally:
        fresh.close()
    assert wait_until(lambda: collector.count() >= len(EXPECTED_EVENTS), timeout=10)

    assert collector.events == EXPECTED_EVENTS
    assert collector.states[0] == (True, False)
    assert collector.states[-1] == (True, True)
    assert set(collector.states[1:-1]) == {(False, False)}
    view = tracker.view()
    assert view.stream_connected is True
    assert view.stream_reconnects == 1
    assert 1.0 <= view.stream_disconnected_seconds <= down_for
    # Not a race: nothing is awaited. Time must pass to show the total no longer grows
    # once subscribed again (it is frozen, so any delay gives the same answer).
    time.sleep(0.2)
    assert tracker.view().stream_disconnected_seconds == view.stream_disconnected_seconds


@pytest.mark.parametrize(
    ("prefix", "db"), [("tenant-a:", 3), ("app/", 0), ("", 5)], ids=["tenant", "slash", "none"]
)
def test_global_keyprefix_subscribes_to_the_prefixed_channel(
    redis_server: RedisServer, start_stream: StreamFactory, prefix: str, db: int
) -> None:
    """With a global_keyprefix, exactly the channel a real Celery app publishes on is read."""
    collector = Collector()
    transport = TransportOptions(global_keyprefix=prefix)
    _, publisher = start_stream(collector.handle, collector.on_state, transport=transport, db=db)
    _, data = PAYLOAD_LIST[0]  # a real worker-online payload

    # Neighbours that must not be read: no prefix / other prefix / other database.
    right = f"{prefix}/{db}.celeryev/worker.online"
    wrong = {
        f"/{db}.celeryev/worker.online",
        f"other:/{db}.celeryev/worker.online",
        f"{prefix}/{db + 1}.celeryev/worker.online",
    } - {right}
    for decoy in sorted(wrong):
        publisher.publish(decoy, data)

    app = Celery("prefixed", broker=redis_server.url_for_db(db), set_as_current=False)
    app.conf.broker_transport_options = transport.as_kombu_options()
    try:
        with app.connection_for_write() as connection:
            dispatcher = app.events.Dispatcher(connection, hostname="prefixed@host", enabled=True)
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=7)
            dispatcher.close()
    finally:
        app.close()

    def heartbeat_read() -> bool:
        with collector.lock:
            return any(e.get("type") == "worker-heartbeat" for e in collector.events)

    # Every decoy was published before the heartbeat, and Redis delivers to a subscriber
    # in publication order: once the heartbeat is read, any decoy it matched was read too.
    assert wait_until(heartbeat_read, timeout=10)
    assert [(e["type"], e["hostname"], e["processed"]) for e in collector.events] == [
        ("worker-heartbeat", "prefixed@host", 7)
    ]
