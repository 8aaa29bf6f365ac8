"""kombu Redis transport options: `--broker-transport-option KEY=VALUE` → TransportOptions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.config.errors import ConfigError
from exporter.protocol.keys import TransportOptions

FLAG = "--broker-transport-option"


def parse_option_value(raw: str) -> Any:
    """A transport option's value: JSON where it parses as JSON, else the plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_transport_options(pairs: Sequence[str]) -> TransportOptions:
    """Build TransportOptions from repeated `KEY=VALUE` strings, validating known keys."""
    raw: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"{FLAG}: {pair!r} is not KEY=VALUE (e.g. priority_steps=[0,3,6,9] or sep=:)"
            )
        raw[key] = parse_option_value(value)
    return transport_options_from_mapping(raw)


def transport_options_from_mapping(raw: Mapping[str, Any]) -> TransportOptions:
    """Validate a mapping of transport options (as Celery's broker_transport_options)."""
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "sep":
            known[key] = _require_str(key, value, allow_empty=False)
        elif key in ("global_keyprefix", "unacked_key"):
            known[key] = _require_str(key, value, allow_empty=key == "global_keyprefix")
        elif key == "master_name":
            known[key] = _require_str(key, value, allow_empty=False)
        elif key == "priority_steps":
            known[key] = _priority_steps(value)
        elif key == "visibility_timeout":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(
                    f"{FLAG}: visibility_timeout must be a positive number of seconds"
                )
            known[key] = float(value)
        elif key == "fanout_prefix":
            if not isinstance(value, bool | str):
                raise ConfigError(f"{FLAG}: fanout_prefix must be true, false or a string")
            known[key] = value
        elif key == "fanout_patterns":
            if not isinstance(value, bool):
                raise ConfigError(f"{FLAG}: fanout_patterns must be true or false")
            known[key] = value
        elif key == "sentinel_kwargs":
            if not isinstance(value, dict):
                raise ConfigError(f"{FLAG}: sentinel_kwargs must be a JSON object")
            known[key] = value
        else:
            extra[key] = value
    return TransportOptions(**known, extra=extra)


def _require_str(key: str, value: Any, *, allow_empty: bool) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise ConfigError(f"{FLAG}: {key} must be a non-empty string, got {value!r}")
    return value


def _priority_steps(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        raise ConfigError(
            f"{FLAG}: priority_steps must be a JSON list of integers 0..255, e.g. [0,3,6,9]; "
            f"got {value!r}"
        )
    steps = tuple(sorted(set(value)))
    if steps[0] != 0:
        raise ConfigError(f"{FLAG}: priority_steps must include 0, got {value!r}")
    return steps
