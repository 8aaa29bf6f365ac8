"""What the web side needs from the rest of the sidecar: two small interfaces.

The resources depend on these and nothing else of the running sidecar; serving/
provides them (the local runtime, or what the refresher's owner shared).
"""

from __future__ import annotations

from typing import Protocol

from exporter.model.actions import (
    Actor,
    AuditEntry,
    BulkRetryDone,
    CancelDone,
    PauseDone,
    RetryDone,
)
from exporter.model.readings import WaitingMessage
from exporter.model.search import SearchQuery, SearchResult
from exporter.model.snapshot import Snapshot
from exporter.prometheus.render import RenderedMetrics


class SnapshotProvider(Protocol):
    """Where the web side finds the current snapshot and its rendered exposition."""

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def rendered(self) -> RenderedMetrics | None: ...


class JobsBackend(Protocol):
    """What the Jobs API needs beyond the snapshot: pages of a queue's waiting messages."""

    def waiting_page(self, queue: str, offset: int, limit: int) -> list[WaitingMessage]: ...

    def search(self, query: SearchQuery) -> SearchResult: ...


class ActionsBackend(Protocol):
    """The job actions (docs/jobs-actions.md); each raises ActionRefused when refused."""

    def retry(self, actor: Actor, queue: str, task_id: str) -> RetryDone: ...

    def cancel(
        self, actor: Actor, queue: str, task_id: str, *, terminate: bool = False,
        signal: str = "SIGTERM",
    ) -> CancelDone: ...

    def remove(self, actor: Actor, queue: str, task_id: str) -> str: ...

    def retry_failed(self, actor: Actor, queue: str, limit: int) -> BulkRetryDone: ...

    def pause(self, actor: Actor, queue: str) -> PauseDone: ...

    def resume(self, actor: Actor, queue: str) -> PauseDone: ...

    def purge(self, actor: Actor, queue: str, confirm: object) -> int: ...

    def audit_page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]: ...
