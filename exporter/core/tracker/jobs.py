"""Celery task events applied to jobs: in flight, running, finished (kept and counted), lost."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Set

from exporter.core.jobstore import JobStore
from exporter.core.taskstats import TaskStats
from exporter.core.tracker.outbox import Outbox
from exporter.core.tracker.routes import Routes
from exporter.model.jobs import (
    MAX_FAILURES,
    MAX_TEXT,
    MAX_TRACEBACK,
    Interner,
    Job,
    clip,
    pack_traceback,
)
from exporter.model.tracking import ActiveJob
from exporter.protocol.events import Event
from exporter.protocol.exceptions import exception_type
from exporter.protocol.messages import parse_eta

OUTCOMES = ("succeeded", "failed", "retried", "revoked", "rejected", "lost")
#: The exception a lost job is recorded with: `failedReason` reads "WorkerLost: …".
WORKER_LOST = "WorkerLost"
#: Ids of the latest finished jobs, remembered so that a worker reply taken a moment
#: before a job ended does not count it as still running.
RECENTLY_FINISHED = 20_000

TaskHandler = Callable[[Event, str, float], None]


class JobBook:
    """The jobs the events told about, the kept finished ones and the task stats.

    Called with the tracker's lock held. Finished jobs go to the store and to the
    outbox; each task-started is reported to `on_started` (with the worker's hostname).
    """

    def __init__(
        self,
        *,
        store: JobStore,
        stats: TaskStats,
        routes: Routes,
        outbox: Outbox,
        on_started: Callable[[str | None], None],
        max_tracked: int,
    ) -> None:
        self.store = store
        self.stats = stats
        #: In-flight jobs evicted past --max-tracked-jobs.
        self.evicted = 0
        self._see_queue = routes.see
        self._route = routes.route
        self._queue_of = routes.queue_of
        self._save_later = outbox.put
        self._on_started_hook = on_started
        self._max_tracked = max_tracked
        self._inflight: OrderedDict[str, Job] = OrderedDict()
        self._active: dict[str, Job] = {}
        self._recently_finished: OrderedDict[str, None] = OrderedDict()
        #: Jobs recorded as lost, by id, in case their worker speaks again; and the
        #: executions counted as lost whose real end has not come (yet).
        self._lost: OrderedDict[str, Job] = OrderedDict()
        self._lost_ids: OrderedDict[str, None] = OrderedDict()
        #: Whether the app sends task-sent events (task_send_sent_event).
        self._sent_events = False
        self._intern = Interner()

    def handlers(self) -> dict[str, TaskHandler]:
        """The handler of each task event type: (event, uuid, timestamp)."""
        return {
            "task-sent": self._on_sent,
            "task-received": self._on_received,
            "task-started": self._on_started,
            "task-succeeded": self._on_succeeded,
            "task-failed": self._on_failed,
            "task-retried": self._on_retried,
            "task-revoked": self._on_revoked,
            "task-rejected": self._on_rejected,
        }

    # -- what the refresher and the history tell ------------------------------------

    def place(self, task_queues: Mapping[str, str]) -> None:
        """The queues in-flight tasks came from (events other than task-sent name none)."""
        for task_id, queue in task_queues.items():
            job = self._inflight.get(task_id)
            if job is not None and job.queue is None:
                job.queue = queue
                self._see_queue(queue)
            if job is not None and job.name:
                self._route(job.name, job.queue or queue)

    def restore(self, jobs: Iterable[Job]) -> int:
        """Put back finished jobs kept before a restart (newest first per queue)."""
        restored = 0
        for job in jobs:
            if not self._see_queue(job.queue or "unknown"):
                continue
            self.store.restore(job)
            restored += 1
        return restored

    def declare_lost(self, hostname: str, at: float, in_broker: Set[str]) -> frozenset[str]:
        """The worker went down at `at`: see TaskTracker.declare_lost."""
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

    @property
    def any_lost(self) -> bool:
        """Whether some lost job could still be revived."""
        return bool(self._lost)

    def revive(self, task_ids: Iterable[str]) -> None:
        """Lost jobs a live worker says it runs after all: active again."""
        for task_id in task_ids:
            job = self._unlose(task_id)
            if job is not None:
                job.state, job.finished_at = "started", None
                self._inflight[task_id] = job
                self._active[task_id] = job
                self._recently_finished.pop(task_id, None)

    def drop_active(self, task_ids: Iterable[str]) -> None:
        """Running jobs no worker holds any more are no longer active.

        Their end may still come: a worker sends task events in batches, so a reply can
        miss a job whose task-failed (a killed pool process) is on its way. The job stays
        known until then (or until evicted past --max-tracked-jobs), so that its end is
        counted under its task name, not as a job never seen.
        """
        for task_id in task_ids:
            self._active.pop(task_id, None)

    def stop_running_on(self, hostname: str) -> None:
        """The worker said goodbye: its jobs are no longer active."""
        for task_id in [i for i, job in self._active.items() if job.hostname == hostname]:
            self._active.pop(task_id, None)

    # -- reading -------------------------------------------------------------------

    def lookup(self, task_ids: Iterable[str]) -> dict[str, Job]:
        """In-flight jobs by id."""
        inflight = self._inflight
        return {task_id: inflight[task_id] for task_id in task_ids if task_id in inflight}

    def active(self) -> tuple[ActiveJob, ...]:
        """The running jobs, frozen."""
        return tuple(
            ActiveJob(j.id, j.name, j.queue, j.hostname, j.started_at)
            for j in self._active.values()
        )

    def recently_finished(self) -> frozenset[str]:
        """Ids of the latest finished jobs."""
        return frozenset(self._recently_finished)

    # -- what job actions tell ------------------------------------------------------

    def hide(self, task_id: str) -> None:
        """A job an admin cancelled: no longer placed anywhere, whatever a reply says."""
        self._recently_finished[task_id] = None
        if len(self._recently_finished) > RECENTLY_FINISHED:
            self._recently_finished.popitem(last=False)

    def remove_retained(self, queue: str, task_id: str) -> Job | None:
        """Forget a retained finished job of `queue`; the job, or None if not kept."""
        for job in self.store.newest_first(queue, "failed"):
            if job.id == task_id:
                self.store.discard(job)
                return job
        for job in self.store.newest_first(queue, "completed"):
            if job.id == task_id:
                self.store.discard(job)
                return job
        return None

    def mark_retried(self, queue: str, task_id: str, new_id: str) -> None:
        """Note on a retained job the id of the run that retries it."""
        for status in ("failed", "completed"):
            for job in self.store.newest_first(queue, status):
                if job.id == task_id:
                    job.retried_by = new_id
                    return

    # -- lost jobs -----------------------------------------------------------------

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

    # -- event handlers ------------------------------------------------------------

    def _job(self, task_id: str) -> Job:
        job = self._inflight.get(task_id)
        if job is None:
            job = Job(task_id)
            self._inflight[task_id] = job
            if len(self._inflight) > self._max_tracked:
                _, evicted = self._inflight.popitem(last=False)
                self._active.pop(evicted.id, None)
                self.evicted += 1
        return job

    def _describe(self, job: Job, event: Event) -> None:
        if event.name:
            job.name = event.name
        args, kwargs = event.args, event.kwargs
        if args is not None:
            job.args = args if len(args) <= MAX_TEXT else clip(args)
        if kwargs is not None:
            job.kwargs = kwargs if len(kwargs) <= MAX_TEXT else clip(kwargs)

    def _on_sent(self, event: Event, task_id: str, sent_at: float) -> None:
        eta = None if event.eta is None else parse_eta(event.eta)
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
        eta = None if event.eta is None else parse_eta(event.eta)
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
        self._on_started_hook(job.hostname)

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
        lost = self._unlose(task_id) if self._lost else None
        counted_lost = False
        if self._lost_ids and task_id in self._lost_ids:
            counted_lost = True
            del self._lost_ids[task_id]
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
        self._save_later(job)

    def _on_succeeded(self, event: Event, task_id: str, at: float) -> None:
        job = self._finish(event, task_id, at, "succeeded", "succeeded")
        job.result = clip(event.result)
        self._keep(job)

    def _on_failed(self, event: Event, task_id: str, at: float) -> None:
        job = self._finish(event, task_id, at, "failed", "failed")
        self._record_failure(job, event)
        queue = self._queue_of(job)
        if queue is not None:
            self.stats.count_failure(
                queue, job.name, exception_type(event.exception, event.traceback)
            )
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
