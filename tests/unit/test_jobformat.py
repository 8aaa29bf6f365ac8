"""Job objects of the Jobs API (docs/jobs-api.md), from Celery's own reprs and messages.

Exception reprs are made as Celery's task-failed events make them (`safe_repr`),
tracebacks by raising, argument reprs are the `argsrepr`/`kwargsrepr` headers of
messages Celery published, and broker messages are decoded from those bytes.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Celery
from celery.utils.saferepr import saferepr
from kombu.utils.encoding import safe_repr

from exporter.model.jobs import Job, pack_traceback
from exporter.model.snapshot import TaskPlacement
from exporter.protocol.messages import TaskMessage, load_envelope, parse_task_message
from exporter.web.jobformat import (
    MAX_FIELD_CHARS,
    MAX_ITEMS,
    MAX_STACKTRACES,
    MAX_VALUE_CHARS,
    TRUNCATED,
    failed_reason,
    from_job,
    from_message,
    job_data,
    literal,
    to_json,
    undecodable_message,
)
from tests.unit.builders import NOW, producer_app, publish

#: The thirteen keys of every job object.
JOB_KEYS = {
    "id", "name", "data", "state", "failedReason", "timestamp", "processedOn", "finishedOn",
    "attemptsMade", "stacktrace", "returnValue", "ingestionSourceId", "error",
}
ARGS = (2, "zwölf ✓", None, 0.25, (1, 2))
KWARGS: dict[str, Any] = {"ingestionSourceId": "src-42", "rows": [1, {"nested": True}]}


class IngestError(Exception):
    """An application's own exception."""


class Report:
    """A return value that is not a literal."""


def exception_repr(exc: BaseException) -> str:
    """The exception as Celery's task-failed and task-retried events carry it."""
    text: str = safe_repr(exc)  # type: ignore[no-untyped-call]
    return text


def raised(exc: BaseException) -> str:
    """The traceback text of `exc` raised and caught, as a worker records it."""
    try:
        raise exc
    except BaseException as caught:
        return "".join(traceback.format_exception(caught))


def strict_json(value: Any) -> Any:
    """The value through JSON with no NaN or infinities allowed (what a client parses)."""
    return json.loads(json.dumps(value, allow_nan=False))


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    made = producer_app()
    yield made
    made.close()


@pytest.fixture(scope="module")
def headers(app: Celery) -> dict[str, Any]:
    """The headers of a real message: its id, name, argsrepr and kwargsrepr."""
    raw = publish(app, "app.build", args=ARGS, kwargs=KWARGS, queue="reports").raw
    found: dict[str, Any] = json.loads(raw)["headers"]
    return found


def event_job(headers: dict[str, Any]) -> Job:
    """A job as the events tell it: sent, started, with Celery's argument reprs."""
    job = Job(headers["id"])
    job.name = headers["task"]
    job.queue = "reports"
    job.args, job.kwargs = headers["argsrepr"], headers["kwargsrepr"]
    job.sent_at, job.started_at = NOW + 0.1234, NOW + 2.25
    job.attempts = 1
    return job


# -- failedReason ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exception", "reason"),
    [
        (ValueError("boom"), "ValueError: boom"),
        (KeyError("missing"), "KeyError: missing"),
        (RuntimeError(), "RuntimeError"),
        (TimeoutError(30), "TimeoutError: 30"),
        (IngestError("src-42 failed"), "IngestError: src-42 failed"),
        (ValueError("it's \"quoted\" (twice)"), "ValueError: it's \"quoted\" (twice)"),
        (ValueError("line one\nline two"), "ValueError: line one\nline two"),
        (FileNotFoundError(2, "No such file"), "FileNotFoundError: 2, 'No such file'"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_failed_reason_reads_the_exception_repr_celery_sends(
    exception: BaseException, reason: str
) -> None:
    assert failed_reason(exception_repr(exception)) == reason


def test_a_wrapped_pool_error_is_named_by_its_traceback() -> None:
    """A killed pool child: Celery sends `ExceptionWithTraceback()` and the real traceback."""
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 1.")
    text = raised(lost)
    wrapped = exception_repr(ExceptionWithTraceback(lost, text))
    assert wrapped == "ExceptionWithTraceback()"
    assert failed_reason(wrapped, text) == (
        "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 1."
    )


def test_a_chained_traceback_names_the_last_exception() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise IngestError("outer") from exc
    except IngestError as caught:
        text = "".join(traceback.format_exception(caught))
    assert failed_reason("ExceptionWithTraceback()", text) == "IngestError: outer"


def test_a_wrapper_without_a_usable_traceback_is_shown_as_it_is() -> None:
    assert failed_reason("ExceptionWithTraceback()", "  File 'x', line 1\n") == (
        "ExceptionWithTraceback"
    )
    assert failed_reason("ExceptionWithTraceback()") == "ExceptionWithTraceback"


def test_text_that_is_not_a_repr_is_kept() -> None:
    assert failed_reason("connection reset by peer") == "connection reset by peer"
    assert failed_reason(None) is None
    assert failed_reason("") is None


def test_literal_never_runs_code() -> None:
    """Reprs come from anyone who can publish: literals only."""
    payload = "__import__('os').system('exit 3')"
    assert literal(payload) == payload
    assert literal("(1, 'a', None)") == (1, "a", None)
    assert literal(None) is None


# -- jobs known from events -------------------------------------------------------------


def test_a_completed_job_has_every_field_in_the_documented_form(headers: dict[str, Any]) -> None:
    job = event_job(headers)
    job.finished_at, job.state = NOW + 3.5, "succeeded"
    job.result = saferepr({"rows": 3, "ids": (1, 2)})
    shown = strict_json(from_job(job, "completed"))

    assert set(shown) == JOB_KEYS
    assert shown == {
        "id": headers["id"],
        "name": "app.build",
        "data": {"args": [2, "zwölf ✓", None, 0.25, [1, 2]], "kwargs": KWARGS},
        "state": "completed",
        "failedReason": None,
        "timestamp": 1_700_000_000_123,
        "processedOn": 1_700_000_002_250,
        "finishedOn": 1_700_000_003_500,
        "attemptsMade": 1,
        "stacktrace": [],
        "returnValue": {"rows": 3, "ids": [1, 2]},
        "ingestionSourceId": "src-42",
        "error": None,
    }


def test_a_failed_job_shows_its_last_failure_and_newest_tracebacks(
    headers: dict[str, Any],
) -> None:
    job = event_job(headers)
    attempts = [IngestError(f"attempt {n}") for n in range(MAX_STACKTRACES + 2)]
    job.failures = [(exception_repr(exc), pack_traceback(raised(exc))) for exc in attempts]
    job.attempts, job.state, job.finished_at = len(attempts), "failed", NOW + 9
    shown = from_job(job, "failed")

    assert shown["failedReason"] == shown["error"] == f"IngestError: attempt {len(attempts) - 1}"
    assert shown["attemptsMade"] == len(attempts)
    assert len(shown["stacktrace"]) == MAX_STACKTRACES
    assert shown["stacktrace"][0].endswith("IngestError: attempt 2\n")
    assert shown["stacktrace"][-1].endswith(f"IngestError: attempt {len(attempts) - 1}\n")


def test_error_is_only_set_in_the_failed_status(headers: dict[str, Any]) -> None:
    """A job waiting for its retry has a failedReason, and no error."""
    job = event_job(headers)
    job.failures = [(exception_repr(TimeoutError("read timed out")), None)]
    shown = from_job(job, "delayed")
    assert (shown["failedReason"], shown["error"]) == ("TimeoutError: read timed out", None)
    assert shown["stacktrace"] == []


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        (saferepr([1, "two", None]), [1, "two", None]),
        (saferepr(None), None),
        (saferepr(Report()), "<tests.unit.test_jobformat.Report object at"),
        (saferepr(math.inf), "inf"),
        (None, None),
    ],
    ids=["literal", "none", "not-a-literal", "infinity", "no-result"],
)
def test_return_value_is_json_where_the_result_repr_is_a_literal(
    headers: dict[str, Any], result: str | None, shown: Any
) -> None:
    job = event_job(headers)
    job.result = result
    value = strict_json(from_job(job, "completed"))["returnValue"]
    if isinstance(shown, str) and shown.startswith("<"):
        assert isinstance(value, str) and value.startswith(shown)
    else:
        assert value == shown


def test_publish_time_falls_back_to_when_a_worker_received_the_job(
    headers: dict[str, Any],
) -> None:
    job = event_job(headers)
    job.sent_at, job.received_at = None, NOW + 1
    assert from_job(job, "active")["timestamp"] == 1_700_000_001_000


def test_a_running_job_known_only_from_inspection() -> None:
    placement = TaskPlacement("t-1", "app.send", "emails", "active", started_at=NOW + 0.5,
                              hostname="celery@a")
    shown = strict_json(from_job(None, "active", placement))
    assert set(shown) == JOB_KEYS
    assert (shown["id"], shown["name"], shown["processedOn"]) == ("t-1", "app.send",
                                                                   1_700_000_000_500)
    assert shown["attemptsMade"] == 1
    assert shown["data"] == {"args": [], "kwargs": {}}
    assert (shown["timestamp"], shown["finishedOn"], shown["failedReason"]) == (None, None, None)


def test_a_delayed_job_known_only_from_inspection_has_made_no_attempt() -> None:
    placement = TaskPlacement("t-2", None, "emails", "delayed", eta=NOW + 60)
    shown = from_job(None, "delayed", placement)
    assert (shown["attemptsMade"], shown["processedOn"], shown["name"]) == (0, None, None)


def test_the_start_comes_from_the_reply_when_the_events_missed_it(
    headers: dict[str, Any],
) -> None:
    job = event_job(headers)
    job.started_at = None
    placement = TaskPlacement(job.id, job.name, "reports", "active", started_at=NOW + 4)
    assert from_job(job, "active", placement)["processedOn"] == 1_700_000_004_000


# -- jobs read from the broker --------------------------------------------------------


def decoded(raw: bytes) -> TaskMessage:
    return parse_task_message(load_envelope(raw), with_body=True)


def test_a_waiting_message_with_no_events(app: Celery) -> None:
    raw = publish(app, args=ARGS, kwargs=KWARGS, queue="emails", retries=3).raw
    message = decoded(raw)
    shown = strict_json(from_message(message, "waiting"))
    assert set(shown) == JOB_KEYS
    assert shown["id"] == json.loads(raw)["headers"]["id"]
    assert (shown["name"], shown["state"]) == ("app.send", "waiting")
    assert shown["data"] == {"args": [2, "zwölf ✓", None, 0.25, [1, 2]], "kwargs": KWARGS}
    assert shown["attemptsMade"] == 3
    assert shown["ingestionSourceId"] == "src-42"
    assert [shown[k] for k in ("timestamp", "processedOn", "finishedOn", "failedReason",
                               "returnValue", "error")] == [None] * 6


def test_a_waiting_message_joined_with_its_events(app: Celery) -> None:
    """A retried job back in its queue: its history comes from the events."""
    message = decoded(publish(app, args=(1,), queue="emails", retries=1).raw)
    job = Job(message.task_id)
    job.sent_at, job.started_at, job.attempts = NOW, NOW + 1, 1
    job.failures = [(exception_repr(TimeoutError("read timed out")),
                     pack_traceback(raised(TimeoutError("read timed out"))))]
    shown = from_message(message, "paused", job)
    assert (shown["timestamp"], shown["processedOn"]) == (1_700_000_000_000, 1_700_000_001_000)
    assert shown["attemptsMade"] == 1
    assert shown["failedReason"] == "TimeoutError: read timed out"
    assert shown["error"] is None
    assert len(shown["stacktrace"]) == 1


def test_a_pickle_body_is_listed_without_being_unpickled(app: Celery) -> None:
    message = decoded(publish(app, args=(1,), kwargs=KWARGS, queue="emails",
                              serializer="pickle").raw)
    shown = from_message(message, "waiting")
    assert shown["id"] == message.task_id
    assert shown["data"]["args"] == [] and shown["data"]["kwargs"] == {}
    assert "pickle" in shown["data"]["undecodable"]
    assert shown["ingestionSourceId"] is None


def test_an_entry_that_is_not_a_message_is_listed_with_its_first_characters() -> None:
    raw = b"\xff\xfe not json " + b"x" * 2000
    shown = strict_json(undecodable_message(raw, "does not decode as JSON", "paused"))
    assert set(shown) == JOB_KEYS
    assert (shown["id"], shown["name"], shown["state"]) == (None, None, "paused")
    assert shown["data"]["undecodable"] == "does not decode as JSON"
    assert len(shown["data"]["raw"]) <= 256
    assert shown["data"]["raw"].startswith("\ufffd\ufffd not json xxx")
    assert shown["attemptsMade"] == 0


# -- data: reprs and decoded values to bounded JSON ----------------------------------------


def test_argument_reprs_that_are_not_literals_stay_strings() -> None:
    data = job_data(saferepr((object(), 1)), saferepr([1, 2]))
    assert len(data["args"]) == 1 and data["args"][0].startswith("(<object object at")
    assert data["kwargs"] == {"repr": [1, 2]}


def test_a_single_argument_is_wrapped_and_nothing_becomes_empty() -> None:
    assert job_data(7, None) == {"args": [7], "kwargs": {}}
    assert job_data(None, None) == {"args": [], "kwargs": {}}
    assert job_data("", "") == {"args": [""], "kwargs": {"repr": ""}}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (2**63, str(2**63)),
        (-(2**63), str(-(2**63))),
        (2**63 - 1, 2**63 - 1),
        (True, True),
        (b"\x00raw", "b'\\x00raw'"),
        ((1, (2, 3)), [1, [2, 3]]),
        (frozenset({"one"}), ["one"]),
        ({1: "int key"}, {"1": "int key"}),
    ],
    ids=["nan", "inf", "-inf", "2**63", "-2**63", "2**63-1", "bool", "bytes", "tuple",
         "frozenset", "int-key"],
)
def test_values_json_cannot_hold_exactly_become_strings_or_lists(value: Any, shown: Any) -> None:
    assert strict_json(to_json(value)) == shown


def test_a_long_string_is_clipped_to_the_value_limit() -> None:
    shown = to_json("é" * (MAX_VALUE_CHARS * 3))
    assert len(shown) == MAX_VALUE_CHARS
    assert shown.startswith("é" * (MAX_VALUE_CHARS // 2))


def test_a_long_string_ends_with_the_documented_mark() -> None:
    assert to_json("é" * (MAX_VALUE_CHARS * 3)).endswith(TRUNCATED)


def test_long_lists_and_mappings_keep_their_first_items_and_say_how_many_more() -> None:
    assert to_json(list(range(MAX_ITEMS + 10)))[-1] == "… 10 more items truncated"
    assert len(to_json(list(range(MAX_ITEMS + 10)))) == MAX_ITEMS + 1
    mapping = to_json({f"k{i:03d}": i for i in range(MAX_ITEMS + 7)})
    assert len(mapping) == MAX_ITEMS + 1
    assert mapping["…"] == "7 more keys truncated"
    assert mapping["k000"] == 0


def test_deep_nesting_ends_in_a_short_repr_without_recursing() -> None:
    deep: Any = "bottom"
    for _ in range(50_000):
        deep = [deep]
    shown = to_json(deep)
    level = 0
    while isinstance(shown, list):
        [shown] = shown
        level += 1
    assert level == 6
    assert isinstance(shown, str) and len(shown) < 200


def test_a_whole_field_is_bounded_in_text_and_values() -> None:
    """Many values each under the per-value limits still fit one budget."""
    wide = [["x" * MAX_VALUE_CHARS] * MAX_ITEMS for _ in range(MAX_ITEMS)]
    shown = to_json(wide)
    text = json.dumps(shown, ensure_ascii=False)
    assert len(text) < MAX_FIELD_CHARS * 2
    assert TRUNCATED in text
    many = to_json([list(range(MAX_ITEMS)) for _ in range(MAX_ITEMS)])
    assert sum(1 for row in many for item in row if item == TRUNCATED) > 0


def test_args_and_kwargs_share_one_budget() -> None:
    big = ["y" * MAX_VALUE_CHARS] * MAX_ITEMS
    data = job_data(big, {"more": big})
    text = json.dumps(data, ensure_ascii=False)
    assert len(text) < MAX_FIELD_CHARS * 2
    assert data["args"][-1] == TRUNCATED


def test_kwargs_stay_an_object_when_args_spend_the_budget() -> None:
    data = job_data(["y" * MAX_VALUE_CHARS] * MAX_ITEMS, {"ingestionSourceId": "src-42"})
    assert isinstance(data["kwargs"], dict)
