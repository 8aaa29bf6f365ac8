"""Exact calls kept from decoded task messages: exact values, bounded memory."""

from __future__ import annotations

from typing import Any

from exporter.core.calls import CallBook
from exporter.protocol.messages import TaskMessage

HARD_ARGS: list[Any] = [
    "x" * 100_000,
    {"a": {"b": {"c": {"d": [1, 2.5, None]}}}},
    0.1 + 0.2,
    1e-300,
    "emoji 🎉 and 漢字",
    list(range(5_000)),
]


def message(task_id: str, args: Any = (), kwargs: Any = None, **extra: Any) -> TaskMessage:
    return TaskMessage(task_id=task_id, name="app.task", eta=None, retries=0, priority=None,
                       exchange=None, routing_key="q", protocol=2, args=args,
                       kwargs={} if kwargs is None else kwargs, **extra)


def test_a_call_comes_back_exactly() -> None:
    book = CallBook(max_call_bytes=1 << 20)
    book.remember(message("t1", HARD_ARGS, {"nested": {"k": [0.1, "é"]}}))
    call = book.get("t1")
    assert call is not None
    assert call.name == "app.task"
    assert list(call.args) == HARD_ARGS
    assert call.kwargs == {"nested": {"k": [0.1, "é"]}}


def test_bodies_that_were_not_read_in_full_are_not_kept() -> None:
    book = CallBook()
    book.remember(message("pickled", None, None, body_error="pickle is never decoded"))
    book.remember(message("big-int", [2**70]))  # JSON has no exact form for it here
    book.remember(message("odd", "not a list"))
    assert book.get("pickled") is None
    assert book.get("big-int") is None
    assert book.get("odd") is None


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
    assert kept == [7, 8, 9]
