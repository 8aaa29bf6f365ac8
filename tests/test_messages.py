"""Celery task messages as real Celery/kombu write them to Redis, decoded by the exporter.

Every message here is produced by a real Celery app publishing to a private
redis-server, then read back raw with LRANGE / HGET, exactly as the exporter sees it.
"""

from __future__ import annotations

import base64
import bz2
import pickle
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import msgpack
import orjson
import pytest
import redis
import yaml
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.entity import Exchange, Queue

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.events import Event, decode_event_message
from exporter.protocol.keys import TransportOptions
from exporter.protocol.messages import (
    TaskMessage,
    load_envelope,
    parse_task_message,
    parse_unacked_entry,
)
from exporter.sources.broker import BrokerSource
from testkit.celery_worker import CeleryWorker
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

TRANSPORT = TransportOptions()
ARGS = (2, 40, "zwölf ✓")
KWARGS: dict[str, Any] = {"source": "src-42", "rows": [1, 2, {"nested": None}], "ratio": 0.25}
CONTENT_TYPE_OF = {
    "json": "application/json",
    "msgpack": "application/x-msgpack",
    "yaml": "application/x-yaml",
}


# -- helpers -----------------------------------------------------------------------


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A raw client on the private redis-server, to read what Celery wrote."""
    client: redis.Redis = redis_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_app(redis_server: RedisServer) -> Iterator[Callable[..., Celery]]:
    """Return ``make(protocol=2, **conf)``: a fresh real Celery app on the private broker."""
    apps: list[Celery] = []

    def make(protocol: int = 2, **conf: Any) -> Celery:
        app = Celery(f"producer{len(apps)}", broker=redis_server.url, set_as_current=False)
        app.conf.task_protocol = protocol
        app.conf.update(conf)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            app.close()


def raw_messages(client: redis.Redis, queue: str) -> list[bytes]:
    """Every raw message waiting in a queue, over all of its priority sub-lists."""
    found: list[bytes] = []
    for key in TRANSPORT.queue_keys(queue):
        found.extend(cast(list[bytes], client.lrange(key, 0, -1)))
    return found


def only_message(client: redis.Redis, queue: str) -> bytes:
    """The one raw message of a queue (fails if there is not exactly one)."""
    found = raw_messages(client, queue)
    assert len(found) == 1, f"expected one message in {queue!r}, found {len(found)}"
    return found[0]


def parse_raw(raw: bytes, *, with_body: bool = True) -> TaskMessage:
    """What the exporter reads from one raw list item."""
    return parse_task_message(load_envelope(raw), with_body=with_body)


def malformed_or_value(func: Callable[[Any], Any], arg: Any) -> Any:
    """Call func; MalformedMessage is the one allowed failure (anything else propagates)."""
    try:
        return func(arg)
    except MalformedMessage:
        return None


# -- protocols and serializers -------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 1])
@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml"])
def test_task_message_decodes_args_and_kwargs(
    make_app: Callable[..., Celery],
    broker: redis.Redis,
    protocol: int,
    serializer: str,
) -> None:
    """Id, name, args and kwargs of a real message equal what was sent, per serializer."""
    app = make_app(protocol=protocol)
    result = app.send_task(
        "tests.ingest", args=ARGS, kwargs=KWARGS, queue="jobs", serializer=serializer
    )
    raw = only_message(broker, "jobs")
    envelope = load_envelope(raw)
    assert envelope["content-type"] == CONTENT_TYPE_OF[serializer]

    message = parse_task_message(envelope, with_body=True)

    assert message.protocol == protocol
    assert message.task_id == result.id
    assert message.name == "tests.ingest"
    assert message.args == list(ARGS)
    assert message.kwargs == KWARGS
    assert message.body_error is None
    assert message.eta is None
    assert message.retries == 0
    assert message.routing_key == "jobs"


@pytest.mark.parametrize("protocol", [2, 1])
def test_message_without_body_keeps_args_unread(
    make_app: Callable[..., Celery], broker: redis.Redis, protocol: int
) -> None:
    """Without with_body, protocol 2 leaves args unread; protocol 1 must read its body."""
    app = make_app(protocol=protocol)
    result = app.send_task("tests.add", args=(7, 8), queue="lazy")
    message = parse_raw(only_message(broker, "lazy"), with_body=False)
    assert message.task_id == result.id
    assert message.name == "tests.add"
    if protocol == 2:
        assert message.args is None
    else:
        assert message.args == [7, 8]


@pytest.mark.parametrize("protocol", [2, 1])
@pytest.mark.parametrize(
    ("compression", "header", "decompress"),
    [
        ("zlib", "application/x-gzip", zlib.decompress),
        ("bzip2", "application/x-bz2", bz2.decompress),
    ],
)
def test_compressed_bodies_decode(
    make_app: Callable[..., Celery],
    broker: redis.Redis,
    protocol: int,
    compression: str,
    header: str,
    decompress: Callable[[bytes], bytes],
) -> None:
    """Bodies compressed by Celery decode to the args and kwargs that were sent."""
    app = make_app(protocol=protocol)
    result = app.send_task(
        "tests.ingest", args=ARGS, kwargs=KWARGS, queue="packed", compression=compression
    )
    envelope = load_envelope(only_message(broker, "packed"))
    # The body really is compressed (the decoding below is not a no-op).
    assert envelope["headers"]["compression"] == header
    compressed = base64.b64decode(envelope["body"])
    assert orjson.loads(decompress(compressed))

    message = parse_task_message(envelope, with_body=True)

    assert message.task_id == result.id
    assert message.args == list(ARGS)
    assert message.kwargs == KWARGS
    assert message.body_error is None


class TouchOnUnpickle:
    """An argument whose unpickling creates a file: proof of whether a body was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_pickle_body_is_never_unpickled(
    make_app: Callable[..., Celery], broker: redis.Redis, tmp_path: Path
) -> None:
    """A pickle message is read from its headers; the body is refused, never loaded."""
    marker = tmp_path / "unpickled.marker"
    app = make_app(protocol=2)
    result = app.send_task(
        "tests.add", args=(TouchOnUnpickle(str(marker)),), queue="pickled", serializer="pickle"
    )
    raw = only_message(broker, "pickled")
    envelope = load_envelope(raw)
    assert envelope["content-type"] == "application/x-python-serialize"

    message = parse_task_message(envelope, with_body=True)
    entry = parse_unacked_entry(orjson.dumps([envelope, "", "pickled"]))
    events = malformed_or_value(decode_event_message, raw)

    assert message.task_id == result.id
    assert message.name == "tests.add"
    assert message.args is None
    assert message.kwargs is None
    assert message.body_error is not None
    assert "pickle" in message.body_error
    assert entry.task_id == result.id
    assert events is None
    assert not marker.exists(), "the exporter unpickled a message body"

    # Control: the same body, unpickled, does create the marker, so the check above bites.
    loaded = pickle.loads(base64.b64decode(envelope["body"]))
    loaded[0][0].close()
    assert marker.exists()


def test_pickle_protocol1_is_refused_without_unpickling(
    make_app: Callable[..., Celery], broker: redis.Redis, tmp_path: Path
) -> None:
    """Protocol 1 keeps the task id in a pickle body: the message is refused as malformed."""
    marker = tmp_path / "unpickled.marker"
    app = make_app(protocol=1)
    app.send_task(
        "tests.add", args=(TouchOnUnpickle(str(marker)),), queue="pickled1", serializer="pickle"
    )
    raw = only_message(broker, "pickled1")
    with pytest.raises(MalformedMessage, match="pickle"):
        parse_raw(raw, with_body=True)
    assert not marker.exists()


# -- eta, priority, routing ------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 1])
def test_countdown_is_parsed_to_epoch_seconds(
    make_app: Callable[..., Celery], broker: redis.Redis, protocol: int
) -> None:
    """A countdown becomes an ETA the exporter reads as now + countdown (±1 s)."""
    app = make_app(protocol=protocol)
    before = time.time()
    app.send_task("tests.add", args=(1, 1), queue="later", countdown=300)
    after = time.time()
    message = parse_raw(only_message(broker, "later"))
    assert message.eta is not None
    assert before + 300 - 1 <= message.eta <= after + 300 + 1


@pytest.mark.parametrize("protocol", [2, 1])
@pytest.mark.parametrize("offset_hours", [0, 2, -7])
def test_explicit_eta_is_parsed_exactly(
    make_app: Callable[..., Celery],
    broker: redis.Redis,
    protocol: int,
    offset_hours: int,
) -> None:
    """An aware ETA in any time zone is read back as the same instant."""
    app = make_app(protocol=protocol)
    zone = timezone(timedelta(hours=offset_hours))
    eta = (datetime.now(UTC) + timedelta(hours=3, seconds=17)).astimezone(zone)
    app.send_task("tests.add", args=(1, 2), queue="scheduled", eta=eta)
    message = parse_raw(only_message(broker, "scheduled"))
    assert message.eta == pytest.approx(eta.timestamp(), abs=1e-3)


@pytest.mark.parametrize("priority", [0, 3, 5, 9])
def test_priority_and_priority_sub_list(
    make_app: Callable[..., Celery], broker: redis.Redis, priority: int
) -> None:
    """The priority comes from the properties; the message sits in its step's sub-list."""
    app = make_app()
    result = app.send_task("tests.add", args=(1, 2), queue="prio", priority=priority)
    step = max(s for s in TRANSPORT.priority_steps if s <= priority)
    items = cast(list[bytes], broker.lrange(TRANSPORT.queue_key("prio", step), 0, -1))
    assert len(items) == 1
    assert sum(broker.llen(k) for k in TRANSPORT.queue_keys("prio")) == 1
    message = parse_raw(items[0])
    assert message.task_id == result.id
    assert message.priority == priority


def test_exchange_and_routing_key_from_delivery_info(
    make_app: Callable[..., Celery], broker: redis.Redis
) -> None:
    """A task routed through a named exchange carries that exchange and routing key."""
    exchange = Exchange("jobs-exchange", type="direct")  # type: ignore[no-untyped-call]
    queue = Queue("routed", exchange, routing_key="jobs.routed.key")  # type: ignore[no-untyped-call]
    app = make_app(task_queues=[queue])
    result = app.send_task(
        "tests.add",
        args=(1, 2),
        queue="routed",
        exchange="jobs-exchange",
        routing_key="jobs.routed.key",
    )
    message = parse_raw(only_message(broker, "routed"))
    assert message.task_id == result.id
    assert message.exchange == "jobs-exchange"
    assert message.routing_key == "jobs.routed.key"

    # Explicit values (as in the unacked hash) win over the delivery info.
    envelope = load_envelope(only_message(broker, "routed"))
    overridden = parse_task_message(envelope, exchange="other", routing_key="rk")
    assert (overridden.exchange, overridden.routing_key) == ("other", "rk")


def test_retries_header_is_read(
    make_app: Callable[..., Celery], broker: redis.Redis
) -> None:
    """The retries count of a re-published task is read from its headers."""
    app = make_app()
    result = app.send_task("tests.add", args=(1, 2), queue="again", retries=2)
    message = parse_raw(only_message(broker, "again"))
    assert message.task_id == result.id
    assert message.retries == 2


# -- the unacked hash ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_unacked_entry_of_a_real_worker(
    redis_server: RedisServer,
    celery_app: Celery,
    celery_worker_factory: Callable[..., CeleryWorker],
    broker: redis.Redis,
) -> None:
    """A worker holding an ETA task keeps it in `unacked`; the entry parses to that task."""
    celery_worker_factory(redis_server.url, queues=["celery"], concurrency=1)
    before = time.time()
    result = celery_app.send_task("tests.add", args=(4, 5), queue="celery", countdown=300)
    after = time.time()

    assert wait_until(lambda: broker.hlen(TRANSPORT.unacked_key) == 1, timeout=30)
    assert broker.llen("celery") == 0
    (tag,) = cast(list[bytes], broker.hkeys(TRANSPORT.unacked_key))
    raw = broker.hget(TRANSPORT.unacked_key, tag)
    assert isinstance(raw, bytes)

    message = parse_unacked_entry(raw)

    _, stored_exchange, stored_routing_key = orjson.loads(raw)
    assert message.task_id == result.id
    assert message.name == "tests.add"
    assert message.eta is not None
    assert before + 300 - 1 <= message.eta <= after + 300 + 1
    assert message.exchange == stored_exchange
    assert message.routing_key == stored_routing_key == "celery"

    reading = BrokerSource(broker, TRANSPORT, configured_queues=["celery"]).read()
    assert [(t.task_id, t.name, t.queue) for t in reading.unacked] == [
        (result.id, "tests.add", "celery")
    ]
    assert reading.unacked[0].delivery_tag == tag.decode()
    assert reading.new_malformed == 0


# -- malformed input -----------------------------------------------------------------


def _envelope(**overrides: Any) -> dict[str, Any]:
    body = base64.b64encode(orjson.dumps([[1], {}, {}])).decode()
    envelope: dict[str, Any] = {
        "body": body,
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "tests.add", "id": "abc"},
        "properties": {"body_encoding": "base64"},
    }
    envelope.update(overrides)
    return envelope


def test_wellformed_synthetic_envelope_parses() -> None:
    """Control for the malformed cases below: the unmodified envelope is accepted."""
    message = parse_unacked_entry(orjson.dumps([_envelope(), "ex", "rk"]))
    assert (message.task_id, message.name, message.exchange, message.routing_key) == (
        "abc", "tests.add", "ex", "rk",
    )
    assert parse_task_message(_envelope(), with_body=True).args == [1]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"{}",
        b"[]",
        b"null",
        b"[1, 2, 3]",
        b'["message", "ex", "rk"]',
        orjson.dumps([_envelope(), "ex"]),
        orjson.dumps([_envelope(), "ex", "rk", "extra"]),
        orjson.dumps({"message": _envelope()}),
        # Protocol 1 shape without a task id and name.
        orjson.dumps([_envelope(headers={}), "ex", "rk"]),
        # Protocol 1 shape whose body is not base64.
        orjson.dumps([_envelope(headers={}, body="abc"), "ex", "rk"]),
        # Protocol 1 shape with an unsupported content type.
        orjson.dumps([_envelope(headers={}, **{"content-type": "application/x-foo"}), "", ""]),
        # Unsupported compression.
        orjson.dumps([_envelope(headers={"compression": "application/x-brotli"}), "", ""]),
        # An ETA that is not a date.
        orjson.dumps([_envelope(headers={"task": "t", "id": "i", "eta": "tomorrow"}), "", ""]),
        orjson.dumps([_envelope(headers={"task": "t", "id": "i", "eta": [1]}), "", ""]),
    ],
)
def test_malformed_unacked_entries_raise_malformed(raw: bytes) -> None:
    """Every way an unacked entry can be wrong raises MalformedMessage, nothing else."""
    with pytest.raises(MalformedMessage):
        parse_unacked_entry(raw)


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        (_envelope(body="abc"), "base64"),
        (_envelope(body=base64.b64encode(b"{not json").decode()), "does not decode"),
        (_envelope(**{"content-type": "application/x-foo"}), "unsupported content type"),
        (_envelope(headers={"task": "t", "id": "i", "compression": "zstd"}), "compression"),
        (
            _envelope(headers={"task": "t", "id": "i", "compression": "zlib"}),
            "cannot decompress",
        ),
        (_envelope(body=None), "missing"),
        (_envelope(body=base64.b64encode(orjson.dumps({"a": 1})).decode()), "not [args"),
    ],
)
def test_bad_protocol2_body_is_reported_not_raised(envelope: dict[str, Any], expected: str) -> None:
    """A protocol 2 message with a bad body still gives its id; body_error says why."""
    envelope["headers"] = {**envelope["headers"], "task": "tests.add", "id": "the-id"}
    message = parse_task_message(envelope, with_body=True)
    assert message.task_id == "the-id"
    assert message.args is None
    assert message.body_error is not None
    assert expected in message.body_error


@pytest.mark.parametrize("raw", [b"", b"nope", b"[1]", b"1", b'"text"', b"\x80"])
def test_load_envelope_rejects_non_objects(raw: bytes) -> None:
    """Only a JSON object is an envelope."""
    with pytest.raises(MalformedMessage):
        load_envelope(raw)


# -- fuzzing -------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/x-json",
        "text/json",
        "application/x-msgpack",
        "application/msgpack",
        "application/x-yaml",
        "application/yaml",
        "text/yaml",
        "application/x-python-serialize",
        "application/python-pickle",
        "application/data",
        "",
    ]
)
COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "application/x-gzip": zlib.compress,
    "zlib": zlib.compress,
    "application/x-bz2": bz2.compress,
    "bzip2": bz2.compress,
}
ISO_DATES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)
).map(datetime.isoformat)


def _serialize(content_type: str, value: Any) -> bytes:
    if "msgpack" in content_type:
        packed: bytes = msgpack.packb(value)
        return packed
    if "yaml" in content_type:
        return yaml.safe_dump(value).encode()
    return orjson.dumps(value)


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """Envelopes shaped like kombu's, with every field possibly wrong."""
    content_type = draw(CONTENT_TYPES | JSON_SCALARS)
    compression = draw(st.none() | st.sampled_from([*COMPRESSIONS, "lzma", "br"]) | JSON_SCALARS)
    kind = draw(st.sampled_from(["valid", "bytes", "json"]))
    if kind == "valid":
        value = draw(JSON_VALUES)
        data = _serialize(content_type if isinstance(content_type, str) else "", value)
        if isinstance(compression, str) and compression in COMPRESSIONS:
            data = COMPRESSIONS[compression](data)
        body: Any = base64.b64encode(data).decode()
    elif kind == "bytes":
        body = base64.b64encode(draw(st.binary(max_size=64))).decode()
    else:
        body = draw(JSON_VALUES)
    headers: Any = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "task": JSON_SCALARS,
                "id": JSON_SCALARS,
                "eta": ISO_DATES | JSON_SCALARS,
                "retries": JSON_SCALARS,
            },
        )
        | JSON_VALUES
    )
    if isinstance(headers, dict) and compression is not None:
        headers["compression"] = compression
    properties: Any = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "body_encoding": st.sampled_from(["base64", "utf-8"]) | JSON_SCALARS,
                "priority": JSON_SCALARS,
                "delivery_info": st.fixed_dictionaries(
                    {}, optional={"exchange": JSON_SCALARS, "routing_key": JSON_SCALARS}
                )
                | JSON_SCALARS,
            },
        )
        | JSON_VALUES
    )
    envelope: dict[str, Any] = {"body": body, "content-type": content_type}
    envelope["headers"] = headers
    envelope["properties"] = properties
    return draw(st.just(envelope) | JSON_VALUES)


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no example database written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)


def _parse_with_body(envelope: dict[str, Any]) -> TaskMessage:
    return parse_task_message(envelope, with_body=True)


@FUZZ
@given(st.binary(max_size=256))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    """Arbitrary bytes: each decoder raises MalformedMessage or returns a value."""
    malformed_or_value(parse_unacked_entry, raw)
    malformed_or_value(load_envelope, raw)
    malformed_or_value(decode_event_message, raw)


@FUZZ
@given(envelopes(), JSON_SCALARS, JSON_SCALARS)
def test_fuzz_envelope_structures(envelope: Any, exchange: Any, routing_key: Any) -> None:
    """JSON-ish envelopes: only MalformedMessage, and successes are well typed."""
    encoded = orjson.dumps(envelope)
    entry = malformed_or_value(parse_unacked_entry, orjson.dumps([envelope, exchange, routing_key]))
    if entry is not None:
        assert isinstance(entry, TaskMessage)
        assert isinstance(entry.task_id, str)
        assert entry.eta is None or isinstance(entry.eta, float)
        assert entry.priority is None or isinstance(entry.priority, int)
    loaded = malformed_or_value(load_envelope, encoded)
    if loaded is not None:
        assert loaded == envelope
        for parse in (parse_task_message, _parse_with_body):
            message = malformed_or_value(parse, loaded)
            assert message is None or isinstance(message.task_id, str)
    events = malformed_or_value(decode_event_message, encoded)
    if events is not None:
        assert isinstance(events, list)
        assert all(isinstance(e, Event) and isinstance(e.type, str) for e in events)


@FUZZ
@given(JSON_VALUES)
def test_fuzz_event_bodies(value: Any) -> None:
    """Any JSON value as an event body (plain and base64): a Celery event list or Malformed."""
    for envelope in (
        {"body": value},
        {"body": orjson.dumps(value).decode()},
        {
            "body": base64.b64encode(orjson.dumps(value)).decode(),
            "properties": {"body_encoding": "base64"},
        },
    ):
        events = malformed_or_value(decode_event_message, orjson.dumps(envelope))
        if events is not None:
            assert all(isinstance(e, Event) and isinstance(e.type, str) for e in events)
