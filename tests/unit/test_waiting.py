"""Pages of waiting messages: list entries as Celery wrote them, decoded and joined with events.

Every message is published by a real Celery app (protocol 2 and 1, JSON, msgpack,
YAML, pickle, compressed) and served by an in-memory pager in the order workers
would take them; an entry that is not a readable message costs only itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest
from celery import Celery

from exporter.core.waiting import WaitingPages
from exporter.model.jobs import Job
from exporter.protocol.limits import DEFAULT_LIMITS, InputLimits
from tests.unit.builders import NOW, Published, producer_app, publish

QUEUE = "ingestion"
KWARGS = {"ingestionSourceId": "src-42", "rows": [1, 2]}


class ListPager:
    """A queue's list held in memory, next to run first (QueuePager's order)."""

    def __init__(self, lists: Mapping[str, list[bytes]]) -> None:
        self.lists = lists
        self.calls: list[tuple[str, int, int]] = []

    def page(self, queue: str, offset: int, limit: int) -> tuple[list[bytes], int]:
        self.calls.append((queue, offset, limit))
        entries = self.lists.get(queue, [])
        return entries[offset : offset + limit], len(entries)


class Events:
    """The tracker's lookup: jobs it heard of, and every batch of ids it was asked for."""

    def __init__(self, *jobs: Job) -> None:
        self.jobs = {job.id: job for job in jobs}
        self.asked: list[list[str]] = []

    def __call__(self, task_ids: Iterable[str]) -> dict[str, Job]:
        wanted = list(task_ids)
        self.asked.append(wanted)
        return {i: self.jobs[i] for i in wanted if i in self.jobs}


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    made = producer_app()
    yield made
    made.close()


@pytest.fixture(scope="module")
def legacy() -> Iterator[Celery]:
    made = producer_app(protocol=1)
    yield made
    made.close()


@pytest.fixture(scope="module")
def entries(app: Celery, legacy: Celery) -> dict[str, Published]:
    """One message of each kind a producer may write, plus entries no producer writes."""
    def send(producer: Celery, **options: Any) -> Published:
        return publish(producer, args=(7, "zwölf"), kwargs=KWARGS, queue=QUEUE, **options)

    made = {
        "json": send(app, priority=6),
        "msgpack": send(app, serializer="msgpack"),
        "yaml": send(app, serializer="yaml", retries=2),
        "zlib": send(app, compression="zlib"),
        "eta": send(app, countdown=600),
        "protocol-1": send(legacy),
        "pickle": send(app, serializer="pickle"),
    }
    return made


def pages(raws: list[bytes], events: Events | None = None,
          limits: InputLimits = DEFAULT_LIMITS) -> tuple[WaitingPages, ListPager, Events]:
    pager = ListPager({QUEUE: raws})
    lookup = events if events is not None else Events()
    return WaitingPages(pager, limits, lookup), pager, lookup


@pytest.mark.parametrize("kind", ["json", "msgpack", "yaml", "zlib", "eta", "protocol-1"])
def test_every_body_celery_writes_is_decoded(kind: str, entries: dict[str, Published]) -> None:
    published = entries[kind]
    waiting, _pager, _events = pages([published.raw])
    [entry] = waiting.page(QUEUE, 0, 10)
    assert entry.raw == published.raw
    assert entry.error is None and entry.message is not None
    message = entry.message
    assert (message.task_id, message.name) == (published.task_id, "app.send")
    assert (message.args, message.kwargs) == ([7, "zwölf"], KWARGS)
    assert message.routing_key == QUEUE
    assert message.protocol == (1 if kind == "protocol-1" else 2)
    assert message.body_error is None


def test_message_headers_say_priority_retries_and_eta(entries: dict[str, Published]) -> None:
    waiting, _pager, _events = pages([entries[k].raw for k in ("json", "yaml", "eta")])
    json_message, yaml_message, eta_message = (e.message for e in waiting.page(QUEUE, 0, 3))
    assert json_message is not None and json_message.priority == 6
    assert yaml_message is not None and yaml_message.retries == 2
    assert eta_message is not None and eta_message.eta is not None
    assert eta_message.eta > NOW


def test_a_pickle_body_is_listed_by_its_headers_never_unpickled(
    entries: dict[str, Published],
) -> None:
    waiting, _pager, events = pages([entries["pickle"].raw])
    [entry] = waiting.page(QUEUE, 0, 1)
    assert entry.message is not None
    assert entry.message.task_id == entries["pickle"].task_id
    assert (entry.message.args, entry.message.kwargs) == (None, None)
    assert entry.message.body_error is not None and "pickle" in entry.message.body_error
    assert events.asked == [[entries["pickle"].task_id]]


def test_an_unreadable_entry_costs_only_itself(entries: dict[str, Published]) -> None:
    unreadable = [b"\x00\xffnot json", b'{"hello": "world"}', b"[1, 2, 3]",
                  b'{"headers": {"id": ["a"], "task": "x"}, "body": "W10="}']
    raws = [entries["json"].raw, *unreadable, entries["msgpack"].raw]
    waiting, _pager, _events = pages(raws)
    page = waiting.page(QUEUE, 0, 10)
    assert [entry.raw for entry in page] == raws
    assert [entry.message is None for entry in page] == [False, True, True, True, True, False]
    for entry in page[1:-1]:
        assert isinstance(entry.error, str) and entry.error
    assert page[-1].message is not None
    assert page[-1].message.task_id == entries["msgpack"].task_id


def test_messages_over_the_size_limit_cost_only_themselves(
    app: Celery, entries: dict[str, Published]
) -> None:
    """--max-message-bytes: a large body is not decoded, a huge entry not even parsed."""
    limits = InputLimits(max_message_bytes=10_000)
    large = publish(app, args=("x" * 50_000,), queue=QUEUE)
    huge = publish(app, args=("x" * (limits.max_raw_bytes + 1),), queue=QUEUE)
    small = entries["json"]
    waiting, _pager, events = pages([large.raw, huge.raw, small.raw], limits=limits)
    headers_only, refused, kept = waiting.page(QUEUE, 0, 3)
    assert headers_only.message is not None and headers_only.message.task_id == large.task_id
    assert headers_only.message.args is None
    assert "max-message-bytes" in (headers_only.message.body_error or "")
    assert refused.message is None and "max-message-bytes" in (refused.error or "")
    assert kept.message is not None and kept.message.args == [7, "zwölf"]
    assert events.asked == [[large.task_id, small.task_id]]


def test_messages_are_joined_with_what_the_events_told(entries: dict[str, Published]) -> None:
    """One lookup per page, for the ids of the readable entries only."""
    retried = Job(entries["yaml"].task_id)
    retried.attempts, retried.sent_at = 2, NOW
    events = Events(retried)
    raws = [entries["json"].raw, b"garbage", entries["yaml"].raw]
    waiting, _pager, _events = pages(raws, events)
    first, garbage, second = waiting.page(QUEUE, 0, 3)
    assert events.asked == [[entries["json"].task_id, entries["yaml"].task_id]]
    assert (first.job, garbage.job, second.job) == (None, None, retried)


def test_the_page_asked_for_is_the_page_read(entries: dict[str, Published]) -> None:
    raws = [entries[k].raw for k in ("json", "msgpack", "yaml", "zlib", "eta")]
    waiting, pager, _events = pages(raws)
    page = waiting.page(QUEUE, 2, 2)
    assert [entry.raw for entry in page] == raws[2:4]
    assert pager.calls == [(QUEUE, 2, 2)]
    assert waiting.page(QUEUE, 5, 2) == []
    assert waiting.page("empty", 0, 10) == []
