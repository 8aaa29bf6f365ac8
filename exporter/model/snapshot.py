"""The immutable Snapshot every reader serves: queues, workers, stats, health.

docs/statuses.md says what each status means on Celery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.model.jobs import Job
from exporter.model.stats import TaskStatsData
from exporter.protocol.cardinality import DEFAULT_MAX_LABEL_LENGTH

STATUSES = ("waiting", "active", "delayed", "paused", "completed", "failed")


@dataclass(frozen=True)
class QueueState:
    """One queue's counts by status, consumers and prefetched jobs."""

    name: str
    counts: Mapping[str, int]
    consumers: int
    prefetched: int
    #: Pool processes (or threads) of the live workers consuming the queue, where known.
    capacity: int = 0
    #: Seconds the job workers take next from the queue's lists has waited (0: none).
    oldest_age: float = 0.0
    #: Whether that age counts from when the sidecar first saw the job (publish unknown).
    oldest_age_lower_bound: bool = False
    #: Seconds the longest-running active job of the queue has run (0: none running).
    oldest_active_age: float = 0.0


@dataclass(frozen=True)
class WorkerState:
    """One worker's liveness and what it holds."""

    hostname: str
    up: bool
    queues: tuple[str, ...]
    active: int
    concurrency: int | None
    last_seen: float | None


@dataclass(frozen=True)
class SourceHealth:
    """Whether a source's last read worked, and when one last did."""

    name: str
    up: bool
    last_success: float | None
    last_error: str | None = None
    duration: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class TaskPlacement:
    """Where one task id stands now, for the Jobs API."""

    task_id: str
    name: str | None
    queue: str
    status: str
    eta: float | None = None
    started_at: float | None = None
    hostname: str | None = None


@dataclass(frozen=True)
class ExporterCounters:
    """The exporter's own monotonic counters."""

    events_received: int = 0
    events_undecodable: int = 0
    events_lost: int = 0
    stream_reconnects: int = 0
    stream_disconnected_seconds: float = 0.0
    jobs_evicted: int = 0
    malformed: Mapping[str, int] = field(default_factory=dict)
    refreshes: int = 0
    refresh_failures: int = 0
    #: Job actions by (action, outcome): celery_exporter_actions_total.
    actions: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """Everything readers serve, built by the refresher and swapped in one reference."""

    generation: int
    created_at: float
    queues: Mapping[str, QueueState]
    workers: Mapping[str, WorkerState]
    stats: TaskStatsData
    sources: Mapping[str, SourceHealth]
    counters: ExporterCounters
    placements: tuple[TaskPlacement, ...]
    refresh_duration: float
    last_success: float | None
    broker_round_trips: int
    stream_connected: bool = False
    retained_jobs: Mapping[str, tuple[tuple[Job, ...], tuple[Job, ...]]] = field(
        default_factory=dict
    )
    job_details: Mapping[str, Job] = field(default_factory=dict)
    #: Distinct queue names not reported because of --max-queues.
    dropped_queue_names: int = 0
    #: Longest label value in the exposition (--max-label-length).
    max_label_length: int = DEFAULT_MAX_LABEL_LENGTH

    @property
    def broker_up(self) -> bool:
        """Whether the newest broker read succeeded."""
        source = self.sources.get("broker")
        return bool(source and source.up)

    @property
    def broker_ever_read(self) -> bool:
        """Whether any broker read has succeeded (this snapshot's or an older one kept)."""
        source = self.sources.get("broker")
        return bool(source and source.last_success is not None)
