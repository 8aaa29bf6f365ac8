"""One raw option value → its typed value, or a ConfigError naming the flag."""

from __future__ import annotations

import math
from collections.abc import Iterable

from exporter.config.errors import ConfigError


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT) into host and port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(
            f"--listen-address: {value!r} is not HOST:PORT with a port 1..65535 "
            "(e.g. 0.0.0.0:9813)"
        )
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ConfigError(
            f"--listen-address: {value!r}: write an IPv6 address in brackets, e.g. [::1]:9813"
        )
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def parse_buckets(flag: str, value: str) -> tuple[float, ...]:
    """Parse a comma-separated list of increasing positive bucket bounds."""
    try:
        bounds = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{flag}: {value!r} is not a comma-separated list of numbers") from exc
    if (
        not bounds
        or any(b <= 0 or not math.isfinite(b) for b in bounds)
        or list(bounds) != sorted(set(bounds))
    ):
        raise ConfigError(
            f"{flag}: bounds must be finite, positive and strictly increasing, got {value!r}"
        )
    return bounds


def buckets_or_default(
    flag: str, value: str | None, default: tuple[float, ...]
) -> tuple[float, ...]:
    """The bucket bounds a flag gives, or `default` when it is unset or empty."""
    return parse_buckets(flag, value) if value else default


def parse_queues(values: Iterable[str]) -> tuple[str, ...]:
    """`--queue` values, each one name or several comma-separated: distinct, in order."""
    return tuple(
        dict.fromkeys(q.strip() for raw in values for q in raw.split(",") if q.strip())
    )


def parse_history_prefix(value: str) -> str:
    """The Redis key prefix of the job history: not empty, and not one kombu's keys use."""
    if not value or value.startswith("_kombu"):
        raise ConfigError("--history-key-prefix: must be non-empty and not a kombu prefix")
    return value

