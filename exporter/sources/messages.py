"""Celery task messages as kombu stores them in Redis, decoded safely (never unpickled).

A message is a JSON envelope ``{"body", "content-type", "content-encoding", "headers",
"properties"}``. Protocol 2 keeps the task's id, name and ETA in ``headers`` and
``[args, kwargs, embed]`` in the body; protocol 1 keeps everything in the body.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgpack
import orjson
import yaml


class MalformedMessage(ValueError):
    """The bytes are not a Celery task message this module can read."""


JSON_TYPES = frozenset({"application/json", "application/x-json", "text/json"})
MSGPACK_TYPES = frozenset({"application/x-msgpack", "application/msgpack"})
YAML_TYPES = frozenset({"application/x-yaml", "application/yaml", "text/yaml"})
PICKLE_TYPES = frozenset({"application/x-python-serialize", "application/python-pickle"})

_DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "application/x-gzip": zlib.decompress,
    "zlib": zlib.decompress,
    "application/x-bz2": bz2.decompress,
    "bzip2": bz2.decompress,
    "application/x-lzma": lzma.decompress,
    "lzma": lzma.decompress,
}


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


def parse_eta(value: Any) -> float | None:
    """An ETA (ISO 8601 string, naive meaning UTC) as seconds since the epoch, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise MalformedMessage(f"eta is not a date: {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedMessage(f"eta is not an ISO 8601 date: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def load_envelope(raw: bytes | str) -> dict[str, Any]:
    """Parse the JSON envelope kombu writes for every message."""
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise MalformedMessage("envelope is not a JSON object")
    return envelope


def decode_body(envelope: dict[str, Any]) -> Any:
    """Decode the body by its content type; pickle is refused, never loaded."""
    content_type = str(envelope.get("content-type") or "")
    if content_type in PICKLE_TYPES:
        raise MalformedMessage("pickle body is not decoded (unsafe)")
    body = envelope.get("body")
    props = envelope.get("properties")
    encoding = props.get("body_encoding") if isinstance(props, dict) else None
    if isinstance(body, str):
        data: bytes = body.encode("utf-8", "surrogateescape")
        if encoding == "base64":
            try:
                data = base64.b64decode(data, validate=False)
            except (binascii.Error, ValueError) as exc:
                raise MalformedMessage(f"body is not valid base64: {exc}") from exc
    elif isinstance(body, dict | list):
        return body
    else:
        raise MalformedMessage("body is missing")
    headers = envelope.get("headers")
    compression = headers.get("compression") if isinstance(headers, dict) else None
    if compression:
        decompress = _DECOMPRESSORS.get(str(compression))
        if decompress is None:
            raise MalformedMessage(f"unsupported compression {compression!r}")
        try:
            data = decompress(data)
        except Exception as exc:
            raise MalformedMessage(f"cannot decompress body: {exc}") from exc
    return decode_payload(content_type, data)


def decode_payload(content_type: str, data: bytes) -> Any:
    """Decode serialized bytes of a known, safe content type."""
    try:
        if content_type in JSON_TYPES or not content_type:
            return orjson.loads(data)
        if content_type in MSGPACK_TYPES:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        if content_type in YAML_TYPES:
            return yaml.safe_load(data)
    except Exception as exc:
        raise MalformedMessage(f"{content_type or 'body'} does not decode: {exc}") from exc
    if content_type in PICKLE_TYPES:
        raise MalformedMessage("pickle body is not decoded (unsafe)")
    raise MalformedMessage(f"unsupported content type {content_type!r}")


def parse_task_message(
    envelope: dict[str, Any],
    *,
    with_body: bool = False,
    exchange: str | None = None,
    routing_key: str | None = None,
) -> TaskMessage:
    """Read a Celery task from its envelope (protocol 1 or 2).

    With `with_body`, args and kwargs are decoded too; a body that cannot be decoded
    (pickle, corrupt) leaves them None and says why in `body_error`.
    """
    headers = envelope.get("headers")
    props = envelope.get("properties")
    if not isinstance(headers, dict):
        headers = {}
    if not isinstance(props, dict):
        props = {}
    delivery = props.get("delivery_info")
    if isinstance(delivery, dict):
        exchange = exchange if exchange is not None else delivery.get("exchange")
        routing_key = routing_key if routing_key is not None else delivery.get("routing_key")
    priority = props.get("priority")
    priority = priority if isinstance(priority, int) and not isinstance(priority, bool) else None

    if "task" in headers and "id" in headers:
        return _protocol2(headers, envelope, priority, exchange, routing_key, with_body)
    return _protocol1(envelope, priority, exchange, routing_key)


def _protocol2(
    headers: dict[str, Any],
    envelope: dict[str, Any],
    priority: int | None,
    exchange: str | None,
    routing_key: str | None,
    with_body: bool,
) -> TaskMessage:
    args: Any = None
    kwargs: Any = None
    body_error: str | None = None
    if with_body:
        try:
            body = decode_body(envelope)
            if isinstance(body, list | tuple) and len(body) >= 2:
                args, kwargs = body[0], body[1]
            else:
                body_error = "body is not [args, kwargs, embed]"
        except MalformedMessage as exc:
            body_error = str(exc)
    return TaskMessage(
        task_id=str(headers["id"]),
        name=str(headers["task"]),
        eta=parse_eta(headers.get("eta")),
        retries=_int(headers.get("retries")),
        priority=priority,
        exchange=exchange,
        routing_key=routing_key,
        protocol=2,
        args=args,
        kwargs=kwargs,
        body_error=body_error,
    )


def _protocol1(
    envelope: dict[str, Any],
    priority: int | None,
    exchange: str | None,
    routing_key: str | None,
) -> TaskMessage:
    body = decode_body(envelope)
    if not isinstance(body, dict) or "id" not in body or "task" not in body:
        raise MalformedMessage("not a Celery task message (no task id and name)")
    return TaskMessage(
        task_id=str(body["id"]),
        name=str(body["task"]),
        eta=parse_eta(body.get("eta")),
        retries=_int(body.get("retries")),
        priority=priority,
        exchange=exchange,
        routing_key=routing_key,
        protocol=1,
        args=body.get("args"),
        kwargs=body.get("kwargs"),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_unacked_entry(raw: bytes) -> TaskMessage:
    """Parse one value of kombu's `unacked` hash: JSON `[message, exchange, routing_key]`."""
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"unacked entry is not JSON: {exc}") from exc
    if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], dict):
        raise MalformedMessage("unacked entry is not [message, exchange, routing_key]")
    message, exchange, routing_key = entry
    return parse_task_message(
        message,
        exchange=exchange if isinstance(exchange, str) else None,
        routing_key=routing_key if isinstance(routing_key, str) else None,
    )
