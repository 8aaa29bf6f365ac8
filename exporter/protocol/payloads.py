"""Bodies by content type and compression, decoded within `InputLimits` (never unpickled).

- JSON is read by orjson (msgspec where a typed struct is wanted), which refuse
  invalid UTF-8; the standard library reads it again, with bad bytes replaced,
  only when that fails.
- msgpack replaces invalid UTF-8; its lengths are checked against the input size.
- YAML uses the safe loader, refuses aliases (a 552-byte alias bomb would otherwise
  grow to hundreds of megabytes) and stops after `max_yaml_nodes` nodes.
- zlib, bz2 and lzma bodies are inflated at most to `max_message_bytes`.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import json
import lzma
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
import orjson
import yaml

from exporter.protocol.errors import MalformedMessage
from exporter.protocol.limits import DEFAULT_LIMITS, InputLimits, clean_tree

JSON_TYPES = frozenset({"application/json", "application/x-json", "text/json"})
MSGPACK_TYPES = frozenset({"application/x-msgpack", "application/msgpack"})
YAML_TYPES = frozenset({"application/x-yaml", "application/yaml", "text/yaml"})
PICKLE_TYPES = frozenset({"application/x-python-serialize", "application/python-pickle"})


class _Decompressor(Protocol):
    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


_DECOMPRESSORS: dict[str, Callable[[], _Decompressor]] = {
    "application/x-gzip": zlib.decompressobj,  # kombu's "gzip" is zlib's format
    "zlib": zlib.decompressobj,
    "application/x-bz2": bz2.BZ2Decompressor,
    "bzip2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
    "lzma": lzma.LZMADecompressor,
}


def b64decode(text: str | bytes) -> bytes:
    """Base64 text to bytes; raises MalformedMessage."""
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage(f"body is not valid base64: {exc}") from exc


def decompress(compression: str, data: bytes, limits: InputLimits = DEFAULT_LIMITS) -> bytes:
    """Inflate a body, refusing one that would grow past `max_message_bytes`."""
    make = _DECOMPRESSORS.get(compression)
    if make is None:
        raise MalformedMessage(f"unsupported compression {compression[:64]!r}")
    cap = limits.max_message_bytes
    try:
        inflated = make().decompress(data, cap + 1)
    except Exception as exc:
        raise MalformedMessage(f"cannot decompress body: {exc}") from exc
    if len(inflated) > cap:
        raise MalformedMessage(
            f"body inflates past {cap} bytes (--max-message-bytes); not decoded"
        )
    return inflated


def decode_payload(
    content_type: str, data: bytes, limits: InputLimits = DEFAULT_LIMITS
) -> Any:
    """Decode serialized bytes of a known, safe content type into plain values."""
    if content_type in PICKLE_TYPES:
        raise MalformedMessage("pickle body is not decoded (unsafe)")
    if len(data) > limits.max_message_bytes:
        raise MalformedMessage(
            f"body is {len(data)} bytes, over --max-message-bytes ({limits.max_message_bytes})"
        )
    try:
        if content_type in JSON_TYPES or not content_type:
            return load_json(data, limits)
        if content_type in MSGPACK_TYPES:
            return msgpack.unpackb(
                data, raw=False, strict_map_key=False, unicode_errors="replace"
            )
        if content_type in YAML_TYPES:
            return clean_tree(load_yaml(data, limits), limits)
    except MalformedMessage:
        raise
    except Exception as exc:
        raise MalformedMessage(f"{content_type or 'body'} does not decode: {exc}") from exc
    raise MalformedMessage(f"unsupported content type {content_type[:64]!r}")


def load_json(data: bytes | str, limits: InputLimits = DEFAULT_LIMITS) -> Any:
    """JSON with orjson; where it refuses the text's encoding, again with bad text replaced."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise MalformedMessage(f"does not decode as JSON: {exc}") from exc
        return clean_tree(value, limits)


class _BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with a node budget."""

    max_nodes = DEFAULT_LIMITS.max_yaml_nodes
    max_depth = DEFAULT_LIMITS.max_depth

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise MalformedMessage("YAML aliases are refused (they can expand without bound)")
        self._nodes += 1
        self._depth += 1
        try:
            if self._nodes > self.max_nodes:
                raise MalformedMessage(f"YAML body has more than {self.max_nodes} nodes")
            if self._depth > self.max_depth:
                raise MalformedMessage(f"YAML nested deeper than {self.max_depth} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(data: bytes, limits: InputLimits = DEFAULT_LIMITS) -> Any:
    """One YAML document with the safe loader, no aliases, at most `max_yaml_nodes` nodes."""
    loader = _BoundedSafeLoader(data)
    loader.max_nodes, loader.max_depth = limits.max_yaml_nodes, limits.max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
