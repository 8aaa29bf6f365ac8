"""Celery tasks as the Jobs API's job objects (docs/jobs-api.md), field by field.

Events carry args, kwargs, results and exceptions as Python reprs; they are turned
back into JSON with `ast.literal_eval` (literals only, never code) and kept as their
repr string where they are not literals. Large values are truncated, never the response.
"""

from __future__ import annotations

import ast
import math
import re
import reprlib
from collections.abc import Mapping
from typing import Any

from exporter.model.jobs import Job, clip, unpack_traceback
from exporter.model.snapshot import TaskPlacement
from exporter.protocol.limits import valid_text
from exporter.protocol.messages import TaskMessage

MAX_VALUE_CHARS = 1024
MAX_ITEMS = 50
MAX_DEPTH = 6
#: Text and values one field (data, returnValue) may hold in all: with at most
#: `MAX_STACKTRACES` tracebacks, a job object stays under about 100 KB.
MAX_FIELD_CHARS = 16_384
MAX_FIELD_NODES = 2_000
#: Tracebacks shown per job: the newest attempts'.
MAX_STACKTRACES = 10
TRUNCATED = "…[truncated]"
_EXCEPTION_REPR = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)\((?P<args>.*)\)$", re.S)


def _short_repr() -> reprlib.Repr:
    """Bounded reprs for what is too deep or not JSON: reprlib stops at a depth and a
    size, so a value nested a thousand levels deep neither recurses nor grows the answer."""
    short = reprlib.Repr()  # keyword arguments only exist from Python 3.12
    short.maxlevel, short.maxstring, short.maxother = 3, 200, 200
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 20
    return short


_SHORT_REPR = _short_repr()


def literal(text: str | None) -> Any:
    """A repr turned back into its value when it is a Python literal; else the string."""
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


class _Budget:
    """What one field of a job may still spend: characters of text and values walked.

    Per-string and per-list limits alone allow 50 items at each of 6 levels, and a
    362-byte YAML body once made a 16 MB page; the budget bounds a whole value.
    """

    __slots__ = ("chars", "nodes")

    def __init__(self, chars: int = MAX_FIELD_CHARS, nodes: int = MAX_FIELD_NODES) -> None:
        self.chars = chars
        self.nodes = nodes

    def spend(self, text: str) -> str:
        """The text, clipped to what is left (ending with `TRUNCATED` when cut)."""
        limit = max(len(TRUNCATED), min(MAX_VALUE_CHARS, self.chars))
        clipped = text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED
        self.chars -= len(clipped)
        return clipped


def to_json(value: Any, depth: int = 0, budget: _Budget | None = None) -> Any:
    """A JSON-safe, size-bounded copy: tuples/sets become lists, other objects their repr.

    Strings are clipped to `MAX_VALUE_CHARS`, lists and mappings to `MAX_ITEMS`, nesting
    to `MAX_DEPTH`; the whole value to `MAX_FIELD_CHARS` of text and `MAX_FIELD_NODES`
    values (what does not fit becomes a truncation mark).
    """
    budget = budget if budget is not None else _Budget()
    budget.nodes -= 1
    if budget.nodes < 0 or budget.chars <= 0:
        return TRUNCATED
    if value is None or isinstance(value, bool | int | float):
        if isinstance(value, float) and not math.isfinite(value):  # JSON has no inf/NaN
            return repr(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 63:
            return budget.spend(repr(value))  # larger than JSON readers take exactly
        return value
    if isinstance(value, str):
        return budget.spend(valid_text(value))
    if isinstance(value, bytes):
        return budget.spend(repr(value[: MAX_VALUE_CHARS]))
    if depth >= MAX_DEPTH:
        return budget.spend(_SHORT_REPR.repr(value))
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {}
        for k, v in items[:MAX_ITEMS]:
            out[budget.spend(valid_text(str(k)))] = to_json(v, depth + 1, budget)
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more keys truncated"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value) if isinstance(value, set | frozenset) else value
        out_list = [to_json(v, depth + 1, budget) for v in seq[:MAX_ITEMS]]
        if len(seq) > MAX_ITEMS:
            out_list.append(f"… {len(seq) - MAX_ITEMS} more items truncated")
        return out_list
    return budget.spend(_SHORT_REPR.repr(value))


def job_data(args: Any, kwargs: Any) -> dict[str, Any]:
    """`{"args": [...], "kwargs": {...}}` from decoded values or reprs."""
    if isinstance(args, str):
        args = literal(args)
    if isinstance(kwargs, str):
        kwargs = literal(kwargs)
    if args is None:
        args = []
    elif not isinstance(args, list | tuple):
        args = [args]
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, Mapping):
        kwargs = {"repr": kwargs}
    # kwargs first, within half the field's budget, so that long args never cost the
    # keyword arguments (ingestionSourceId among them); args get what is left.
    kwargs_budget = _Budget(MAX_FIELD_CHARS // 2, MAX_FIELD_NODES // 2)
    kwargs_json = to_json(kwargs, budget=kwargs_budget)
    args_budget = _Budget(
        MAX_FIELD_CHARS - (MAX_FIELD_CHARS // 2 - kwargs_budget.chars),
        MAX_FIELD_NODES - (MAX_FIELD_NODES // 2 - kwargs_budget.nodes),
    )
    args_json = to_json(args, budget=args_budget)
    return {
        "args": args_json if isinstance(args_json, list) else [args_json],
        "kwargs": kwargs_json if isinstance(kwargs_json, dict) else {"…": kwargs_json},
    }


def failed_reason(exception_repr: str | None, traceback: str | None = None) -> str | None:
    """`ExceptionType: message` from an exception's repr such as `ValueError('boom')`.

    Celery reports an error raised in the pool's parent (a killed pool child's
    `WorkerLostError`) as `ExceptionWithTraceback()`, with no arguments: the last
    line of the traceback names the real one then.
    """
    if exception_repr and exception_repr.strip().startswith(_WRAPPER) and traceback:
        raised = _last_raised(traceback)
        if raised:
            return raised
    if not exception_repr:
        return None
    match = _EXCEPTION_REPR.match(exception_repr.strip())
    if not match:
        return exception_repr
    args = literal(f"({match.group('args')},)") if match.group("args") else ()
    if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], str):
        message = args[0]
    elif isinstance(args, tuple) and not args:
        message = ""
    else:
        message = match.group("args")
    name = match.group("type")
    return f"{name}: {message}" if message else name


_WRAPPER = "ExceptionWithTraceback"
_RAISED = re.compile(r"^(?:[A-Za-z_][\w]*\.)*(?P<type>[A-Za-z_]\w*)(?::\s?(?P<message>.*))?$")


def _last_raised(traceback: str) -> str | None:
    """`Type: message` from a traceback's last line (`pkg.module.Type: message`)."""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    if not lines or lines[-1].startswith(" "):
        return None
    match = _RAISED.match(lines[-1].strip())
    if match is None:
        return None
    message = match.group("message")
    return f"{match.group('type')}: {message}" if message else match.group("type")


def _reason(job: Job | None) -> str | None:
    """The failedReason of a job: its last failure's exception (or traceback)."""
    if job is None or not job.failures:
        return None
    exception, packed = job.failures[-1]
    wrapped = bool(exception and exception.startswith(_WRAPPER))
    return failed_reason(exception, unpack_traceback(packed) if wrapped else None)


def _ms(seconds: float | None) -> int | None:
    return round(seconds * 1000) if seconds is not None else None


def _ingestion_source(data: Mapping[str, Any]) -> Any:
    kwargs = data.get("kwargs")
    return kwargs.get("ingestionSourceId") if isinstance(kwargs, Mapping) else None


def from_job(job: Job | None, state: str, placement: TaskPlacement | None = None) -> dict[str, Any]:
    """The API object of a job known from events (and, if given, where it stands now).

    A job an admin retried also has `retriedBy`, the task id of its new run.
    """
    fields = _job_fields(job, state, placement)
    if job is not None and job.retried_by is not None:
        fields["retriedBy"] = job.retried_by
    return fields


def _job_fields(job: Job | None, state: str, placement: TaskPlacement | None) -> dict[str, Any]:
    task_id = job.id if job else placement.task_id if placement else None
    data = job_data(job.args, job.kwargs) if job else job_data(None, None)
    reason = _reason(job)
    processed = job.started_at if job else None
    if processed is None and placement is not None:
        processed = placement.started_at
    return {
        "id": task_id,
        "name": (job.name if job else None) or (placement.name if placement else None),
        "data": data,
        "state": state,
        "failedReason": reason,
        "timestamp": _ms(job.published_at) if job else None,
        "processedOn": _ms(processed),
        "finishedOn": _ms(job.finished_at) if job else None,
        "attemptsMade": job.attempts if job else (1 if state == "active" else 0),
        "stacktrace": job.stacktraces()[-MAX_STACKTRACES:] if job else [],
        "returnValue": to_json(literal(job.result)) if job and job.result is not None else None,
        "ingestionSourceId": to_json(_ingestion_source(data)),
        "error": reason if state == "failed" else None,
    }


def from_message(message: TaskMessage, state: str, job: Job | None = None) -> dict[str, Any]:
    """The API object of a message read from the broker (waiting or paused)."""
    if message.body_error:
        data: dict[str, Any] = {"args": [], "kwargs": {}, "undecodable": message.body_error}
    else:
        data = job_data(message.args, message.kwargs)
    reason = _reason(job)
    return {
        "id": message.task_id,
        "name": message.name,
        "data": data,
        "state": state,
        "failedReason": reason,
        "timestamp": _ms(job.published_at) if job else None,
        "processedOn": _ms(job.started_at) if job else None,
        "finishedOn": None,
        "attemptsMade": job.attempts if job else message.retries,
        "stacktrace": job.stacktraces()[-MAX_STACKTRACES:] if job else [],
        "returnValue": None,
        "ingestionSourceId": to_json(_ingestion_source(data)),
        "error": None,
    }


def undecodable_message(raw: bytes, reason: str, state: str) -> dict[str, Any]:
    """The API object of a list entry that is not a readable Celery message."""
    return {
        "id": None,
        "name": None,
        "data": {"args": [], "kwargs": {}, "undecodable": reason,
                 "raw": clip(raw[:1024].decode("utf-8", "replace"), 256)},
        "state": state,
        "failedReason": None,
        "timestamp": None,
        "processedOn": None,
        "finishedOn": None,
        "attemptsMade": 0,
        "stacktrace": [],
        "returnValue": None,
        "ingestionSourceId": None,
        "error": None,
    }
