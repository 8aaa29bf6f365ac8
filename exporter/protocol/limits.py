"""Size limits of what the boundary accepts, and text made valid Unicode.

Every decoder takes an `InputLimits`; `--max-message-bytes` sets the one users tune.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from exporter.protocol.errors import MalformedMessage

#: Default cap on a message body once decoded from base64 and decompressed.
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: Longest task id, task name, hostname, queue or routing key accepted; longer ones
#: are not Celery's and the item carrying them is refused.
MAX_IDENTIFIER = 1024

#: The bounded types the structs of the boundary are made of.
Identifier = Annotated[str, msgspec.Meta(max_length=MAX_IDENTIFIER)]
#: Seconds since the epoch, within what a clock can say (no NaN, no infinities).
Timestamp = Annotated[float, msgspec.Meta(ge=-1e11, le=1e11)]

_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class InputLimits:
    """How much one message may cost to decode."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: YAML nodes composed per document (a YAML body is refused past it).
    max_yaml_nodes: int = 20_000
    #: Nesting depth of decoded values (deeper ones are refused).
    max_depth: int = 100

    @property
    def max_raw_bytes(self) -> int:
        """Largest raw envelope read from Redis: base64 makes a body 4/3 larger."""
        return self.max_message_bytes * 2 + 65_536


DEFAULT_LIMITS = InputLimits()


def check_size(data: bytes | str, limits: InputLimits, what: str) -> None:
    """Refuse raw bytes larger than a message may be."""
    if len(data) > limits.max_raw_bytes:
        raise MalformedMessage(
            f"{what} is {len(data)} bytes, over the limit of {limits.max_raw_bytes} "
            "(--max-message-bytes)"
        )


def valid_text(text: str) -> str:
    """The string with lone surrogates (not valid Unicode) replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def clean_tree(value: Any, limits: InputLimits = DEFAULT_LIMITS, depth: int = 0) -> Any:
    """A copy of a decoded value whose strings (keys too) are valid Unicode.

    For values from decoders that let lone surrogates through (YAML, the standard
    library's JSON); refuses nesting deeper than `limits.max_depth`.
    """
    if isinstance(value, str):
        return valid_text(value)
    if value is None or isinstance(value, bool | int | float | bytes):
        return value
    if depth >= limits.max_depth:
        raise MalformedMessage(f"value nested deeper than {limits.max_depth} levels")
    if isinstance(value, Mapping):
        return {
            valid_text(k) if isinstance(k, str) else k: clean_tree(v, limits, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_tree(v, limits, depth + 1) for v in value]
    return value
