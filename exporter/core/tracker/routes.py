"""Which queue a job is reported under, and which queue names are reported at all."""

from __future__ import annotations

from collections.abc import Mapping

from exporter.model.jobs import Job
from exporter.protocol.cardinality import QueueAdmission

#: Task names whose queue is remembered: a bound against a broker full of invented names.
MAX_ROUTES = 10_000


class Routes:
    """Queues the events name, the queue each task name was last sent to, and the
    queues each worker consumes. Called with the tracker's lock held."""

    def __init__(self, admission: QueueAdmission) -> None:
        self.admission = admission
        self._seen: set[str] = set()
        self._task_queue: dict[str, str] = {}
        self._worker_queues: dict[str, tuple[str, ...]] = {}

    def see(self, queue: str) -> bool:
        """Note a queue the events name; False if it is past --max-queues (not reported)."""
        if queue in self._seen:
            return True
        if not self.admission.admit(queue):
            return False
        self._seen.add(queue)
        return True

    def route(self, task_name: str, queue: str) -> None:
        """Remember the queue a task name was last sent to (for events that name none)."""
        if task_name in self._task_queue or len(self._task_queue) < MAX_ROUTES:
            self._task_queue[task_name] = queue

    def consumed(self, worker_queues: Mapping[str, tuple[str, ...]]) -> None:
        """Replace what each worker is known to consume."""
        self._worker_queues = dict(worker_queues)

    def queue_of(self, job: Job) -> str | None:
        """The job's queue as reported (guessed and set if unknown), or None if it is
        past --max-queues. The guess: its task name's last queue, else the only queue
        its worker consumes."""
        queue = job.queue
        if queue is None:
            queue = self._task_queue.get(job.name or "")
            if queue is None and job.hostname:
                consumed = self._worker_queues.get(job.hostname, ())
                if len(consumed) == 1:
                    queue = consumed[0]
            job.queue = queue
        queue = queue or "unknown"
        return queue if queue in self._seen or self.see(queue) else None

    def seen(self) -> frozenset[str]:
        """The queues the events named, within --max-queues."""
        return frozenset(self._seen)
