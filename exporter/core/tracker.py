"""Apply Celery events to jobs, retention, counters and worker liveness.

The event stream's thread calls `apply_batch`; the refresher calls `view` for a
frozen copy. One lock guards both, taken once per batch, not once per event.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence, Set

from exporter.core.jobstore import JobStore
from exporter.core.taskstats import TaskStats
from exporter.model.jobs import (
    MAX_FAILURES,
    MAX_TRACEBACK,
    Interner,
    Job,
    RetentionLimits,
    clip,
    pack_traceback,
)
from exporter.model.tracking import ActiveJob, TrackerView, WorkerSeen
from exporter.protocol.cardinality import DEFAULT_MAX_QUEUES, QueueAdmission
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.events import Event
from exporter.protocol.messages import parse_eta

OUTCOMES = ("succeeded", "failed", "retried", "revoked", "rejected", "lost")
#: The exception a lost job is recorded with: `failedReason` reads "WorkerLost: …".
WORKER_LOST = "WorkerLost"
#: Workers remembered from events (least recently heard of forgotten first), and task
#: names whose queue is remembered: bounds against a broker full of invented names.
MAX_WORKERS = 2_000
MAX_ROUTES = 10_000
#: Ids of the latest finished jobs, remembered so that a worker reply taken a moment
#: before a job ended does not count it as still running.
RECENTLY_FINISHED = 20_000


class _HeartbeatGap:
    """Counts task-started events missed, from a worker's cumulative `processed` counter."""

    __slots__ = ("base_processed", "pid", "reported", "started_since")

    def __init__(self, pid: object, processed: int) -> None:
        self.pid = pid
        self.base_processed = processed
        self.started_since = 0
        self.reported = 0


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
        self._max_tracked = max_tracked_jobs
        self._inflight: OrderedDict[str, Job] = OrderedDict()
        self._active: dict[str, Job] = {}
        self._task_queue: dict[str, str] = {}
        self._queues_seen: set[str] = set()
        self._workers: OrderedDict[str, WorkerSeen] = OrderedDict()  # least recent first
        self._worker_queues: dict[str, tuple[str, ...]] = {}
        self._gaps: dict[str, _HeartbeatGap] = {}
        self._intern = Interner()
        self._unsaved: dict[tuple[str, str], deque[Job]] = {}
        self._recently_finished: OrderedDict[str, None] = OrderedDict()
        #: Jobs recorded as lost, by id, in case their worker speaks again; and the
        #: executions counted as lost whose real end has not come (yet).
        self._lost: OrderedDict[str, Job] = OrderedDict()
        self._lost_ids: OrderedDict[str, None] = OrderedDict()
        #: Whether the app sends task-sent events (task_send_sent_event).
        self._sent_events = False
        self.events_received = 0
        self.events_undecodable = 0
        self.events_lost = 0
        self.jobs_evicted = 0
        self.stream_connected = False
        self.stream_reconnects = 0
        self._stream_seconds_lost = 0.0
        self._stream_lost_at: float | None = None  # monotonic, while a subscription is lost
        self._monotonic = time.monotonic
        self._task_handlers: dict[str, Callable[[Event, str, float], None]] = {
            "task-sent": self._on_sent,
            "task-received": self._on_received,
            "task-started": self._on_started,
            "task-succeeded": self._on_succeeded,
            "task-failed": self._on_failed,
            "task-retried": self._on_retried,
            "task-revoked": self._on_revoked,
            "task-rejected": self._on_rejected,
        }
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
            self.events_undecodable += undecodable
            task_handlers = self._task_handlers
            worker_handlers = self._worker_handlers
            for event in events:
                self.events_received += 1
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
                    self.events_undecodable += 1

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
            for task_id, queue in task_queues.items():
                job = self._inflight.get(task_id)
                if job is not None and job.queue is None:
                    job.queue = queue
                    self._see_queue(queue)
                if job is not None and job.name:
                    self._route(job.name, job.queue or queue)
            self._worker_queues = dict(worker_queues)

    def mark_stream(self, connected: bool, *, reconnected: bool = False) -> None:
        """Record the event stream's connection state, and how long a lost one stayed lost.

        Time counts from losing a subscription that worked until the next one is
        confirmed: events published meanwhile never reach the exporter.
        """
        with self.lock:
            if connected and self._stream_lost_at is not None:
                self._stream_seconds_lost += self._monotonic() - self._stream_lost_at
                self._stream_lost_at = None
            elif not connected and self.stream_connected:
                self._stream_lost_at = self._monotonic()
            self.stream_connected = connected
            if reconnected:
                self.stream_reconnects += 1

    def _stream_disconnected_seconds(self) -> float:
        ongoing = 0.0 if self._stream_lost_at is None else self._monotonic() - self._stream_lost_at
        return self._stream_seconds_lost + ongoing

    # -- reading -----------------------------------------------------------------

    def view(self) -> TrackerView:
        """A frozen copy of counts, active jobs, stats and workers."""
        with self.lock:
            self.store.prune(self._clock())
            return TrackerView(
                retained=self.store.counts(),
                retained_jobs=self.store.frozen(),
                active=tuple(
                    ActiveJob(j.id, j.name, j.queue, j.hostname, j.started_at)
                    for j in self._active.values()
                ),
                stats=self.stats.data(),
                workers=dict(self._workers),
                queues_seen=frozenset(self._queues_seen),
                events_received=self.events_received,
                events_undecodable=self.events_undecodable,
                events_lost=self.events_lost,
                jobs_evicted=self.jobs_evicted,
                stream_connected=self.stream_connected,
                stream_reconnects=self.stream_reconnects,
                stream_disconnected_seconds=self._stream_disconnected_seconds(),
                recently_finished=frozenset(self._recently_finished),
            )

    def lookup(self, task_ids: Iterable[str]) -> dict[str, Job]:
        """In-flight jobs by id (those the events told about)."""
        with self.lock:
            found = {}
            for task_id in task_ids:
                job = self._inflight.get(task_id)
                if job is not None:
                    found[task_id] = job
            return found

    def take_unsaved(self) -> list[Job]:
        """Finished jobs not persisted yet (at most the retention per queue), oldest first."""
        with self.lock:
            jobs = [job for kept in self._unsaved.values() for job in kept]
            self._unsaved.clear()
        jobs.sort(key=lambda j: j.finished_at or 0.0)
        return jobs

    def return_unsaved(self, jobs: Sequence[Job]) -> None:
        """Give back jobs a failed save did not persist (oldest first), for the next save.

        They go behind anything that finished since; a list already holding its
        retention limit of newer jobs keeps those, as the history would.
        """
        with self.lock:
            for job in reversed(jobs):
                unsaved = self._unsaved_of(job)
                if len(unsaved) < (unsaved.maxlen or 0):
                    unsaved.appendleft(job)

    def restore(self, jobs: Iterable[Job]) -> int:
        """Put back finished jobs kept before a restart (given newest first per queue)."""
        restored = 0
        with self.lock:
            for job in jobs:
                if not self._see_queue(job.queue or "unknown"):
                    continue
                self.store.restore(job)
                restored += 1
        return restored

    def declare_lost(self, hostname: str, at: float, in_broker: Set[str]) -> frozenset[str]:
        """A worker was declared down at `at`: its running jobs stop being active.

        A running job whose message is still in the broker (`in_broker`: acks_late, it
        comes back after the visibility timeout) waits to run again. The others are
        lost: recorded as failed (`WorkerLost`, finished when the worker was declared
        down) and counted under the `lost` outcome. Returns the ids of every job the
        events say the worker held (received, started or waiting for its ETA).
        """
        with self.lock:
            held = frozenset(
                task_id for task_id, job in self._inflight.items() if job.hostname == hostname
            )
            for task_id in [i for i, job in self._active.items() if job.hostname == hostname]:
                job = self._active.pop(task_id)
                if task_id in in_broker:
                    job.state = "pending"
                    continue
                self._lose(job, hostname, at)
            return held

    def revive(self, task_ids: Iterable[str]) -> None:
        """Lost jobs a live worker says it runs after all (it was only cut off): active again."""
        if not self._lost:  # nearly always: no lock taken on the refresher's path
            return
        with self.lock:
            for task_id in task_ids:
                job = self._unlose(task_id)
                if job is not None:
                    job.state, job.finished_at = "started", None
                    self._inflight[task_id] = job
                    self._active[task_id] = job
                    self._recently_finished.pop(task_id, None)

    def _lose(self, job: Job, hostname: str, at: float) -> None:
        job.state, job.finished_at = "failed", at
        reason = f"{WORKER_LOST}({f'worker {hostname} stopped while the job ran'!r})"
        self._add_failure(job, (self._intern(clip(reason)), None))
        self._inflight.pop(job.id, None)
        self._recently_finished[job.id] = None
        self._lost[job.id] = job
        self._lost_ids[job.id] = None
        if len(self._lost) > RECENTLY_FINISHED:
            self._lost.popitem(last=False)
        if len(self._lost_ids) > RECENTLY_FINISHED:
            self._lost_ids.popitem(last=False)
        queue = self._queue_of(job)
        if queue is not None:
            self.stats.touch(queue, job.name, OUTCOMES)
            self.stats.count(queue, job.name, "lost")
        self._keep(job)

    def _unlose(self, task_id: str) -> Job | None:
        """Take a job back from the lost ones (its worker spoke again), or None."""
        job = self._lost.pop(task_id, None)
        if job is None:
            return None
        self.store.discard(job)
        if job.failures and (job.failures[-1][0] or "").startswith(WORKER_LOST + "("):
            job.failures.pop()
        return job

    def drop_active(self, task_ids: Iterable[str]) -> None:
        """Forget running jobs that no worker holds any more (their end was never seen)."""
        with self.lock:
            for task_id in task_ids:
                job = self._active.pop(task_id, None)
                if job is not None:
                    self._inflight.pop(task_id, None)

    # -- event handlers (called with the lock held) ------------------------------------

    def _job(self, task_id: str) -> Job:
        job = self._inflight.get(task_id)
        if job is None:
            job = Job(task_id)
            self._inflight[task_id] = job
            if len(self._inflight) > self._max_tracked:
                _, evicted = self._inflight.popitem(last=False)
                self._active.pop(evicted.id, None)
                self.jobs_evicted += 1
        return job

    def _see_queue(self, queue: str) -> bool:
        """Note a queue the events name; False if it is past --max-queues (not reported)."""
        if queue in self._queues_seen:
            return True
        if not self.queues.admit(queue):
            return False
        self._queues_seen.add(queue)
        return True

    def _route(self, task_name: str, queue: str) -> None:
        """Remember the queue a task name was last sent to (for events that name none)."""
        if task_name in self._task_queue or len(self._task_queue) < MAX_ROUTES:
            self._task_queue[task_name] = queue

    def _queue_of(self, job: Job) -> str | None:
        """The job's queue as reported, or None if it is past --max-queues."""
        if job.queue is None:
            queue = self._task_queue.get(job.name or "")
            if queue is None and job.hostname:
                consumed = self._worker_queues.get(job.hostname, ())
                if len(consumed) == 1:
                    queue = consumed[0]
            job.queue = queue
        queue = job.queue or "unknown"
        return queue if self._see_queue(queue) else None

    def _describe(self, job: Job, event: Event) -> None:
        if event.name:
            job.name = event.name
        if event.args is not None:
            job.args = clip(event.args)
        if event.kwargs is not None:
            job.kwargs = clip(event.kwargs)

    def _on_sent(self, event: Event, task_id: str, sent_at: float) -> None:
        eta = parse_eta(event.eta)
        job = self._job(task_id)
        self._describe(job, event)
        queue = event.queue or event.routing_key
        if queue:
            job.queue = queue
            if self._see_queue(queue) and job.name:
                self._route(job.name, queue)
                self.stats.touch(queue, job.name, OUTCOMES)
        if job.sent_at is None:
            job.sent_at = sent_at
        self._sent_events = True
        ready_at = max(sent_at, eta) if eta is not None else sent_at
        if job.wait_started_at is not None:  # published on another connection, it came late
            self._observe_wait(job, ready_at)
            return
        job.ready_at = ready_at
        job.state = "sent"

    def _on_received(self, event: Event, task_id: str, received_at: float) -> None:
        eta = parse_eta(event.eta)
        job = self._job(task_id)
        self._describe(job, event)
        if job.received_at is None:
            job.received_at = received_at
        job.hostname = event.hostname
        if job.ready_at is None or eta is not None:
            job.ready_at = max(received_at, eta) if eta is not None else received_at
        job.state = "received"

    def _on_started(self, event: Event, task_id: str, started_at: float) -> None:
        job = self._job(task_id)
        job.started_at = started_at
        job.hostname = event.hostname or job.hostname
        job.attempts += 1
        job.state = "started"
        self._active[job.id] = job
        job.wait_started_at = started_at
        # When the app sends task-sent events and this one is late (it is published on
        # the client's connection, the start on the worker's), its queue and publish
        # time decide the wait, not a guess from the task name: it is recorded when the
        # task-sent arrives, or at the job's end.
        if job.sent_at is not None or not self._sent_events:
            self._observe_wait(job, job.ready_at)
        gap = self._gaps.get(job.hostname or "")
        if gap is not None:
            gap.started_since += 1

    def _observe_wait(self, job: Job, ready_at: float | None) -> None:
        """Record the queue wait of the job's start (once), under its queue."""
        started_at, job.wait_started_at, job.ready_at = job.wait_started_at, None, None
        if started_at is None or ready_at is None:
            return
        queue = self._queue_of(job)
        if queue is not None:
            self.stats.observe_queue_wait(queue, started_at - ready_at)

    def _finish(
        self, event: Event, task_id: str, finished_at: float, state: str, outcome: str
    ) -> Job:
        lost = self._unlose(task_id)
        counted_lost = task_id in self._lost_ids
        self._lost_ids.pop(task_id, None)
        job = lost or self._inflight.get(task_id) or Job(task_id)
        if job.wait_started_at is not None:  # its task-sent never came
            self._observe_wait(job, job.ready_at)
        job.finished_at = finished_at
        job.hostname = event.hostname or job.hostname
        job.state = state
        self._active.pop(job.id, None)
        self._inflight.pop(job.id, None)
        self._recently_finished[job.id] = None
        if len(self._recently_finished) > RECENTLY_FINISHED:
            self._recently_finished.popitem(last=False)
        queue = self._queue_of(job)
        if queue is None:
            return job
        self.stats.touch(queue, job.name, OUTCOMES)
        if counted_lost:  # counted once already, as lost: its real end is a recovery
            self.stats.count_recovered(queue, job.name)
        else:
            self.stats.count(queue, job.name, outcome)
        if event.runtime is not None:
            self.stats.observe_runtime(queue, job.name, event.runtime)
        elif job.started_at is not None and outcome == "failed":
            self.stats.observe_runtime(queue, job.name, finished_at - job.started_at)
        return job

    def _record_failure(self, job: Job, event: Event) -> None:
        self._add_failure(job, (
            self._intern(clip(event.exception)),
            pack_traceback(clip(event.traceback, MAX_TRACEBACK)),
        ))

    def _add_failure(self, job: Job, failure: tuple[str | None, bytes | None]) -> None:
        if job.failures is None:
            job.failures = [failure]
        else:
            job.failures.append(failure)
            if len(job.failures) > MAX_FAILURES:
                del job.failures[0]

    def _keep(self, job: Job) -> None:
        if not self._see_queue(job.queue or "unknown"):
            return  # past --max-queues: not reported
        self.store.add(job)
        self._unsaved_of(job).append(job)

    def _unsaved_of(self, job: Job) -> deque[Job]:
        """The not-yet-persisted jobs of the job's queue and state (bounded by retention)."""
        key = (job.queue or "unknown", job.state)
        unsaved = self._unsaved.get(key)
        if unsaved is None:
            limits = self.store.limits
            limit = limits.failed if job.state == "failed" else limits.completed
            unsaved = self._unsaved[key] = deque(maxlen=max(limit, 1))
        return unsaved

    def _on_succeeded(self, event: Event, task_id: str, at: float) -> None:
        job = self._finish(event, task_id, at, "succeeded", "succeeded")
        job.result = clip(event.result)
        self._keep(job)

    def _on_failed(self, event: Event, task_id: str, at: float) -> None:
        job = self._finish(event, task_id, at, "failed", "failed")
        self._record_failure(job, event)
        self._keep(job)

    def _on_retried(self, event: Event, task_id: str, at: float) -> None:
        job = self._job(task_id)
        if job.wait_started_at is not None:
            self._observe_wait(job, job.ready_at)
        self._record_failure(job, event)
        job.hostname = event.hostname or job.hostname
        job.state = "retried"
        self._active.pop(job.id, None)
        queue = self._queue_of(job)
        if queue is not None:
            self.stats.count(queue, job.name, "retried")

    def _on_revoked(self, event: Event, task_id: str, at: float) -> None:
        self._finish(event, task_id, at, "revoked", "revoked")

    def _on_rejected(self, event: Event, task_id: str, at: float) -> None:
        if event.requeue:
            job = self._job(task_id)
            job.state = "pending"
            self._active.pop(job.id, None)
            queue = self._queue_of(job)
            if queue is not None:
                self.stats.count(queue, job.name, "rejected")
            return
        self._finish(event, task_id, at, "rejected", "rejected")

    def _on_worker(self, event: Event, hostname: str) -> None:
        self._remember_worker(WorkerSeen(
            hostname=hostname,
            last_seen=self._clock(),
            online=True,
            active=event.active,
            processed=event.processed,
        ))
        if event.processed is not None:
            self._account_gap(hostname, event.pid, event.processed, event.active)

    def _remember_worker(self, seen: WorkerSeen) -> None:
        self._workers[seen.hostname] = seen
        self._workers.move_to_end(seen.hostname)
        if len(self._workers) > MAX_WORKERS:
            forgotten, _ = self._workers.popitem(last=False)
            self._gaps.pop(forgotten, None)

    def _account_gap(
        self, hostname: str, pid: int | None, processed: int, active: int | None
    ) -> None:
        gap = self._gaps.get(hostname)
        if gap is None or gap.pid != pid or processed < gap.base_processed:
            self._gaps[hostname] = _HeartbeatGap(pid, processed)
            return
        in_flight = active or 0
        missing = (processed - gap.base_processed) - gap.started_since - in_flight
        if missing > gap.reported:
            self.events_lost += missing - gap.reported
            gap.reported = missing

    def _on_worker_offline(self, event: Event, hostname: str) -> None:
        self._remember_worker(WorkerSeen(hostname, self._clock(), False, 0, None))
        self._gaps.pop(hostname, None)
        for task_id in [i for i, job in self._active.items() if job.hostname == hostname]:
            self._active.pop(task_id, None)
