"""What the worker events say about each worker, and the task-started events missed."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from exporter.model.tracking import WorkerSeen
from exporter.protocol.events import Event

#: Workers remembered from events (least recently heard of forgotten first): a bound
#: against a broker full of invented names.
MAX_WORKERS = 2_000


class _HeartbeatGap:
    """Counts task-started events missed, from a worker's cumulative `processed` counter."""

    __slots__ = ("base_processed", "pid", "reported", "started_since")

    def __init__(self, pid: object, processed: int) -> None:
        self.pid = pid
        self.base_processed = processed
        self.started_since = 0
        self.reported = 0


class Liveness:
    """The last word of each worker, least recent first. Called with the tracker's lock held."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._workers: OrderedDict[str, WorkerSeen] = OrderedDict()
        self._gaps: dict[str, _HeartbeatGap] = {}

    def heard(self, event: Event, hostname: str) -> int:
        """A worker-online or worker-heartbeat; returns how many more task-started events
        its `processed` counter shows were missed."""
        self._remember(WorkerSeen(
            hostname=hostname,
            last_seen=self._clock(),
            online=True,
            active=event.active,
            processed=event.processed,
        ))
        if event.processed is None:
            return 0
        return self._missed(hostname, event.pid, event.processed, event.active)

    def offline(self, hostname: str) -> None:
        """A worker-offline: the worker said goodbye."""
        self._remember(WorkerSeen(hostname, self._clock(), False, 0, None))
        self._gaps.pop(hostname, None)

    def started(self, hostname: str | None) -> None:
        """A task-started event of the worker arrived."""
        gap = self._gaps.get(hostname or "")
        if gap is not None:
            gap.started_since += 1

    def seen(self) -> dict[str, WorkerSeen]:
        """A copy of what each worker last said."""
        return dict(self._workers)

    def online(self) -> frozenset[str]:
        """Workers whose last word was not goodbye."""
        return frozenset(h for h, seen in self._workers.items() if seen.online)

    def _remember(self, seen: WorkerSeen) -> None:
        self._workers[seen.hostname] = seen
        self._workers.move_to_end(seen.hostname)
        if len(self._workers) > MAX_WORKERS:
            forgotten, _ = self._workers.popitem(last=False)
            self._gaps.pop(forgotten, None)

    def _missed(self, hostname: str, pid: int | None, processed: int, active: int | None) -> int:
        gap = self._gaps.get(hostname)
        if gap is None or gap.pid != pid or processed < gap.base_processed:
            self._gaps[hostname] = _HeartbeatGap(pid, processed)
            return 0
        missing = (processed - gap.base_processed) - gap.started_since - (active or 0)
        if missing <= gap.reported:
            return 0
        new, gap.reported = missing - gap.reported, missing
        return new
