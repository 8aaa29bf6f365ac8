"""What the Celery events told: jobs, worker liveness and the stream's own counters.

`TaskTracker` is the facade over the parts (jobs, routes, liveness, stream, outbox)
and holds their one lock: the event stream's thread calls `apply_batch`, which takes
it once per batch, not once per event; the refresher reads and writes through the
other methods, and takes one frozen `view` per refresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Set

from exporter.core.jobstore import JobStore
from exporter.core.taskstats import TaskStats
from exporter.core.tracker.jobs import OUTCOMES, RECENTLY_FINISHED, WORKER_LOST, JobBook
from exporter.core.tracker.liveness import MAX_WORKERS, Liveness
from exporter.core.tracker.outbox import Outbox
from exporter.core.tracker.routes import MAX_ROUTES, Routes
from exporter.core.tracker.stream import StreamBook
from exporter.model.jobs import Job, RetentionLimits
from exporter.model.tracking import ActiveJob, TrackerView, WorkerSeen
from exporter.protocol.cardinality import DEFAULT_MAX_QUEUES, QueueAdmission
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.events import Event

__all__ = [
    "MAX_ROUTES",
    "MAX_WORKERS",
    "OUTCOMES",
    "RECENTLY_FINISHED",
    "WORKER_LOST",
    "TaskTracker",
]


class TaskTracker:
    """Owns the in-flight jobs, the job store, the task stats and worker liveness."""

    def __init__(
        self,
        *,
        limits: RetentionLimits,
        stats: TaskStats,
        max_tracked_jobs: int = 100_000,
        clock: Callable[[], float] = time.time,
        queues: QueueAdmission | None = None,
    ) -> None:
        self.lock = threading.Lock()
        #: Which queue names are reported (shared with the snapshot's builder).
        self.queues = queues if queues is not None else QueueAdmission(DEFAULT_MAX_QUEUES)
        self.store = JobStore(limits)
        self.stats = stats
        self._clock = clock
        self._routes = Routes(self.queues)
        self._outbox = Outbox(limits)
        self._liveness = Liveness(clock)
        self._stream = StreamBook()
        self._jobs = JobBook(
            store=self.store,
            stats=stats,
            routes=self._routes,
            outbox=self._outbox,
            on_started=self._liveness.started,
            max_tracked=max_tracked_jobs,
        )
        self._task_handlers = self._jobs.handlers()
        self._worker_handlers: dict[str, Callable[[Event, str], None]] = {
            "worker-online": self._on_worker,
            "worker-heartbeat": self._on_worker,
            "worker-offline": self._on_worker_offline,
        }

    # -- feeding -----------------------------------------------------------------

    def apply_batch(self, events: Iterable[Event], undecodable: int = 0) -> None:
        """Apply decoded events in order; count those that could not be decoded.

        A task event needs its `uuid` and `timestamp`, a worker event its `hostname`;
        one without them, or with an unreadable ETA, is counted and skipped.
        """
        with self.lock:
            stream = self._stream
            stream.undecodable += undecodable
            task_handlers = self._task_handlers
            worker_handlers = self._worker_handlers
            received = 0
            try:
                for event in events:
                    received += 1
                    try:
                        handler = task_handlers.get(event.type)
                        if handler is not None:
                            if event.uuid is None or event.timestamp is None:
                                raise MalformedMessage("task event without uuid or timestamp")
                            handler(event, event.uuid, event.timestamp)
                            continue
                        worker_handler = worker_handlers.get(event.type)
                        if worker_handler is not None:
                            if event.hostname is None:
                                raise MalformedMessage("worker event without hostname")
                            worker_handler(event, event.hostname)
                    except (MalformedMessage, TypeError, ValueError, KeyError, AttributeError):
                        stream.undecodable += 1
            finally:
                stream.received += received

    def _on_worker(self, event: Event, hostname: str) -> None:
        self._stream.lost += self._liveness.heard(event, hostname)

    def _on_worker_offline(self, event: Event, hostname: str) -> None:
        self._liveness.offline(hostname)
        self._jobs.stop_running_on(hostname)

    def mark_stream(self, connected: bool, *, reconnected: bool = False) -> None:
        """Record the event stream's connection state, and how long a lost one stayed lost.

        Time counts from losing a subscription that worked until the next one is
        confirmed: events published meanwhile never reach the exporter.
        """
        with self.lock:
            self._stream.mark(connected, reconnected=reconnected)

    def learn_routes(
        self,
        task_queues: Mapping[str, str],
        worker_queues: Mapping[str, tuple[str, ...]],
    ) -> None:
        """Tell which queue running tasks came from and which queues workers consume.

        Events other than `task-sent` do not name a queue; the refresher passes what
        the broker's unacked hash and the workers' replies say.
        """
        with self.lock:
            self._jobs.place(task_queues)
            self._routes.consumed(worker_queues)

    def restore(self, jobs: Iterable[Job]) -> int:
        """Put back finished jobs kept before a restart (given newest first per queue)."""
        with self.lock:
            return self._jobs.restore(jobs)

    def declare_lost(self, hostname: str, at: float, in_broker: Set[str]) -> frozenset[str]:
        """A worker was declared down at `at`: its running jobs stop being active.

        A running job whose message is still in the broker (`in_broker`: acks_late, it
        comes back after the visibility timeout) waits to run again. The others are
        lost: recorded as failed (`WorkerLost`, finished when the worker was declared
        down) and counted under the `lost` outcome. Returns the ids of every job the
        events say the worker held (received, started or waiting for its ETA).
        """
        with self.lock:
            return self._jobs.declare_lost(hostname, at, in_broker)

    def revive(self, task_ids: Iterable[str]) -> None:
        """Lost jobs a live worker says it runs after all (it was only cut off): active again."""
        if not self._jobs.any_lost:  # nearly always: no lock taken on the refresher's path
            return
        with self.lock:
            self._jobs.revive(task_ids)

    def drop_active(self, task_ids: Iterable[str]) -> None:
        """Running jobs no worker holds any more stop being active (see JobBook)."""
        with self.lock:
            self._jobs.drop_active(task_ids)

    # -- reading -----------------------------------------------------------------

    def hide(self, task_id: str) -> None:
        """A job cancelled through the API stops being placed before its worker says so."""
        with self.lock:
            self._jobs.hide(task_id)

    def remove_retained(self, queue: str, task_id: str) -> Job | None:
        """Forget one retained finished job (an admin removed it); None if not kept."""
        with self.lock:
            job = self._jobs.remove_retained(queue, task_id)
            if job is not None:
                self._outbox.discard(job)
            return job

    def mark_retried(self, queue: str, task_id: str, new_id: str) -> None:
        """Record on a retained job the task id of its retry."""
        with self.lock:
            self._jobs.mark_retried(queue, task_id, new_id)

    def view(self) -> TrackerView:
        """A frozen copy of counts, active jobs, stats and workers."""
        with self.lock:
            self.store.prune(self._clock())
            stream = self._stream
            return TrackerView(
                retained=self.store.counts(),
                retained_jobs=self.store.frozen(),
                active=self._jobs.active(),
                stats=self.stats.data(),
                workers=self._liveness.seen(),
                queues_seen=self._routes.seen(),
                events_received=stream.received,
                events_undecodable=stream.undecodable,
                events_lost=stream.lost,
                jobs_evicted=self._jobs.evicted,
                stream_connected=stream.connected,
                stream_reconnects=stream.reconnects,
                stream_disconnected_seconds=stream.disconnected_seconds(),
                recently_finished=self._jobs.recently_finished(),
            )

    def online_workers(self) -> frozenset[str]:
        """Workers whose last event was not worker-offline."""
        with self.lock:
            return self._liveness.online()

    def queues_seen(self) -> frozenset[str]:
        """The queues the events named, within --max-queues."""
        with self.lock:
            return self._routes.seen()

    def workers_seen(self) -> dict[str, WorkerSeen]:
        """What the events last said about each worker (as `view().workers`)."""
        with self.lock:
            return self._liveness.seen()

    def active(self) -> tuple[ActiveJob, ...]:
        """The jobs the events say are running (as `view().active`)."""
        with self.lock:
            return self._jobs.active()

    def lookup(self, task_ids: Iterable[str]) -> dict[str, Job]:
        """In-flight jobs by id (those the events told about)."""
        with self.lock:
            return self._jobs.lookup(task_ids)

    # -- the job history's outbox -----------------------------------------------------

    def take_unsaved(self) -> list[Job]:
        """Finished jobs not persisted yet (at most the retention per queue), oldest first."""
        with self.lock:
            jobs = self._outbox.take()
        jobs.sort(key=lambda j: j.finished_at or 0.0)
        return jobs

    def return_unsaved(self, jobs: Sequence[Job]) -> None:
        """Give back jobs a failed save did not persist (oldest first), for the next save.

        They go behind anything that finished since; a list already holding its
        retention limit of newer jobs keeps those, as the history would.
        """
        with self.lock:
            self._outbox.give_back(jobs)
