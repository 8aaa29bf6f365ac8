"""A job search (`GET /v1/jobs/search`): what was asked, and what was found where."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.model.jobs import Job
from exporter.model.snapshot import TaskPlacement
from exporter.protocol.messages import TaskMessage


@dataclass(frozen=True)
class SearchQuery:
    """Text to find (case-insensitive), optionally within one queue and one status."""

    text: str
    queue: str | None = None
    status: str | None = None
    offset: int = 0
    limit: int = 10


@dataclass(frozen=True)
class SearchHit:
    """One job found: its status and queue, and whatever describes it."""

    status: str
    queue: str
    job: Job | None = None
    placement: TaskPlacement | None = None
    message: TaskMessage | None = None


@dataclass(frozen=True)
class SearchResult:
    """One page of hits, how many there are in all, and how far each source was looked at."""

    hits: tuple[SearchHit, ...]
    total: int
    #: Per source, what was examined, e.g. {"retained": 60000, "lists": {"emails":
    #: {"scanned": 5000, "total": 120000}}}: a client can tell "not found" from
    #: "not looked at".
    scanned: Mapping[str, object] = field(default_factory=dict)
