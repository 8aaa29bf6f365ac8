"""Celery events as they arrive on the event channel, decoded into typed structs.

Celery publishes each event as a kombu envelope (JSON) whose body is, base64 encoded,
one event or a list of them. msgspec decodes the envelope and the body straight into
the `Event` struct: only the fields the tracker reads are decoded (the rest is
skipped), each is checked for its type and bounds, and a payload that does not fit
is refused whole. An event whose `hostname` is a list never reaches the tracker.

`decode_batch` takes a fast path for kombu's usual envelope (a JSON body, base64
encoded): msgspec decodes the base64 text itself while it reads the envelope. Any
payload the fast path does not take whole goes through `decode_event_message`, so
both paths give the same events and refuse the same payloads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import (
    DEFAULT_LIMITS,
    Identifier,
    InputLimits,
    Timestamp,
    check_size,
    clean_tree,
)
from exporter.protocol.payloads import JSON_TYPES, b64decode, decode_payload, load_json
from exporter.protocol.skips import SkipLog

SKIPPED_EVENTS = SkipLog("events")

Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class Event(msgspec.Struct, gc=False):
    """One Celery event: the fields the sidecar uses, each of its documented type.

    Task events carry args, kwargs, result and exception as reprs (text); worker
    events carry the heartbeat counters.
    """

    type: Identifier
    uuid: Identifier | None = None
    hostname: Identifier | None = None
    timestamp: Timestamp | None = None
    name: Identifier | None = None
    queue: Identifier | None = None
    routing_key: Identifier | None = None
    eta: str | Timestamp | None = None
    args: str | None = None
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    runtime: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None = None
    requeue: bool | None = None
    processed: Count | None = None
    active: Count | None = None
    pid: Annotated[int, msgspec.Meta(ge=0, le=2**32)] | None = None


EventBody = Event | list[Event]


# gc=False: decoded from JSON, they hold no cycle, and the cyclic GC need not count them.
class _Properties(msgspec.Struct, gc=False):
    body_encoding: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    body: str | EventBody | None = None
    content_type: str = msgspec.field(name="content-type", default="application/json")
    properties: _Properties | None = None


class _Base64Envelope(msgspec.Struct, gc=False):
    """kombu's usual envelope, its body decoded from base64 by msgspec as it is read.

    msgspec refuses base64 text the standard library's lenient decoder would still
    read (no padding, stray characters); such a payload takes the general path. What
    msgspec accepts, it decodes to the same bytes.
    """

    body: bytes
    content_type: str = msgspec.field(name="content-type", default="application/json")
    properties: _Properties | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_BASE64_ENVELOPE = msgspec.json.Decoder(_Base64Envelope)
_BODY = msgspec.json.Decoder(EventBody)


def decode_event_message(data: bytes, limits: InputLimits = DEFAULT_LIMITS) -> list[Event]:
    """Decode one pub/sub payload into its Celery event(s); raises MalformedMessage."""
    check_size(data, limits, "event payload")
    envelope: _Envelope = _typed_json(_ENVELOPE, data, _Envelope, limits)
    body = envelope.body
    if isinstance(body, str):
        raw: bytes = body.encode("utf-8", "surrogateescape")
        props = envelope.properties
        if props is not None and props.body_encoding == "base64":
            raw = b64decode(raw)
        if envelope.content_type in JSON_TYPES:
            body = _typed_json(_BODY, raw, EventBody, limits)
        else:
            body = _lenient(decode_payload(envelope.content_type, raw, limits), EventBody)
    if isinstance(body, Event):
        return [body]
    if isinstance(body, list):
        return body
    raise MalformedMessage("event body is missing")


def _typed_json(decoder: msgspec.json.Decoder[Any], data: bytes, kind: Any,
                limits: InputLimits) -> Any:
    """JSON decoded straight into `kind`; text msgspec refuses (lone surrogate escapes,
    invalid UTF-8) is read again by the lenient path, with that text replaced."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MalformedMessage(f"not a Celery event: {exc}") from exc
    except msgspec.DecodeError:
        return _lenient(load_json(data, limits), kind)


def _lenient(value: Any, kind: Any) -> Any:
    """A value from a lenient decoder (text already valid Unicode) checked against `kind`."""
    try:
        return msgspec.convert(clean_tree(value), kind)
    except (msgspec.ValidationError, TypeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"not a Celery event: {str(exc)[:200]}") from exc


def events_from(values: Iterable[Any]) -> list[Event]:
    """Plain event mappings (as tests and tools write them) checked into Events.

    JSON and msgspec's decoders only ever give valid text; values from elsewhere are
    cleaned first, as every lenient path here does.
    """
    events: list[Event] = _lenient(list(values), list[Event])
    return events


def decode_batch(
    payloads: list[bytes], limits: InputLimits = DEFAULT_LIMITS
) -> tuple[list[Event], int]:
    """Decode many payloads; returns the events and how many payloads were undecodable.

    The usual payload (a base64 JSON body within `max_raw_bytes`) is decoded here;
    any other, or one the fast path stumbles on, by `decode_event_message`.
    """
    events: list[Event] = []
    append, extend = events.append, events.extend
    bad = 0
    max_raw = limits.max_raw_bytes
    envelope_of, body_of = _BASE64_ENVELOPE.decode, _BODY.decode
    failed = (msgspec.ValidationError, msgspec.DecodeError)
    for data in payloads:
        if len(data) <= max_raw:
            try:
                envelope = envelope_of(data)
                properties = envelope.properties
                if (
                    properties is not None
                    and properties.body_encoding == "base64"
                    and envelope.content_type in JSON_TYPES
                ):
                    body = body_of(envelope.body)
                    if isinstance(body, Event):
                        append(body)
                    else:
                        extend(body)
                    continue
            except failed:
                pass
        try:
            extend(decode_event_message(data, limits))
        except MalformedMessage as exc:
            bad += 1
            SKIPPED_EVENTS.skipped(str(exc))
    return events, bad
