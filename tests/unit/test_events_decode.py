"""The event stream's decoding: the batch fast path gives what the general path gives.

`decode_batch` decodes kombu's usual envelope (a base64 JSON body) itself and sends
any other payload through `decode_event_message`; for every payload both must agree:
the same events, or the payload refused (and counted) by both.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.events import Event, decode_batch, decode_event_message
from exporter.protocol.limits import DEFAULT_LIMITS, InputLimits
from exporter.sources.events import FEED_BYTES, PubSubReplies
from testkit.payloads import load_payloads

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no example database written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)

EVENT = {"type": "task-started", "uuid": "u1", "hostname": "w@h", "timestamp": 1.5}


def reference(payload: bytes, limits: InputLimits = DEFAULT_LIMITS) -> list[Event] | None:
    """The general path alone: the events, or None when it refuses the payload."""
    try:
        return decode_event_message(payload, limits)
    except MalformedMessage:
        return None


def plain(events: list[Event]) -> list[dict[str, Any]]:
    return [msgspec.structs.asdict(e) for e in events]


def assert_same_as_reference(payloads: list[bytes], limits: InputLimits = DEFAULT_LIMITS) -> None:
    expected: list[Event] = []
    refused = 0
    for payload in payloads:
        events = reference(payload, limits)
        if events is None:
            refused += 1
        else:
            expected.extend(events)
    events, undecodable = decode_batch(payloads, limits)
    assert (plain(events), undecodable) == (plain(expected), refused)


def envelope(body: object, *, encoding: object = "base64",
             content_type: object = "application/json", **extra: object) -> bytes:
    document: dict[str, object] = {"body": body, "content-encoding": "utf-8",
                                   "content-type": content_type, "headers": {}}
    if encoding is not None:
        document["properties"] = {"body_encoding": encoding, "delivery_tag": "t"}
    document.update(extra)
    return json.dumps(document).encode()


def b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def test_the_captured_payloads_decode_the_same_on_both_paths() -> None:
    payloads = [p.raw for p in load_payloads()]
    assert_same_as_reference(payloads)
    events, undecodable = decode_batch(payloads)
    assert undecodable == 0 and len(events) > len(payloads)  # task.multi lists included


@pytest.mark.parametrize(
    "payload",
    [
        envelope(b64(EVENT)),
        envelope(b64([EVENT, {**EVENT, "uuid": "u2"}])),
        envelope(b64(EVENT).rstrip("=")),  # no padding: msgspec refuses, the stdlib reads it
        envelope(b64(EVENT)[:8] + "\n" + b64(EVENT)[8:]),  # a line break in the base64
        envelope(b64(EVENT)[:8] + "!*" + b64(EVENT)[8:]),  # stray characters
        envelope(b64(EVENT)[:8] + "é" + b64(EVENT)[8:]),  # not ASCII
        envelope(b64(EVENT), encoding=None),  # base64 text, but not said to be: not an event
        envelope(b64(EVENT), encoding="utf-8"),
        envelope(json.dumps(EVENT), encoding=None),  # a JSON text body
        envelope(EVENT, encoding=None),  # a JSON object body
        envelope(b64(EVENT), content_type="application/x-yaml"),
        envelope(b64(EVENT), content_type="application/x-python-serialize"),
        envelope(b64(EVENT), content_type=7),
        envelope(b64({"uuid": "no type"})),
        envelope(b64({**EVENT, "timestamp": "soon"})),
        envelope(base64.b64encode(b"\xff\xfe not json").decode()),
        envelope(base64.b64encode(b'{"type": "task-started", "uuid": "\xff"}').decode()),
        envelope(None),
        envelope(12),
        b'{"body": "' + b64(EVENT).encode() + b'", "properties": {"body_encoding": "base64"}',
        b'{"body": "' + b64(EVENT).encode() + b'", "properties": {"body_encoding": "\xff"}}',
        b'{"body": "' + b64(EVENT).encode() + b'", "body": 1, '
        b'"properties": {"body_encoding": "base64"}}',
        b"garbage",
        b"",
    ],
)
def test_usual_and_unusual_payloads_decode_the_same_on_both_paths(payload: bytes) -> None:
    assert_same_as_reference([payload])


def test_a_payload_over_the_size_limit_is_refused_on_the_fast_path_too() -> None:
    tight = InputLimits(max_message_bytes=1)
    small = envelope(b64(EVENT))
    big = envelope(b64({**EVENT, "args": "x" * tight.max_raw_bytes}))
    assert len(small) <= tight.max_raw_bytes < len(big)
    assert_same_as_reference([small, big, small], tight)
    assert decode_batch([small, big, small], tight)[1] == 1


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
EVENT_FIELDS = st.fixed_dictionaries(
    {"type": st.sampled_from(["task-started", "task-failed", "worker-heartbeat"]) | JSON_SCALARS},
    optional={
        "uuid": st.text(max_size=8) | JSON_SCALARS,
        "hostname": st.text(max_size=8) | JSON_SCALARS,
        "timestamp": st.floats(allow_nan=False) | JSON_SCALARS,
        "eta": st.text(max_size=30) | JSON_SCALARS,
        "runtime": st.floats() | JSON_SCALARS,
        "processed": st.integers() | JSON_SCALARS,
    },
)
BODIES = EVENT_FIELDS | st.lists(EVENT_FIELDS, max_size=3) | JSON_SCALARS


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Envelopes around event bodies, with base64 text sometimes spoiled."""
    body = draw(BODIES)
    text = base64.b64encode(json.dumps(body).encode()).decode()
    spoil = draw(st.sampled_from(["none", "strip", "insert", "truncate", "raw"]))
    if spoil == "strip":
        text = text.rstrip("=")
    elif spoil == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(alphabet="=\n -_!é\\/+A", max_size=3)) + text[at:]
    elif spoil == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    encoded: object = json.dumps(body) if spoil == "raw" else text
    return envelope(
        encoded,
        encoding=draw(st.sampled_from(["base64", None, "utf-8"]) | JSON_SCALARS),
        content_type=draw(st.sampled_from(["application/json", "text/json", ""]) | JSON_SCALARS),
    )


@FUZZ
@given(st.lists(payloads() | st.binary(max_size=64), max_size=5))
def test_fuzzed_payloads_decode_the_same_on_both_paths(batch: list[bytes]) -> None:
    assert_same_as_reference(batch)


# -- splitting the raw replies --------------------------------------------------------


def pmessage(channel: bytes, data: bytes, push: bool = True) -> bytes:
    return b"%s4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        b">" if push else b"*", len(channel), channel, len(data), data,
    )


def test_replies_split_the_same_whatever_the_reads() -> None:
    """Messages cut anywhere by the socket reads, larger than a feed or not, come out whole."""
    datas = [bytes([65 + i % 26]) * size for i, size in enumerate(
        [1, 700, FEED_BYTES - 40, FEED_BYTES, FEED_BYTES + 1, 3 * FEED_BYTES + 7, 5, 900]
    )]
    raw = b"".join(pmessage(b"/0.celeryev/task.multi", d, push=i % 2 == 0)
                   for i, d in enumerate(datas))
    for read in (1, 7, 1000, FEED_BYTES - 1, FEED_BYTES + 3, 5 * FEED_BYTES, len(raw)):
        replies = PubSubReplies()
        got: list[bytes] = []
        for start in range(0, len(raw), read):
            chunk = bytearray(raw[start:start + read]) + bytearray(b"junk after the read")
            got.extend(replies.split(chunk, min(read, len(raw) - start)))
        assert got == datas, read


def test_replies_confirm_the_subscription_and_raise_on_an_error() -> None:
    confirmed: list[bool] = []
    replies = PubSubReplies(lambda: confirmed.append(True))
    subscribed = b">3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:1\r\n"
    assert replies.split(subscribed + pmessage(b"c", b"one")) == [b"one"]
    assert confirmed == [True]
    with pytest.raises(redis.ResponseError, match="NOAUTH"):
        replies.split(b"-NOAUTH Authentication required.\r\n")
