"""What the web side needs from the rest of the sidecar: two small interfaces.

The resources depend on these and nothing else of the running sidecar; serving/
provides them (the local runtime, or what the refresher's owner shared).
"""

from __future__ import annotations

from typing import Protocol

from exporter.model.readings import WaitingMessage
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
