"""The queue of a message from its exchange and routing key, checked against kombu's routing.

Celery publishes each message and kombu's own exchange code delivers it to a queue
(in-process transport); the sidecar must name that same queue from the message's
`delivery_info` and the binding tables (kombu keeps the same (routing key, pattern,
queue) rows in Redis's `_kombu.binding.*` sets).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu.entity import Exchange, Queue

from exporter.protocol.routing import resolve_queue
from tests.unit.builders import producer_app, publish

Bindings = dict[tuple[str, str], tuple[str, ...]]


def kombu_queue(name: str, exchange: str, routing_key: str, kind: str = "direct") -> Any:
    return Queue(name, Exchange(exchange, kind), routing_key=routing_key)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    made = producer_app(queues=[
        kombu_queue("celery", "celery", "celery"),
        kombu_queue("rt-mail", "rt-mailx", "mail.send"),
        kombu_queue("rt-bulk", "rt-mailx", "mail.bulk"),
        kombu_queue("rt-reports", "rt-reportsx", "reports.#", "topic"),
    ])
    yield made
    made.close()


def bindings(app: Celery) -> Bindings:
    """(exchange, routing key) -> queues, from kombu's binding rows, as the broker reads them."""
    with app.connection_for_write() as connection:
        exchanges: dict[str, Any] = connection.default_channel.state.exchanges
    found: dict[tuple[str, str], set[str]] = {}
    for exchange, meta in exchanges.items():
        for routing_key, _pattern, queue in meta.get("table", ()):
            found.setdefault((exchange, routing_key), set()).add(queue)
    return {key: tuple(sorted(queues)) for key, queues in found.items()}


def delivery(raw: bytes) -> tuple[str, str]:
    info = json.loads(raw)["properties"]["delivery_info"]
    return info["exchange"], info["routing_key"]


ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("celery's default queue", {}),
    ("a named queue", {"queue": "rt-emails"}),
    ("a queue bound to another exchange", {"queue": "rt-mail"}),
    ("a direct exchange and routing key", {"exchange": "rt-mailx", "routing_key": "mail.send"}),
    ("the same exchange, another key", {"exchange": "rt-mailx", "routing_key": "mail.bulk"}),
]


@pytest.mark.parametrize("options", [r[1] for r in ROUTES], ids=[r[0] for r in ROUTES])
def test_the_queue_named_is_the_one_kombu_delivered_to(
    app: Celery, options: dict[str, Any]
) -> None:
    landed = publish(app, args=(1,), **options)
    exchange, routing_key = delivery(landed.raw)
    assert resolve_queue(exchange, routing_key, bindings(app)) == landed.queue


def test_a_topic_exchange_names_the_queue_its_pattern_binds(app: Celery) -> None:
    landed = publish(app, args=(1,), queue="rt-reports", routing_key="reports.daily")
    assert landed.queue == "rt-reports"
    exchange, routing_key = delivery(landed.raw)
    assert resolve_queue(exchange, routing_key, bindings(app)) == "rt-reports"


def test_an_unbound_routing_key_names_the_queue() -> None:
    """Without a binding (tables not read yet), kombu's default exchange semantics."""
    assert resolve_queue("mail", "mail.send", {}) == "mail.send"
    assert resolve_queue("", "emails", {("", "emails"): ("other",)}) == "emails"


def test_no_exchange_and_no_routing_key_is_celery_s_default_queue() -> None:
    assert resolve_queue(None, None, {}) == "celery"
    assert resolve_queue("mail", "", {}) == "celery"


def test_a_key_bound_to_several_queues_names_the_first_in_order() -> None:
    """kombu delivers to each; one placement needs one name, the same every refresh."""
    bound: Bindings = {("mail", "mail.send"): ("a-queue", "b-queue")}
    assert resolve_queue("mail", "mail.send", bound) == "a-queue"
