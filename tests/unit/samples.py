"""Hand-built snapshots with every kind of series, for rendering tests without services."""

from __future__ import annotations

from exporter.core.taskstats import TaskStats
from exporter.model.snapshot import (
    ExporterCounters,
    QueueState,
    Snapshot,
    SourceHealth,
    TaskPlacement,
    WorkerState,
)

CREATED_AT = 1_700_000_000.0
RUNTIME_BUCKETS = (0.1, 1.0, 10.0)
WAIT_BUCKETS = (0.5, 5.0)


def sample_stats() -> TaskStats:
    """Counters and histograms of two queues, with a folded task name."""
    stats = TaskStats(
        max_task_names=2,
        runtime_buckets=RUNTIME_BUCKETS,
        queue_wait_buckets=WAIT_BUCKETS,
        max_task_series=3,
        max_exception_types=2,
    )
    stats.touch("emails", "app.send", ("succeeded", "failed"))
    for outcome in ("succeeded", "succeeded", "failed", "lost"):
        stats.count("emails", "app.send", outcome)
    stats.count("reports", "app.build", "retried")
    stats.count("reports", "app.third", "succeeded")  # past max_task_names: "other"
    stats.count_recovered("emails", "app.send")
    for exception in ("ValueError", "ValueError", "KeyError", "TimeoutError"):  # 3rd: other
        stats.count_failure("emails", "app.send", exception)
    for seconds in (0.05, 0.5, 2.0, 30.0):
        stats.observe_runtime("emails", "app.send", seconds)
        stats.observe_queue_wait("emails", seconds / 10)
    stats.observe_runtime("reports", "app.build", -1.0)
    return stats


def sample_snapshot() -> Snapshot:
    """Two queues (one with a label past the length limit), two workers, three sources."""
    long_queue = "q" * 120
    queues = {
        "emails": QueueState(
            "emails",
            {"waiting": 3, "active": 1, "delayed": 2, "paused": 0, "completed": 5, "failed": 1},
            consumers=2,
            prefetched=1,
            capacity=4,
            oldest_age=12.5,
            oldest_active_age=95.25,
        ),
        long_queue: QueueState(
            long_queue,
            {"waiting": 0, "active": 0, "delayed": 0, "paused": 7, "completed": 0, "failed": 0},
            consumers=0,
            prefetched=0,
            oldest_age=300.0,
            oldest_age_lower_bound=True,
        ),
    }
    workers = {
        "celery@a": WorkerState("celery@a", True, ("emails",), 1, 4, CREATED_AT - 1.5),
        "celery@b": WorkerState("celery@b", False, ("emails",), 0, None, CREATED_AT - 90.0),
    }
    sources = {
        "broker": SourceHealth("broker", True, CREATED_AT, None, 0.012),
        "workers": SourceHealth("workers", False, CREATED_AT - 30, "TimeoutError: no answer", 1.0),
        "events": SourceHealth("events", True, CREATED_AT, enabled=True),
    }
    counters = ExporterCounters(
        events_received=1234,
        events_undecodable=2,
        events_lost=3,
        stream_reconnects=1,
        stream_disconnected_seconds=4.25,
        jobs_evicted=6,
        malformed={"unacked": 1, "inspect": 0, "history": 2},
        refreshes=42,
        refresh_failures=1,
    )
    return Snapshot(
        generation=42,
        created_at=CREATED_AT,
        queues=queues,
        workers=workers,
        stats=sample_stats().data(),
        sources=sources,
        counters=counters,
        placements=(TaskPlacement("t1", "app.send", "emails", "active", started_at=CREATED_AT),),
        refresh_duration=0.034,
        last_success=CREATED_AT,
        broker_round_trips=3,
        stream_connected=True,
        dropped_queue_names=4,
        max_label_length=100,
    )
