"""The refresher: the only writer. Reads the sources, builds a Snapshot, swaps it in.

A failing source keeps its last good reading, is marked down with the time of its
last success, and never stops the loop or the other sources. Every source call has a
deadline: the broker read gets the refresh interval, the inspect round the inspect
timeout (plus a second to connect), so a refresh never takes longer than the refresh
interval plus the inspect timeout, whatever the broker does. A read past its deadline
is left to finish on its own thread; the next refresh waits for that one rather than
start another, so a hung broker never piles up threads.

Each refresh takes one frozen view of the tracker, after all of its writes to it
(routes, revived and dropped runs, workers declared down). What it needs before
then (workers online, queues seen, running jobs, what each worker last said)
comes from small targeted reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from exporter.config.settings import Settings, redact_url
from exporter.core.assembly import SnapshotInputs, build_queue_states, live_workers, place_tasks
from exporter.core.heads import HeadClock
from exporter.core.history import SAVE_CHUNK, JobHistory
from exporter.core.tracker import TaskTracker
from exporter.model.readings import BrokerReading, WorkersReading
from exporter.model.snapshot import ExporterCounters, Snapshot, SourceHealth, WorkerState
from exporter.model.tracking import TrackerView
from exporter.protocol.routing import resolve_queue
from exporter.sources.broker import BrokerSource
from exporter.sources.workers import WorkersSource

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A worker down this long is no longer reported (its worker_up series ends).
WORKER_FORGET_AFTER = 3600.0
#: Time an inspect round may take beyond --inspect-timeout to connect and publish.
INSPECT_GRACE = 1.0


class SourceTimeout(Exception):
    """A source did not answer within its deadline."""


class _Call(Generic[T]):
    """At most one call of a source in flight; one past its deadline finishes alone."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._future: Future[T] | None = None
        self._since = 0.0

    def start(self, function: Callable[[], T]) -> None:
        """Call `function` on the pool, unless a call from an earlier refresh still runs."""
        if self._future is None or self._future.done():
            self._future = self._pool.submit(function)
            self._since = time.monotonic()

    def result(self, deadline: float) -> T:
        """The running call's result by `deadline` (monotonic); SourceTimeout after it."""
        assert self._future is not None, "start() first"
        try:
            return self._future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            waited = time.monotonic() - self._since
            raise SourceTimeout(f"no answer after {waited:.1f}s") from None


@dataclass
class _SourceState(Generic[T]):
    """The last good reading of a source and its health."""

    name: str
    reading: T | None = None
    up: bool = False
    last_success: float | None = None
    last_error: str | None = None
    duration: float | None = None
    enabled: bool = True

    def succeeded(self, reading: T, duration: float) -> None:
        if not self.up and self.last_error is not None:
            log.info("%s source recovered", self.name)
        self.reading, self.up, self.last_error = reading, True, None
        self.last_success, self.duration = time.time(), duration

    def failed(self, error: BaseException, duration: float) -> None:
        message = redact_url(f"{type(error).__name__}: {error}")
        if self.up or self.last_error != message:
            log.warning("%s source failed: %s (serving its last good data)", self.name, message)
        self.up, self.last_error, self.duration = False, message, duration

    def health(self) -> SourceHealth:
        return SourceHealth(
            self.name, self.up, self.last_success, self.last_error, self.duration, self.enabled
        )


SnapshotListener = Callable[[Snapshot], None]


class Refresher:
    """Builds a new Snapshot every refresh interval in its own thread."""

    def __init__(
        self,
        settings: Settings,
        broker: BrokerSource,
        workers: WorkersSource | None,
        tracker: TaskTracker,
        *,
        events_enabled: bool = True,
        on_snapshot: SnapshotListener | None = None,
        history: JobHistory | None = None,
    ) -> None:
        self._history = history
        self._history_loaded = history is None
        self._settings = settings
        self._broker_source = broker
        self._workers_source = workers
        self._tracker = tracker
        self._heads = HeadClock(tracker.lookup)
        self._on_snapshot = on_snapshot
        self._broker = _SourceState[BrokerReading]("broker")
        self._workers = _SourceState[WorkersReading]("workers", enabled=workers is not None)
        self._events_enabled = events_enabled
        self._known_worker_queues: dict[str, tuple[str, ...]] = {}
        self._known_worker_concurrency: dict[str, int] = {}
        self._expected_workers: set[str] = set()
        #: When each worker now down was declared down, and what it held then.
        self._down_since: dict[str, float] = {}
        self._stranded_by: dict[str, frozenset[str]] = {}
        #: What each worker held in its last complete inspect reply.
        self._held_by: dict[str, frozenset[str]] = {}
        self._worker_replied_at: dict[str, float] = {}
        self._malformed = {"unacked": 0, "inspect": 0, "history": 0}
        self._generation = 0
        self._failures = 0
        self._last_success: float | None = None
        self._snapshot: Snapshot | None = None
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="source")
        self._broker_call = _Call[BrokerReading](self._pool)
        self._workers_call = _Call[WorkersReading](self._pool)
        self._history_call = _Call[None](self._pool)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        """The newest snapshot (None before the first refresh)."""
        return self._snapshot

    def start(self) -> None:
        """Refresh now and then every interval, in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="refresher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait for the current refresh to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        interval = self._settings.refresh_interval
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception:  # the loop must survive anything a refresh does
                self._failures += 1
                log.exception("refresh failed; will try again")
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def refresh_once(self) -> Snapshot:
        """Read every source (each within its deadline), build a snapshot, publish it."""
        started = time.monotonic()
        settings = self._settings
        expected = self._tracker.online_workers() | self._expected_workers
        extra_queues = self._tracker.queues_seen() | {
            q for queues in self._known_worker_queues.values() for q in queues
        }
        workers_source = self._workers_source
        if workers_source is not None:  # first: the inspect round runs meanwhile
            self._workers_call.start(lambda: workers_source.read(expected))
        self._broker_call.start(lambda: self._broker_source.read(extra_queues))
        try:
            reading = self._broker_call.result(started + settings.refresh_interval)
            self._broker.succeeded(reading, time.monotonic() - started)
            self._malformed["unacked"] += reading.new_malformed
            self._last_success = time.time()
        except Exception as exc:
            self._broker.failed(exc, time.monotonic() - started)
        if self._broker.up and self._history is not None:
            self._run_history(started + settings.refresh_interval)

        if workers_source is not None:
            try:
                workers = self._workers_call.result(
                    started + settings.inspect_timeout + INSPECT_GRACE
                )
                self._workers.succeeded(workers, workers.duration)
                self._malformed["inspect"] += workers.malformed
                for hostname, reply in workers.replies.items():
                    self._worker_replied_at[hostname] = workers.read_at
                    if reply.complete:
                        self._known_worker_queues[hostname] = reply.queues
                    if reply.concurrency is not None:
                        self._known_worker_concurrency[hostname] = reply.concurrency
            except Exception as exc:
                self._workers.failed(exc, time.monotonic() - started)

        snapshot = self._build(started)
        self._snapshot = snapshot
        if self._on_snapshot is not None:
            self._on_snapshot(snapshot)
        return snapshot

    def _run_history(self, deadline: float) -> None:
        """Sync the history on its own thread; a slow load or save never delays the snapshot."""
        self._history_call.start(self._sync_history)
        try:
            self._history_call.result(deadline)
        except SourceTimeout:
            pass  # still loading or saving: it goes on, and the next refresh waits for it
        except Exception:
            log.exception("job history sync failed")
        if self._history is not None:
            self._malformed["history"] = self._history.malformed

    def _sync_history(self) -> None:
        """Load saved jobs once, then save what finished since the last refresh.

        The load is done once, even if it stops halfway (the broker went away, say):
        the jobs it restored stay, none is restored twice, and new jobs are saved.
        """
        history = self._history
        if history is None:
            return
        if not self._history_loaded:
            self._history_loaded = True
            restored = 0
            try:
                for jobs in history.load(self._tracker.queues.admit):
                    restored += self._tracker.restore(jobs)
                log.info("restored %d finished jobs saved before the last restart", restored)
            except Exception as exc:
                log.warning(
                    "could not load all of the job history (%d jobs restored; the rest "
                    "stays in Redis): %s", restored, redact_url(str(exc)),
                )
        unsaved = self._tracker.take_unsaved()
        for start in range(0, len(unsaved), SAVE_CHUNK):
            try:
                history.save(unsaved[start : start + SAVE_CHUNK])
            except Exception as exc:  # kept for the next refresh, within the retention
                self._tracker.return_unsaved(unsaved[start:])
                log.warning(
                    "could not save %d finished jobs to the history (will retry): %s",
                    len(unsaved) - start, redact_url(str(exc)),
                )
                return

    def _build(self, started: float) -> Snapshot:
        broker = self._broker.reading
        workers_reading = self._workers.reading if self._workers.up else None
        self._teach_tracker(broker, workers_reading)
        now = time.time()
        inputs = SnapshotInputs(
            broker=broker,
            workers=self._workers.reading,
            workers_healthy=self._workers.up,
            known_worker_queues=self._known_worker_queues,
            known_worker_replied_at=self._worker_replied_at,
            known_worker_concurrency=self._known_worker_concurrency,
            # Who is up is decided before the view: declaring the others down writes.
            tracker=TrackerView.of_workers(self._tracker.workers_seen()),
            configured_queues=self._settings.queues,
            worker_timeout=self._settings.worker_timeout,
            forget_after=WORKER_FORGET_AFTER,
            now=now,
            admission=self._tracker.queues,
            head_ages=self._heads.ages(broker.heads, now) if broker else {},
        )
        workers = live_workers(inputs)
        self._expected_workers = {h for h, w in workers.items() if w.up}
        self._settle_dead_workers(workers, broker, now)
        view = self._tracker.view()  # the refresh's one view: every write above is in it
        inputs = replace(inputs, tracker=view, stranded=self._stranded(broker))
        placements = place_tasks(inputs)
        queues = build_queue_states(inputs, workers, placements)
        details = self._tracker.lookup(p.task_id for p in placements)
        self._generation += 1
        events_health = SourceHealth(
            "events",
            up=view.stream_connected,
            last_success=now if view.stream_connected else None,
            enabled=self._events_enabled,
        )
        return Snapshot(
            generation=self._generation,
            created_at=now,
            queues=queues,
            workers=workers,
            stats=view.stats,
            sources={
                "broker": self._broker.health(),
                "workers": self._workers.health(),
                "events": events_health,
            },
            counters=ExporterCounters(
                events_received=view.events_received,
                events_undecodable=view.events_undecodable,
                events_lost=view.events_lost,
                stream_reconnects=view.stream_reconnects,
                stream_disconnected_seconds=view.stream_disconnected_seconds,
                jobs_evicted=view.jobs_evicted,
                malformed=dict(self._malformed),
                refreshes=self._generation,
                refresh_failures=self._failures,
            ),
            placements=tuple(placements),
            refresh_duration=time.monotonic() - started,
            last_success=self._last_success,
            broker_round_trips=broker.round_trips if broker and self._broker.up else 0,
            stream_connected=view.stream_connected,
            retained_jobs=view.retained_jobs,
            job_details=details,
            dropped_queue_names=self._tracker.queues.refused,
            max_label_length=self._settings.max_label_length,
        )

    def _teach_tracker(
        self, broker: BrokerReading | None, workers: WorkersReading | None
    ) -> None:
        """Pass the queues of in-flight tasks to the tracker; drop runs no worker holds."""
        task_queues = {entry.task_id: entry.queue for entry in broker.unacked} if broker else {}
        if workers is not None:
            bindings = broker.bound_queues if broker else {}
            held: set[str] = set()
            running: set[str] = set()
            for reply in workers.replies.values():
                tasks = (*reply.active, *reply.reserved, *reply.scheduled)
                for task in tasks:
                    task_queues.setdefault(
                        task.task_id, resolve_queue(task.exchange, task.routing_key, bindings)
                    )
                    held.add(task.task_id)
                running.update(task.task_id for task in reply.active)
                if reply.complete:
                    self._held_by[reply.hostname] = frozenset(t.task_id for t in tasks)
            self._drop_stale_active(workers, held)
            self._tracker.revive(running)  # a worker only cut off: its lost jobs run
        self._tracker.learn_routes(task_queues, self._known_worker_queues)

    def _settle_dead_workers(
        self, workers: Mapping[str, WorkerState], broker: BrokerReading | None, now: float
    ) -> None:
        """Declare the jobs of workers that went down lost (or stranded).

        A worker is declared once, when it is first seen down; `now` is when its
        lost jobs finished. Workers seen up again, or no longer reported, are forgotten.
        """
        in_broker: set[str] | None = None  # read only when a worker is newly down
        for hostname in list(self._down_since):
            if hostname not in workers or workers[hostname].up:
                del self._down_since[hostname]
                self._stranded_by.pop(hostname, None)
        for hostname in list(self._held_by):
            if hostname not in workers:
                del self._held_by[hostname]
        for hostname, worker in workers.items():
            if worker.up or hostname in self._down_since:
                continue
            self._down_since[hostname] = now
            if in_broker is None:
                in_broker = {entry.task_id for entry in broker.unacked} if broker else set()
            held = self._tracker.declare_lost(hostname, now, in_broker)
            self._stranded_by[hostname] = held | self._held_by.get(hostname, frozenset())
            log.warning("worker %s is down: its running jobs are no longer active", hostname)

    def _stranded(self, broker: BrokerReading | None) -> frozenset[str]:
        """Messages still in the unacked hash that workers declared down held."""
        if not self._stranded_by or broker is None:
            return frozenset()
        held = frozenset().union(*self._stranded_by.values())
        return frozenset(entry.task_id for entry in broker.unacked if entry.task_id in held)

    def _drop_stale_active(self, workers: WorkersReading, held: set[str]) -> None:
        """Events say running, yet the worker that ran it answered without it: it ended."""
        round_started = workers.read_at - workers.duration
        stale = [
            job.task_id
            for job in self._tracker.active()
            if job.task_id not in held
            and job.hostname is not None
            and job.hostname in workers.replies
            and workers.replies[job.hostname].complete
            and (job.started_at or 0.0) < round_started - 1.0
        ]
        if stale:
            self._tracker.drop_active(stale)
