"""Celery events as they arrive on the event channel, decoded into typed structs.

Celery publishes each event as a kombu envelope (JSON) whose body is, base64 encoded,
one event or a list of them. msgspec decodes the envelope and the body straight into
the `Event` struct: only the fields the tracker reads are decoded (the rest is
skipped), each is checked for its type and bounds, and a payload that does not fit
is refused whole. An event whose `hostname` is a list never reaches the tracker.
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

class _Properties(msgspec.Struct):
    body_encoding: str | None = None


class _Envelope(msgspec.Struct):
    body: str | EventBody | None = None
    content_type: str = msgspec.field(name="content-type", default="application/json")
    properties: _Properties | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
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
    """Decode many payloads; returns the events and how many payloads were undecodable."""
    events: list[Event] = []
    bad = 0
    for data in payloads:
        try:
            events.extend(decode_event_message(data, limits))
        except MalformedMessage as exc:
            bad += 1
            SKIPPED_EVENTS.skipped(str(exc))
    return events, bad
