"""Snapshot → Prometheus exposition bytes, rendered once per refresh, in every variant."""

from __future__ import annotations

import gzip
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import celery
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE_OM

from exporter import __version__
from exporter.model.snapshot import STATUSES, Snapshot
from exporter.prometheus.exposition import Family, Histograms, write_both
from exporter.protocol.cardinality import label_value

#: The classic text format's type, understood by every Prometheus version.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = CONTENT_TYPE_OM
POLL_NOTE = (
    " Read by the exporter's background refresh, not at scrape time; see "
    "celery_exporter_last_refresh_timestamp_seconds."
)


@dataclass(frozen=True)
class RenderedMetrics:
    """The exposition of one snapshot in each format, plain and gzipped."""

    generation: int
    text: bytes
    text_gzip: bytes
    openmetrics: bytes
    openmetrics_gzip: bytes

    def body(self, *, openmetrics: bool, compressed: bool) -> bytes:
        """The bytes for one variant."""
        if openmetrics:
            return self.openmetrics_gzip if compressed else self.openmetrics
        return self.text_gzip if compressed else self.text


def render(snapshot: Snapshot) -> RenderedMetrics:
    """Render every exposition variant of a snapshot."""
    text, openmetrics = write_both(list(_SnapshotCollector(snapshot).collect()))
    return RenderedMetrics(
        generation=snapshot.generation,
        text=text,
        text_gzip=gzip.compress(text, compresslevel=6, mtime=0),
        openmetrics=openmetrics,
        openmetrics_gzip=gzip.compress(openmetrics, compresslevel=6, mtime=0),
    )


class _SnapshotCollector:
    """Yields the metric families of one snapshot (see `exposition.library_families`)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._max_label_length = snapshot.max_label_length

    def _label(self, value: str) -> str:
        """A queue, task or worker name as a label value (--max-label-length)."""
        return label_value(value, self._max_label_length)

    def collect(self) -> Iterator[Family]:
        yield from self._queue_metrics()
        yield from self._worker_metrics()
        yield from self._task_metrics()
        yield from self._self_metrics()

    def _queue_metrics(self) -> Iterator[Family]:
        queues = self._snapshot.queues.values()
        jobs = GaugeMetricFamily(
            "celery_queue_jobs",
            "Jobs per queue and status (waiting, active, delayed, paused, completed, failed); "
            "completed and failed count the jobs retained by the exporter." + POLL_NOTE,
            labels=["queue", "status"],
        )
        consumers = GaugeMetricFamily(
            "celery_queue_consumers",
            "Live workers consuming from the queue; 0 means its waiting jobs are paused."
            + POLL_NOTE,
            labels=["queue"],
        )
        prefetched = GaugeMetricFamily(
            "celery_queue_prefetched_jobs",
            "Jobs of the queue reserved by a worker without an ETA (counted in waiting)."
            + POLL_NOTE,
            labels=["queue"],
        )
        capacity = GaugeMetricFamily(
            "celery_queue_capacity",
            "Pool processes (or threads) of the live workers consuming the queue: how many "
            "of its jobs can run at once. Utilisation: celery_queue_jobs{status=\"active\"} "
            "/ celery_queue_capacity." + POLL_NOTE,
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "celery_queue_oldest_job_age_seconds",
            "Seconds the job workers take next from the queue's lists has waited, under "
            "status waiting (the queue has consumers) or paused (it has none); 0 for an "
            "empty list. From its task-sent event's time, else from when the exporter "
            "first saw it at the head (see celery_queue_oldest_job_age_lower_bound)."
            + POLL_NOTE,
            labels=["queue", "status"],
        )
        lower_bound = GaugeMetricFamily(
            "celery_queue_oldest_job_age_lower_bound",
            "1 when celery_queue_oldest_job_age_seconds counts from when the exporter first "
            "saw the job at the head (its publish time is unknown: no task-sent event), so "
            "the job is at least that old; 0 when it counts from its publish time.",
            labels=["queue"],
        )
        oldest_active = GaugeMetricFamily(
            "celery_task_oldest_active_age_seconds",
            "Seconds the longest-running active job of the queue has run (0 when none "
            "runs), from the workers' replies and task-started events." + POLL_NOTE,
            labels=["queue"],
        )
        for queue in queues:
            name = self._label(queue.name)
            oldest_active.add_metric([name], queue.oldest_active_age)
            waiting_age = queue.oldest_age if queue.consumers else 0.0
            oldest.add_metric([name, "waiting"], waiting_age)
            oldest.add_metric([name, "paused"], 0.0 if queue.consumers else queue.oldest_age)
            lower_bound.add_metric([name], 1 if queue.oldest_age_lower_bound else 0)
            for status in STATUSES:
                jobs.add_metric([name, status], queue.counts[status])
            consumers.add_metric([name], queue.consumers)
            prefetched.add_metric([name], queue.prefetched)
            capacity.add_metric([name], queue.capacity)
        yield jobs
        yield consumers
        yield prefetched
        yield capacity
        yield oldest
        yield lower_bound
        yield oldest_active

    def _worker_metrics(self) -> Iterator[Family]:
        up = GaugeMetricFamily(
            "celery_worker_up",
            "1 if the worker answered the last inspect round or sent a recent heartbeat.",
            labels=["worker"],
        )
        active = GaugeMetricFamily(
            "celery_worker_active_tasks", "Tasks the worker is running.", labels=["worker"]
        )
        concurrency = GaugeMetricFamily(
            "celery_worker_concurrency",
            "The worker's pool size (processes or threads), from the last stats reply "
            "that gave it; only for live workers.",
            labels=["worker"],
        )
        for worker in self._snapshot.workers.values():
            name = self._label(worker.hostname)
            up.add_metric([name], 1 if worker.up else 0)
            active.add_metric([name], worker.active if worker.up else 0)
            if worker.up and worker.concurrency is not None:
                concurrency.add_metric([name], worker.concurrency)
        yield up
        yield active
        yield concurrency

    def _task_metrics(self) -> Iterator[Family]:
        stats = self._snapshot.stats
        outcomes = CounterMetricFamily(
            "celery_tasks",
            "Task executions that ended, by queue, task name and outcome "
            "(succeeded, failed, retried, revoked, rejected, and lost: running on a worker "
            "declared down, their message gone), from the event stream.",
            labels=["queue", "task", "outcome"],
        )
        label = self._label
        for (queue, task, outcome), value in sorted(stats.outcomes.items()):
            outcomes.add_metric([label(queue), label(task), outcome], value)
        yield outcomes
        recovered = CounterMetricFamily(
            "celery_tasks_lost_recovered",
            "Executions counted as lost whose real end arrived later (their worker was only "
            "cut off); each execution is counted once in celery_tasks_total.",
            labels=["queue", "task"],
        )
        for (queue, task), value in sorted(stats.recovered.items()):
            recovered.add_metric([label(queue), label(task)], value)
        yield recovered
        failures = CounterMetricFamily(
            "celery_task_failures",
            "Failed executions by queue, task name and exception class (from task-failed "
            "events; past --max-exception-types, new classes are counted as 'other').",
            labels=["queue", "task", "exception"],
        )
        for (queue, task, exception), value in sorted(stats.failures.items()):
            failures.add_metric([label(queue), label(task), label(exception)], value)
        yield failures
        runtime = Histograms(
            "celery_task_runtime_seconds",
            "How long task executions ran, by queue and task name.",
            labels=("queue", "task"),
        )
        for (queue, task), data in sorted(stats.runtime.items()):
            runtime.add((label(queue), label(task)), data)
        yield runtime
        wait = Histograms(
            "celery_task_queue_wait_seconds",
            "Time from when a job could run (published, or its ETA) to when it started.",
            labels=("queue",),
        )
        for queue, data in sorted(stats.queue_wait.items()):
            wait.add((label(queue),), data)
        yield wait

    def _self_metrics(self) -> Iterator[Family]:
        snap = self._snapshot
        counters = snap.counters
        yield _gauge("celery_exporter_up", "1 if the last read of the broker succeeded.",
                     1 if snap.broker_up else 0)
        info = GaugeMetricFamily(
            "celery_exporter_build_info",
            "The exporter's version and the Python and Celery it runs on; always 1.",
            labels=["version", "python_version", "celery_version"],
        )
        info.add_metric([__version__, platform.python_version(), celery.__version__], 1)
        yield info
        yield _gauge("celery_exporter_refresh_duration_seconds",
                     "How long building the current snapshot took.", snap.refresh_duration)
        yield _gauge("celery_exporter_last_refresh_timestamp_seconds",
                     "When the current snapshot was built (Unix time).", snap.created_at)
        yield _gauge("celery_exporter_last_successful_refresh_timestamp_seconds",
                     "When the broker was last read successfully (Unix time; 0 if never).",
                     snap.last_success or 0.0)
        yield _gauge("celery_exporter_broker_round_trips",
                     "Redis round trips of the last broker read.", snap.broker_round_trips)
        source_up = GaugeMetricFamily(
            "celery_exporter_source_up",
            "1 if the source's last read succeeded (broker, workers, events).",
            labels=["source"],
        )
        source_last = GaugeMetricFamily(
            "celery_exporter_source_last_success_timestamp_seconds",
            "When the source last read successfully (Unix time; 0 if never).",
            labels=["source"],
        )
        for source in snap.sources.values():
            if not source.enabled:
                continue
            source_up.add_metric([source.name], 1 if source.up else 0)
            source_last.add_metric([source.name], source.last_success or 0.0)
        yield source_up
        yield source_last
        yield _counter("celery_exporter_events_received",
                       "Celery events received from the event stream.", counters.events_received)
        yield _counter("celery_exporter_events_undecodable",
                       "Event stream payloads or events that could not be decoded (skipped).",
                       counters.events_undecodable)
        yield _counter("celery_exporter_events_lost",
                       "task-started events known to be missed (from workers' heartbeat "
                       "counters), e.g. while the subscription was dropped.",
                       counters.events_lost)
        yield _counter("celery_exporter_event_stream_reconnects",
                       "Times the event subscription was lost and made again.",
                       counters.stream_reconnects)
        yield _counter("celery_exporter_event_stream_disconnected_seconds",
                       "Seconds without an event subscription after one was lost; events "
                       "published meanwhile were not seen.",
                       counters.stream_disconnected_seconds)
        yield _counter("celery_exporter_jobs_evicted",
                       "In-flight jobs forgotten because more were tracked than allowed.",
                       counters.jobs_evicted)
        malformed = CounterMetricFamily(
            "celery_exporter_malformed_messages",
            "Broker entries or worker replies that could not be read (skipped), by source.",
            labels=["source"],
        )
        for origin, value in sorted(counters.malformed.items()):
            malformed.add_metric([origin], value)
        yield malformed
        if counters.actions:  # a sidecar serving the Jobs API counts every action from 0
            actions = CounterMetricFamily(
                "celery_exporter_actions",
                "Job actions asked through the API, by action and outcome: ok (carried "
                "out), failed (failed while carried out) or refused (not carried out: "
                "unknown job, wrong status, bad request, broker unreachable).",
                labels=["action", "outcome"],
            )
            for (action, outcome), count in sorted(counters.actions.items()):
                actions.add_metric([action, outcome], count)
            yield actions
        yield _gauge("celery_exporter_folded_task_names",
                     "Distinct task names reported as task=\"other\" past the name limit.",
                     snap.stats.folded_task_names)
        yield _gauge("celery_exporter_folded_task_series",
                     "Distinct (queue, task) pairs reported as task=\"other\" of their queue "
                     "past --max-task-series.",
                     snap.stats.folded_task_series)
        yield _gauge("celery_exporter_folded_exception_types",
                     "Distinct exception classes reported as exception=\"other\" past "
                     "--max-exception-types.",
                     snap.stats.folded_exception_types)
        yield _gauge("celery_exporter_dropped_queue_names",
                     "Distinct queue names not reported at all past --max-queues.",
                     snap.dropped_queue_names)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
