"""Typed settings of the sidecar, and the parsing that builds them from raw values."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from exporter.config.errors import ConfigError
from exporter.model.jobs import RetentionLimits
from exporter.protocol.cardinality import (
    DEFAULT_MAX_LABEL_LENGTH,
    DEFAULT_MAX_QUEUES,
    DEFAULT_MAX_TASK_SERIES,
)
from exporter.protocol.keys import TransportOptions
from exporter.protocol.limits import DEFAULT_MAX_MESSAGE_BYTES, InputLimits

if TYPE_CHECKING:
    from exporter.config.auth import ApiKey, MetricsCredentials

DEFAULT_RUNTIME_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS

SUPPORTED_SCHEMES = ("redis", "rediss", "sentinel", "unix")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Everything the sidecar is configured with; built once by the CLI."""

    broker_url: str
    transport: TransportOptions = field(default_factory=TransportOptions)
    queues: tuple[str, ...] = ()
    refresh_interval: float = 5.0
    inspect_timeout: float = 1.0
    discovery_interval: float = 30.0
    listen_host: str = "0.0.0.0"
    listen_port: int = 9813
    web_workers: int = 1
    web_threads: int = 4
    log_level: str = "info"
    log_format: str = "text"
    events: bool = True
    enable_events_interval: float = 0.0
    worker_timeout: float = 30.0
    completed_retention: int = 1000
    failed_retention: int = 5000
    retention_max_age: float = 0.0
    max_task_names: int = 500
    max_tracked_jobs: int = 100_000
    max_queues: int = DEFAULT_MAX_QUEUES
    max_task_series: int = DEFAULT_MAX_TASK_SERIES
    max_label_length: int = DEFAULT_MAX_LABEL_LENGTH
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    runtime_buckets: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS
    queue_wait_buckets: tuple[float, ...] = DEFAULT_QUEUE_WAIT_BUCKETS
    state_dir: str | None = None
    auth: bool = True
    api_keys: tuple[ApiKey, ...] = ()
    api_max_limit: int = 100
    metrics_credentials: MetricsCredentials | None = None
    history: bool = True
    history_prefix: str = "celery-jobs-exporter:"
    http_header_timeout: float = 10.0
    max_connections: int = 1000

    @property
    def retention(self) -> RetentionLimits:
        """How many finished jobs are kept per queue, and for how long."""
        return RetentionLimits(
            self.completed_retention, self.failed_retention, self.retention_max_age
        )

    @property
    def input_limits(self) -> InputLimits:
        """What one message read from the broker may cost to decode."""
        return InputLimits(max_message_bytes=self.max_message_bytes)

    @property
    def redacted_broker_url(self) -> str:
        """The broker URL with every password replaced, safe for logs and errors."""
        return redact_url(self.broker_url)

    @property
    def stale_after(self) -> float:
        """How old the last successful refresh may be before /readyz fails."""
        return max(3 * self.refresh_interval, self.refresh_interval + 2 * self.inspect_timeout + 5)


_PASSWORD_IN_URL = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@;]*:)(?P<pw>[^;]*?)(?=@[^@;\s/]*(?:[/;\s?]|$))", re.I
)


#: A password given as a query parameter (`?password=…`, `&sentinel_password=…`), any
#: scheme: the value ends at `&`, `#`, whitespace, or a `;` that starts the next URL.
_PASSWORD_IN_QUERY = re.compile(
    r"(?P<head>[?&;][^=&;#?\s]*password=)(?P<pw>.*?)"
    r"(?=[&#\s]|;\s*[a-z][a-z0-9+.-]*://|$)",
    re.I,
)


def redact_url(url: str) -> str:
    """Replace every password in text holding URLs (several `;`-separated ones too) by `***`.

    Both the user-info password (`scheme://user:PASSWORD@host`) and password query
    parameters (`?password=PASSWORD`, `&sentinel_password=…`) are replaced; this is
    the one function every log line, traceback and error message goes through.
    """
    text = _PASSWORD_IN_URL.sub(lambda m: m.group("head") + "***", url)
    return _PASSWORD_IN_QUERY.sub(lambda m: m.group("head") + "***", text)


def redact_userinfo(text: str) -> str:
    """For text that may be a URL without a scheme: hide everything before its last `@`."""
    if "://" in text:
        return redact_url(text)
    return "***@" + text.rsplit("@", 1)[1] if "@" in text else text


def validate_broker_url(url: str) -> str:
    """Check the broker URL's scheme(s); returns it unchanged or raises ConfigError."""
    if not url:
        raise ConfigError("--broker-url: must not be empty (e.g. redis://localhost:6379/0)")
    for part in url.split(";"):
        scheme = urlsplit(part.strip()).scheme.lower()
        if scheme not in SUPPORTED_SCHEMES:
            raise ConfigError(
                f"--broker-url: scheme {scheme or '(none)'!r} of {redact_userinfo(part)!r} is not "
                f"supported; use one of {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
            )
    return url


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
                f"--broker-transport-option: {pair!r} is not KEY=VALUE "
                "(e.g. priority_steps=[0,3,6,9] or sep=:)"
            )
        raw[key] = parse_option_value(value)
    return transport_options_from_mapping(raw)


def transport_options_from_mapping(raw: Mapping[str, Any]) -> TransportOptions:
    """Validate a mapping of transport options (as Celery's broker_transport_options)."""
    flag = "--broker-transport-option"
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "sep":
            known[key] = _require_str(flag, key, value, allow_empty=False)
        elif key in ("global_keyprefix", "unacked_key"):
            known[key] = _require_str(flag, key, value, allow_empty=key == "global_keyprefix")
        elif key == "master_name":
            known[key] = _require_str(flag, key, value, allow_empty=False)
        elif key == "priority_steps":
            known[key] = _priority_steps(flag, value)
        elif key == "visibility_timeout":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(
                    f"{flag}: visibility_timeout must be a positive number of seconds"
                )
            known[key] = float(value)
        elif key == "fanout_prefix":
            if not isinstance(value, bool | str):
                raise ConfigError(f"{flag}: fanout_prefix must be true, false or a string")
            known[key] = value
        elif key == "fanout_patterns":
            if not isinstance(value, bool):
                raise ConfigError(f"{flag}: fanout_patterns must be true or false")
            known[key] = value
        elif key == "sentinel_kwargs":
            if not isinstance(value, dict):
                raise ConfigError(f"{flag}: sentinel_kwargs must be a JSON object")
            known[key] = value
        else:
            extra[key] = value
    return TransportOptions(**known, extra=extra)


def _require_str(flag: str, key: str, value: Any, *, allow_empty: bool) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise ConfigError(f"{flag}: {key} must be a non-empty string, got {value!r}")
    return value


def _priority_steps(flag: str, value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        raise ConfigError(
            f"{flag}: priority_steps must be a JSON list of integers 0..255, e.g. [0,3,6,9]; "
            f"got {value!r}"
        )
    steps = tuple(sorted(set(value)))
    if steps[0] != 0:
        raise ConfigError(f"{flag}: priority_steps must include 0, got {value!r}")
    return steps


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
