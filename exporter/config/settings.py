"""The sidecar's typed, frozen settings; `exporter.config.load` builds them from raw values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# `redact_url` is imported from here by other modules too: it stays importable by this path.
from exporter.config.redaction import redact_url as redact_url
from exporter.model.jobs import RetentionLimits
from exporter.protocol.cardinality import (
    DEFAULT_MAX_LABEL_LENGTH,
    DEFAULT_MAX_QUEUES,
    DEFAULT_MAX_TASK_SERIES,
)
from exporter.protocol.exceptions import DEFAULT_MAX_EXCEPTION_TYPES
from exporter.protocol.keys import TransportOptions
from exporter.protocol.limits import DEFAULT_MAX_MESSAGE_BYTES, InputLimits

if TYPE_CHECKING:
    from exporter.config.auth import ApiKey, MetricsCredentials

#: 10 ms to an hour, 1-2-5 per decade (minutes in clock steps): neighbouring bounds are
#: at most 2.5x apart, so a percentile interpolated inside a bucket stays within it.
DEFAULT_RUNTIME_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
)
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Everything the sidecar is configured with.

    Built and validated (each value, and the rules between values) by
    `exporter.config.load.build_settings`; the defaults here are the CLI's defaults.
    """

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
    max_exception_types: int = DEFAULT_MAX_EXCEPTION_TYPES
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
    #: Job actions turned off (403), whatever the keys allow.
    read_only: bool = False
    #: Celery's Redis result backend, read for a retry's exact arguments (result_extended).
    result_backend_url: str | None = None
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
