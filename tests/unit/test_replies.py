"""Inspect replies as Celery 5 sends them, combined into one reply per worker.

The bodies come from Celery's own remote-control handlers (active, reserved,
scheduled, active_queues, stats) over real worker `Request`s, serialized as the
mailbox does. A malformed entry costs only itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from kombu.entity import Exchange, Queue

from exporter.protocol.limits import MAX_IDENTIFIER
from exporter.protocol.replies import COMMANDS, WorkerReply, WorkerTask, assemble_replies
from tests.unit.builders import (
    NOW,
    InspectedWorker,
    Published,
    inspect_bodies,
    producer_app,
    publish,
    request_of,
    start,
)

HOST = "celery@alpha"


def kombu_queue(name: str, exchange: str | None = None, routing_key: str | None = None) -> Any:
    return Queue(name, Exchange(exchange or name), routing_key=routing_key or name)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    made = producer_app(queues=[kombu_queue("mailq", "mail", "mail.send")])
    yield made
    made.close()


@pytest.fixture(scope="module")
def messages(app: Celery) -> dict[str, Published]:
    """One running, one prefetched and one ETA job of `emails`, and one routed job."""
    return {
        "running": publish(app, args=(1,), queue="emails"),
        "prefetched": publish(app, "app.build", args=(2,), queue="emails"),
        "eta": publish(app, args=(3,), queue="emails", countdown=3600),
        "routed": publish(app, args=(4,), exchange="mail", routing_key="mail.send"),
    }


@pytest.fixture
def busy(app: Celery, messages: dict[str, Published]) -> InspectedWorker:
    """A worker consuming two queues, holding a job of every kind."""
    return InspectedWorker(
        HOST,
        queues=[kombu_queue("reports"), kombu_queue("emails")],
        active=[start(request_of(app, messages["running"].raw, HOST), NOW - 3)],
        reserved=[request_of(app, messages["prefetched"].raw, HOST)],
        scheduled=[request_of(app, messages["eta"].raw, HOST)],
        concurrency=8,
    )


def test_celery_s_five_answers_make_one_reply(
    app: Celery, messages: dict[str, Published], busy: InspectedWorker
) -> None:
    replies, malformed = assemble_replies(inspect_bodies(app, [busy]))
    assert malformed == 0
    [scheduled_request] = busy.scheduled
    assert replies == {
        HOST: WorkerReply(
            hostname=HOST,
            queues=("emails", "reports"),
            active=(WorkerTask(messages["running"].task_id, "app.send", "", "emails",
                               started_at=NOW - 3),),
            reserved=(WorkerTask(messages["prefetched"].task_id, "app.build", "", "emails"),),
            scheduled=(WorkerTask(messages["eta"].task_id, "app.send", "", "emails",
                                  eta=scheduled_request.eta.timestamp()),),
            concurrency=8,
            complete=True,
        )
    }


def test_a_routed_job_keeps_its_exchange_and_routing_key(
    app: Celery, messages: dict[str, Published]
) -> None:
    worker = InspectedWorker(HOST, queues=[kombu_queue("mailq", "mail", "mail.send")],
                             reserved=[request_of(app, messages["routed"].raw, HOST)])
    replies, _malformed = assemble_replies(inspect_bodies(app, [worker]))
    [held] = replies[HOST].reserved
    assert (held.exchange, held.routing_key) == ("mail", "mail.send")
    assert replies[HOST].queues == ("mailq",)


def test_an_idle_worker_answers_everything_with_nothing(app: Celery) -> None:
    replies, malformed = assemble_replies(inspect_bodies(app, [InspectedWorker(HOST)]))
    assert malformed == 0
    assert replies[HOST] == WorkerReply(HOST, (), (), (), (), 4, True)


def test_a_worker_missing_from_some_commands_is_kept_and_marked_incomplete(
    app: Celery, busy: InspectedWorker
) -> None:
    """It answered active and active_queues in time, not the rest: what it said counts."""
    late = InspectedWorker("celery@beta", queues=[kombu_queue("emails")],
                           active=busy.active, answers=("active", "active_queues"))
    replies, malformed = assemble_replies(inspect_bodies(app, [busy, late]))
    assert malformed == 0
    assert replies["celery@beta"].complete is False
    assert replies["celery@beta"].queues == ("emails",)
    assert [t.task_id for t in replies["celery@beta"].active] == [
        t.task_id for t in replies[HOST].active
    ]
    assert (replies["celery@beta"].reserved, replies["celery@beta"].scheduled) == ((), ())
    assert replies["celery@beta"].concurrency is None
    assert replies[HOST].complete is True


def test_no_answer_at_all_is_no_reply() -> None:
    replies, malformed = assemble_replies({command: {} for command in COMMANDS})
    assert (replies, malformed) == ({}, 0)


# -- malformed entries ----------------------------------------------------------------


def _first(bodies: dict[str, Any], command: str) -> Any:
    return bodies[command][HOST][0]


Spoil = Callable[[Any], Any]

#: How one entry of a command's answer (the whole answer for `stats`) is spoiled.
CORRUPTIONS: list[tuple[str, str, Spoil]] = [
    ("active id is a list", "active", lambda e: {**e, "id": ["not", "an", "id"]}),
    ("active start is NaN", "active", lambda e: {**e, "time_start": float("nan")}),
    ("reserved entry is text", "reserved", lambda e: "not an entry"),
    ("reserved id too long", "reserved", lambda e: {**e, "id": "x" * (MAX_IDENTIFIER + 1)}),
    ("scheduled eta is not a date", "scheduled", lambda e: {**e, "eta": "tomorrow morning"}),
    ("scheduled request has no id", "scheduled",
     lambda e: {**e, "request": {k: v for k, v in e["request"].items() if k != "id"}}),
    ("queue without a name", "active_queues", lambda e: {**e, "name": ""}),
    ("pool size is text", "stats",
     lambda e: {**e, "pool": {**e["pool"], "max-concurrency": "eight"}}),
]


def _spoil(bodies: dict[str, Any], command: str, spoil: Spoil) -> None:
    if command == "stats":
        bodies[command][HOST] = spoil(bodies[command][HOST])
    else:
        bodies[command][HOST][0] = spoil(_first(bodies, command))


def _drop(bodies: dict[str, Any], command: str) -> None:
    if command == "stats":
        del bodies[command][HOST]["pool"]
    else:
        del bodies[command][HOST][0]


@pytest.mark.parametrize(("command", "spoil"), [(c[1], c[2]) for c in CORRUPTIONS],
                         ids=[c[0] for c in CORRUPTIONS])
def test_a_malformed_entry_costs_only_itself(
    app: Celery, busy: InspectedWorker, command: str, spoil: Spoil
) -> None:
    """Each list holds two entries and one is spoiled: the reply is as if it were absent."""
    doubled = InspectedWorker(
        HOST,
        queues=busy.queues,
        active=[*busy.active, start(request_of(app, publish(app, queue="emails").raw, HOST), NOW)],
        reserved=[*busy.reserved, request_of(app, publish(app, queue="emails").raw, HOST)],
        scheduled=[*busy.scheduled,
                   request_of(app, publish(app, queue="emails", countdown=60).raw, HOST)],
        concurrency=busy.concurrency,
    )
    other = InspectedWorker("celery@beta", queues=[kombu_queue("emails")], active=busy.active)
    clean = inspect_bodies(app, [doubled, other])
    spoiled, without = copy.deepcopy(clean), copy.deepcopy(clean)
    _spoil(spoiled, command, spoil)
    _drop(without, command)

    replies, malformed = assemble_replies(spoiled)
    expected, nothing_skipped = assemble_replies(without)
    assert (malformed, nothing_skipped) == (1, 0)
    assert replies == expected
    assert replies[HOST].complete is True
    assert replies[HOST] != assemble_replies(clean)[0][HOST]


def test_an_answer_that_is_not_a_list_is_skipped_and_counted(
    app: Celery, busy: InspectedWorker
) -> None:
    bodies = inspect_bodies(app, [busy])
    bodies["reserved"][HOST] = {"error": "No such command"}
    replies, malformed = assemble_replies(bodies)
    assert malformed == 1
    assert replies[HOST].reserved == ()
    assert len(replies[HOST].active) == 1


def test_a_hostname_longer_than_an_identifier_drops_that_worker_only(
    app: Celery, busy: InspectedWorker
) -> None:
    huge = "celery@" + "h" * MAX_IDENTIFIER
    bodies = inspect_bodies(app, [busy, InspectedWorker(huge)])
    replies, malformed = assemble_replies(bodies)
    assert set(replies) == {HOST}
    assert malformed == 1


def test_text_that_is_not_valid_unicode_is_replaced(app: Celery, busy: InspectedWorker) -> None:
    """The standard library's JSON lets lone surrogates through; the reply does not."""
    bodies = inspect_bodies(app, [busy])
    _first(bodies, "active")["name"] = json.loads('"app.\\ud800send"')
    _first(bodies, "active_queues")["name"] = json.loads('"q\\udfff"')
    replies, malformed = assemble_replies(bodies)
    assert malformed == 0
    [running] = replies[HOST].active
    assert running.name == "app.\ufffdsend"
    assert "q\ufffd" in replies[HOST].queues
    (running.name + "".join(replies[HOST].queues)).encode("utf-8")


def test_the_task_type_names_a_job_whose_name_is_missing(
    app: Celery, busy: InspectedWorker
) -> None:
    bodies = inspect_bodies(app, [busy])
    _first(bodies, "reserved")["name"] = None
    replies, _malformed = assemble_replies(bodies)
    assert [t.name for t in replies[HOST].reserved] == ["app.build"]


def test_scheduled_eta_without_timezone_means_utc(app: Celery, busy: InspectedWorker) -> None:
    bodies = inspect_bodies(app, [busy])
    _first(bodies, "scheduled")["eta"] = "2023-11-14T22:13:20"
    replies, _malformed = assemble_replies(bodies)
    assert [t.eta for t in replies[HOST].scheduled] == [NOW]
