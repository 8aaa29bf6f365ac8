"""A sidecar's snapshot, made in-process: jobs told by Celery events, held by the real tracker.

Every job goes through `TaskTracker.apply_batch` as a worker's events would tell it
(task-sent, task-received, task-started, then task-succeeded or task-failed; one
failed job in five is retried once first), so retained jobs are what the sidecar
keeps: clipped reprs, interned exceptions, packed tracebacks. A failure carries the
traceback a real worker sent (testkit/data/payloads.jsonl) plus two application
frames whose line numbers, and the exception's message, differ per job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from exporter.config.settings import Settings
from exporter.core.tracker import TaskTracker
from exporter.model.snapshot import (
    STATUSES,
    ExporterCounters,
    QueueState,
    Snapshot,
    SourceHealth,
    TaskPlacement,
)
from exporter.model.stats import TaskStatsData
from exporter.protocol.events import Event
from exporter.serving.runtime import make_tracker
from testkit.messages import task_message
from testkit.payloads import events_by_type

TASK_NAMES = ("app.tasks.ingest", "app.tasks.report", "app.tasks.notify", "app.tasks.sync")
#: Failures, in turn: (exception type, message template); `{i}` is the job's number.
FAILURES = (
    ("ValueError", "bad row {r} in part-{i:07d}.csv"),
    ("TimeoutError", "read timed out after 30s (upstream-{h})"),
    ("KeyError", "'customer-{i:07d}'"),
    ("ConnectionError", "Error 111 connecting to db-{h}:5432. Connection refused."),
)


def queue_name(index: int) -> str:
    """The name of queue `index`."""
    return f"queue-{index:02d}"


def account(i: int) -> str:
    """The account id in the args of job `i` (one job each)."""
    return f"acct-{i:07d}"


def source(i: int) -> str:
    """The ingestionSourceId in the kwargs of job `i` (977 of them, ~60 jobs each at 60k)."""
    return f"src-{i % 977:05d}"


class Jobs:
    """Numbered jobs as their events, fed to one tracker."""

    def __init__(self, completed: int, failed: int) -> None:
        self.tracker: TaskTracker = make_tracker(
            Settings(broker_url="redis://127.0.0.1:6379/0", completed_retention=completed,
                     failed_retention=failed)
        )
        captured = events_by_type()["task-failed"]
        head = max(captured, key=lambda e: len(e["traceback"] or ""))["traceback"]
        self._tb_head = "\n".join(head.rstrip("\n").split("\n")[:-1])
        self._now = time.time()
        self.count = 0

    def values(self, i: int) -> tuple[str, str, str]:
        """(args, kwargs, result) reprs of job `i`, as Celery's events carry them."""
        args = f"('{account(i)}', {i % 500}, True)"
        kwargs = (
            f"{{'ingestionSourceId': '{source(i)}', 'payload': {{'rows': {i % 250}, "
            f"'source': 's3://ingest-bucket/2024/05/{i % 28 + 1:02d}/part-{i:07d}.csv', "
            f"'options': {{'dedupe': True, 'encoding': 'utf-8'}}}}}}"
        )
        result = f"{{'ok': True, 'rows': {i % 250}, 'source': '{source(i)}'}}"
        return args, kwargs, result

    def failure(self, i: int, attempt: int) -> tuple[str, str]:
        """(exception repr, traceback) of job `i`'s attempt, as task-failed carries them."""
        kind, template = FAILURES[(i + attempt) % len(FAILURES)]
        message = template.format(i=i, r=i % 250, h=i % 7)
        frames = (
            f'\n  File "/app/ingest/pipeline.py", line {100 + i % 900}, in ingest_batch\n'
            f"    rows = list(parse_rows(source, options))\n"
            f'  File "/app/ingest/parsers.py", line {(i * 7) % 1000 + 1}, in parse_rows\n'
            f"    raise {kind}(message)\n"
        )
        return f"{kind}({message!r})", f"{self._tb_head}{frames}{kind}: {message}\n"

    def events(self, queue: str, *, failed: bool, finish: bool = True) -> Iterator[Event]:
        """The events of the next job: sent, received, started and (if `finish`) its end."""
        i = self.count
        self.count += 1
        self._now += 0.001
        now = self._now
        task_id = str(uuid.uuid4())
        name = TASK_NAMES[i % len(TASK_NAMES)]
        args, kwargs, result = self.values(i)
        worker = f"celery@worker-{i % 16:02d}"
        yield Event("task-sent", uuid=task_id, hostname="gen1@web-1", timestamp=now,
                    name=name, queue=queue, routing_key=queue, args=args, kwargs=kwargs)
        yield Event("task-received", uuid=task_id, hostname=worker, timestamp=now + 0.001,
                    name=name, args=args, kwargs=kwargs)
        yield Event("task-started", uuid=task_id, hostname=worker, timestamp=now + 0.002)
        if not finish:
            return
        if failed and i % 5 == 0:
            exception, traceback = self.failure(i, 1)
            yield Event("task-retried", uuid=task_id, hostname=worker, timestamp=now + 0.01,
                        exception=exception, traceback=traceback)
            yield Event("task-started", uuid=task_id, hostname=worker, timestamp=now + 0.015)
        if failed:
            exception, traceback = self.failure(i, 0)
            yield Event("task-failed", uuid=task_id, hostname=worker, timestamp=now + 0.02,
                        exception=exception, traceback=traceback)
        else:
            yield Event("task-succeeded", uuid=task_id, hostname=worker, timestamp=now + 0.02,
                        result=result, runtime=0.018)

    def finish(self, queues: int, completed: int, failed: int) -> None:
        """Run `completed` and `failed` jobs on each queue, interleaved as on a busy broker."""
        batch: list[Event] = []
        for round_ in range(max(completed, failed)):
            for q in range(queues):
                if round_ < completed:
                    batch.extend(self.events(queue_name(q), failed=False))
                if round_ < failed:
                    batch.extend(self.events(queue_name(q), failed=True))
            if len(batch) > 20_000:
                self.tracker.apply_batch(batch)
                batch = []
        self.tracker.apply_batch(batch)

    def start(self, queue: str) -> str:
        """A job that is running now (sent, received, started); its task id."""
        events = list(self.events(queue, failed=False, finish=False))
        self.tracker.apply_batch(events)
        return str(events[0].uuid)


@dataclass(frozen=True)
class Shape:
    """How big the snapshot is."""

    queues: int = 10
    completed: int = 3000
    failed: int = 3000
    active: int = 4
    delayed: int = 20

    @property
    def retained(self) -> int:
        """Retained jobs in all."""
        return self.queues * (self.completed + self.failed)


class Corpus:
    """The tracker's jobs and the snapshots made of them, generation after generation."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.jobs = Jobs(shape.completed, shape.failed)
        self.jobs.finish(shape.queues, shape.completed, shape.failed)
        self._placements: list[TaskPlacement] = []
        now = time.time()
        for q in range(shape.queues):
            queue = queue_name(q)
            for n in range(shape.active):
                task_id = self.jobs.start(queue)
                self._placements.append(TaskPlacement(
                    task_id, None, queue, "active", started_at=now + n,
                    hostname=f"celery@worker-{n:02d}"))
            for n in range(shape.delayed):
                self._placements.append(TaskPlacement(
                    str(uuid.uuid4()), TASK_NAMES[n % len(TASK_NAMES)], queue, "delayed",
                    eta=now + 60 + n))
        self.generation = 0

    def snapshot(self) -> Snapshot:
        """A new snapshot of what the tracker holds now (a new generation)."""
        self.generation += 1
        view = self.jobs.tracker.view()
        zero = dict.fromkeys(STATUSES, 0)
        now = time.time()
        return Snapshot(
            generation=self.generation,
            created_at=now,
            queues={
                queue_name(q): QueueState(queue_name(q), zero, consumers=2, prefetched=0)
                for q in range(self.shape.queues)
            },
            workers={},
            stats=TaskStatsData(outcomes={}, runtime={}, queue_wait={}, folded_task_names=0),
            sources={"broker": SourceHealth("broker", True, now)},
            counters=ExporterCounters(),
            placements=tuple(self._placements),
            refresh_duration=0.05,
            last_success=now,
            broker_round_trips=3,
            retained_jobs=view.retained_jobs,
            job_details=self.jobs.tracker.lookup(p.task_id for p in self._placements),
        )

    def refresh(self, per_queue: int) -> Snapshot:
        """`per_queue` more jobs end on each queue (half fail), then the next snapshot."""
        self.jobs.finish(self.shape.queues, per_queue - per_queue // 2, per_queue // 2)
        return self.snapshot()


def list_messages(queue: str, count: int) -> list[bytes]:
    """`count` protocol-2 task messages as a queue's Redis list holds them (~1 KB each)."""
    return [
        json.dumps(task_message("app.tasks.ingest", queue, args=(i, i % 500))).encode()
        for i in range(count)
    ]
