"""Celery task messages as kombu stores them in Redis, decoded safely (never unpickled).

A message is a JSON envelope ``{"body", "content-type", "content-encoding", "headers",
"properties"}``. Protocol 2 keeps the task's id, name and ETA in ``headers`` and
``[args, kwargs, embed]`` in the body; protocol 1 keeps everything in the body.
The headers and properties the sidecar reads are checked against typed structs, so a
message whose id is a list or whose priority is text is refused, not passed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import (
    DEFAULT_LIMITS,
    MAX_IDENTIFIER,
    Identifier,
    InputLimits,
    Timestamp,
    check_size,
    valid_text,
)
from exporter.protocol.payloads import (
    JSON_TYPES,
    PICKLE_TYPES,
    b64decode,
    decode_payload,
    decompress,
    load_json,
)

S = TypeVar("S", bound=msgspec.Struct)


class _DeliveryInfo(msgspec.Struct):
    exchange: Identifier | None = None
    routing_key: Identifier | None = None


class _Properties(msgspec.Struct):
    body_encoding: str | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=255)] | None = None
    delivery_info: _DeliveryInfo | None = None


class _Headers(msgspec.Struct):
    id: Identifier | None = None
    task: Identifier | None = None
    eta: str | Timestamp | None = None
    retries: Annotated[int, msgspec.Meta(ge=0, le=2**31)] | None = None
    compression: str | None = None


class _Protocol1Body(msgspec.Struct):
    id: Identifier
    task: Identifier
    eta: str | Timestamp | None = None
    retries: Annotated[int, msgspec.Meta(ge=0, le=2**31)] | None = None
    args: Any = None
    kwargs: Any = None


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """What a Celery task message says about its task."""

    task_id: str
    name: str | None
    eta: float | None
    retries: int
    priority: int | None
    exchange: str | None
    routing_key: str | None
    protocol: int
    args: Any = None
    kwargs: Any = None
    body_error: str | None = None
    #: The JSON body exactly as published (protocol 2): decoded again with the standard
    #: library when exact values matter (a retry), since `args`/`kwargs` above are
    #: bounded for display (big integers, lone surrogates).
    exact_body: bytes | None = field(default=None, repr=False)


def parse_eta(value: Any) -> float | None:
    """An ETA (ISO 8601 string, naive meaning UTC) as seconds since the epoch, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise MalformedMessage(f"eta is not a date: {str(value)[:64]!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedMessage(f"eta is not an ISO 8601 date: {value[:64]!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def convert(value: Any, kind: type[Any], what: str) -> Any:
    """A decoded value checked against a typed struct; raises MalformedMessage."""
    try:
        return msgspec.convert(value, kind)
    except (msgspec.ValidationError, TypeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"{what}: {str(exc)[:200]}") from exc


def _text(value: str | None) -> str | None:
    return None if value is None else valid_text(value)


def load_envelope(raw: bytes | str, limits: InputLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse the JSON envelope kombu writes for every message."""
    check_size(raw, limits, "message")
    envelope = load_json(raw, limits)
    if not isinstance(envelope, dict):
        raise MalformedMessage("envelope is not a JSON object")
    return envelope


def _section(envelope: Mapping[str, Any], key: str, kind: type[S]) -> S:
    """The envelope's `headers` or `properties`, checked (empty when missing)."""
    value = envelope.get(key)
    if not isinstance(value, Mapping):
        return kind()
    checked: S = convert(value, kind, f"message {key}")
    return checked


def _headers(envelope: Mapping[str, Any]) -> _Headers:
    return _section(envelope, "headers", _Headers)


def _properties(envelope: Mapping[str, Any]) -> _Properties:
    return _section(envelope, "properties", _Properties)


def decode_body(envelope: Mapping[str, Any], limits: InputLimits = DEFAULT_LIMITS) -> Any:
    """Decode the body by its content type; pickle is refused, never loaded."""
    return _decode_body(envelope, limits)[0]


def _decode_body(
    envelope: Mapping[str, Any], limits: InputLimits
) -> tuple[Any, bytes | None]:
    """The decoded body, and its serialized bytes when it is JSON (else None)."""
    content_type = envelope.get("content-type") or ""
    if not isinstance(content_type, str):
        raise MalformedMessage("content-type is not text")
    if content_type in PICKLE_TYPES:
        raise MalformedMessage("pickle body is not decoded (unsafe)")
    body = envelope.get("body")
    props = _properties(envelope)
    if isinstance(body, str):
        data: bytes = body.encode("utf-8", "surrogateescape")
        if props.body_encoding == "base64":
            data = b64decode(data)
    elif isinstance(body, dict | list):
        return body, None
    else:
        raise MalformedMessage("body is missing")
    compression = _headers(envelope).compression
    if compression:
        data = decompress(compression, data, limits)
    is_json = content_type in JSON_TYPES or not content_type
    return decode_payload(content_type, data, limits), data if is_json else None


def parse_task_message(
    envelope: Mapping[str, Any],
    *,
    with_body: bool = False,
    exchange: str | None = None,
    routing_key: str | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> TaskMessage:
    """Read a Celery task from its envelope (protocol 1 or 2).

    With `with_body`, args and kwargs are decoded too; a body that cannot be decoded
    (pickle, corrupt, too large) leaves them None and says why in `body_error`.
    """
    headers = _headers(envelope)
    props = _properties(envelope)
    delivery = props.delivery_info
    if delivery is not None:
        exchange = exchange if exchange is not None else delivery.exchange
        routing_key = routing_key if routing_key is not None else delivery.routing_key
    if headers.task is not None and headers.id is not None:
        return _protocol2(headers, envelope, props.priority, exchange, routing_key,
                          with_body, limits)
    return _protocol1(envelope, props.priority, exchange, routing_key, limits)


def _protocol2(
    headers: _Headers,
    envelope: Mapping[str, Any],
    priority: int | None,
    exchange: str | None,
    routing_key: str | None,
    with_body: bool,
    limits: InputLimits,
) -> TaskMessage:
    args: Any = None
    kwargs: Any = None
    body_error: str | None = None
    exact_body: bytes | None = None
    if with_body:
        try:
            body, exact_body = _decode_body(envelope, limits)
            if isinstance(body, list | tuple) and len(body) >= 2:
                args, kwargs = body[0], body[1]
            else:
                body_error = "body is not [args, kwargs, embed]"
                exact_body = None
        except MalformedMessage as exc:
            body_error = str(exc)
    assert headers.id is not None and headers.task is not None
    return TaskMessage(
        task_id=valid_text(headers.id),
        name=valid_text(headers.task),
        eta=parse_eta(headers.eta),
        retries=headers.retries or 0,
        priority=priority,
        exchange=_text(exchange),
        routing_key=_text(routing_key),
        protocol=2,
        args=args,
        kwargs=kwargs,
        body_error=body_error,
        exact_body=exact_body,
    )


def _protocol1(
    envelope: Mapping[str, Any],
    priority: int | None,
    exchange: str | None,
    routing_key: str | None,
    limits: InputLimits,
) -> TaskMessage:
    body = decode_body(envelope, limits)
    if not isinstance(body, dict) or "id" not in body or "task" not in body:
        raise MalformedMessage("not a Celery task message (no task id and name)")
    task: _Protocol1Body = convert(body, _Protocol1Body, "protocol 1 body")
    return TaskMessage(
        task_id=valid_text(task.id),
        name=valid_text(task.task),
        eta=parse_eta(task.eta),
        retries=task.retries or 0,
        priority=priority,
        exchange=_text(exchange),
        routing_key=_text(routing_key),
        protocol=1,
        args=task.args,
        kwargs=task.kwargs,
    )


def parse_unacked_entry(
    raw: bytes, limits: InputLimits = DEFAULT_LIMITS, *, with_body: bool = False
) -> TaskMessage:
    """Parse one value of kombu's `unacked` hash: JSON `[message, exchange, routing_key]`."""
    check_size(raw, limits, "unacked entry")
    entry = load_json(raw, limits)
    if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], dict):
        raise MalformedMessage("unacked entry is not [message, exchange, routing_key]")
    message, exchange, routing_key = entry
    return parse_task_message(
        message,
        with_body=with_body,
        exchange=exchange if isinstance(exchange, str) and len(exchange) <= MAX_IDENTIFIER
        else None,
        routing_key=routing_key
        if isinstance(routing_key, str) and len(routing_key) <= MAX_IDENTIFIER else None,
        limits=limits,
    )
