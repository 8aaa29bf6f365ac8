"""What one read of each source returned: plain data for snapshot assembly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.model.jobs import Job
from exporter.protocol.messages import TaskMessage
from exporter.protocol.replies import WorkerReply


@dataclass(frozen=True, slots=True)
class UnackedTask:
    """A message a worker took from a queue and has not acknowledged yet."""

    delivery_tag: str
    task_id: str
    name: str | None
    queue: str
    eta: float | None


@dataclass(frozen=True)
class BrokerReading:
    """One consistent read of the broker."""

    queues: frozenset[str]
    waiting_in_lists: Mapping[str, int]
    unacked: tuple[UnackedTask, ...]
    new_malformed: int
    round_trips: int
    read_at: float
    bound_queues: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    #: Per queue with messages in its lists, the task id of the one workers take next
    #: (or `sha1:<hex>` of a message without a readable id).
    heads: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkersReading:
    """The replies of one round, by worker hostname."""

    replies: Mapping[str, WorkerReply]
    read_at: float
    duration: float
    malformed: int = 0


@dataclass(frozen=True, slots=True)
class WaitingMessage:
    """One message of a queue's list, decoded for a Jobs API page (or why it could not be)."""

    raw: bytes
    message: TaskMessage | None
    error: str | None = None
    #: What the events told about this task id, if anything.
    job: Job | None = None
