"""Exact calls kept from decoded task messages: exact values, bounded memory."""

from __future__ import annotations

import base64
import json
from typing import Any

from exporter.core.calls import CallBook
from exporter.protocol.messages import TaskMessage, parse_task_message

HARD_ARGS: list[Any] = [
    "x" * 10_000,
    {"a": {"b": {"c": {"d": [1, 2.5, None]}}}},
    0.1 + 0.2,
    1e-300,
    "emoji 🎉 and 漢字",
    2**70,  # past 64 bits: orjson, used for display, would make it a float
    "lone \ud800 surrogate",  # display replaces it with U+FFFD; a retry must not
    list(range(2_000)),
]


def envelope(task_id: str, args: Any, kwargs: Any) -> dict[str, Any]:
    """A protocol 2 task message as kombu writes it to a Redis list (JSON, base64 body)."""
    body = json.dumps([args, kwargs, {"callbacks": None}]).encode()
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "app.task", "id": task_id, "retries": 0},
        "properties": {"body_encoding": "base64", "delivery_tag": "t",
                       "delivery_info": {"exchange": "", "routing_key": "q"}},
    }


def message(task_id: str, args: Any = (), kwargs: Any = None) -> TaskMessage:
    return parse_task_message(
        envelope(task_id, list(args), {} if kwargs is None else kwargs), with_body=True
    )


def test_a_call_comes_back_exactly_even_what_display_alters() -> None:
    book = CallBook(max_call_bytes=1 << 20)
    read = message("t1", HARD_ARGS, {"nested": {"k": [0.1, "é"]}, "big": -(2**90)})
    assert read.args != HARD_ARGS  # what the Jobs API shows is bounded for display
    book.remember(read)
    call = book.get("t1")
    assert call is not None
    assert call.name == "app.task"
    assert list(call.args) == HARD_ARGS
    assert call.kwargs == {"nested": {"k": [0.1, "é"]}, "big": -(2**90)}
    assert isinstance(call.args[5], int)


def test_bodies_that_were_not_read_in_full_are_not_kept() -> None:
    book = CallBook()
    unread = parse_task_message(envelope("headers-only", [1], {}))  # body not decoded
    pickled = {**envelope("pickled", [1], {}), "content-type": "application/x-python-serialize"}
    book.remember(unread)
    book.remember(parse_task_message(pickled, with_body=True))
    assert book.get("headers-only") is None
    assert book.get("pickled") is None


def test_count_and_size_are_bounded_newest_kept() -> None:
    book = CallBook(max_calls=3, max_call_bytes=100, max_total_bytes=10_000)
    for index in range(5):
        book.remember(message(f"t{index}", [index]))
    assert [book.get(f"t{i}") is not None for i in range(5)] == [False, False, True, True, True]
    book.remember(message("huge", ["y" * 200]))
    assert book.get("huge") is None  # past max_call_bytes: never kept

    small = CallBook(max_calls=100, max_call_bytes=1_000, max_total_bytes=1_000)
    for index in range(10):
        small.remember(message(f"s{index}", ["z" * 300]))
    kept = [i for i in range(10) if small.get(f"s{i}") is not None]
    assert kept == [7, 8, 9]  # each body is 300+ bytes: three fit in 1,000
