"""What the event stream has told, frozen for one snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.jobs import Job
from exporter.model.stats import TaskStatsData


@dataclass(frozen=True, slots=True)
class ActiveJob:
    """A job the events say is running."""

    task_id: str
    name: str | None
    queue: str | None
    hostname: str | None
    started_at: float | None


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    """What the events last said about one worker."""

    hostname: str
    last_seen: float
    online: bool
    active: int | None
    processed: int | None


@dataclass(frozen=True)
class TrackerView:
    """A frozen copy of what the events have told, for one snapshot."""

    retained: dict[str, tuple[int, int]]
    retained_jobs: dict[str, tuple[tuple[Job, ...], tuple[Job, ...]]]
    active: tuple[ActiveJob, ...]
    stats: TaskStatsData
    workers: dict[str, WorkerSeen]
    queues_seen: frozenset[str]
    events_received: int
    events_undecodable: int
    events_lost: int
    jobs_evicted: int
    stream_connected: bool
    stream_reconnects: int
    stream_disconnected_seconds: float = 0.0
    recently_finished: frozenset[str] = frozenset()

    @classmethod
    def of_workers(cls, workers: dict[str, WorkerSeen]) -> TrackerView:
        """A view of the workers only, everything else empty: what deciding which
        workers are up reads, before the refresh takes its one full view."""
        return cls(
            retained={},
            retained_jobs={},
            active=(),
            stats=TaskStatsData(outcomes={}, runtime={}, queue_wait={}, folded_task_names=0),
            workers=workers,
            queues_seen=frozenset(),
            events_received=0,
            events_undecodable=0,
            events_lost=0,
            jobs_evicted=0,
            stream_connected=False,
            stream_reconnects=0,
        )
