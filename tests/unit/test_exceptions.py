"""Exception classes from task-failed events, and their bounded label values."""

from __future__ import annotations

import pytest

from exporter.core.taskstats import TaskStats
from exporter.protocol.exceptions import UNKNOWN, exception_type

CELERY_WRAPPED_TRACEBACK = """Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/billiard/pool.py", line 1265, in mark_as_worker_lost
    raise WorkerLostError(
billiard.einfo.ExceptionWithTraceback:
billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 0.
"""


@pytest.mark.parametrize(
    ("exception_repr", "expected"),
    [
        ("ValueError('boom')", "ValueError"),
        ("KeyError('missing')", "KeyError"),
        ("TimeoutError()", "TimeoutError"),
        ("requests.exceptions.ConnectionError('refused')", "ConnectionError"),
        ("  RuntimeError(\"multi\\nline\")", "RuntimeError"),
        ("not a repr at all", UNKNOWN),
        ("", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_the_class_name_of_a_repr(exception_repr: str | None, expected: str) -> None:
    assert exception_type(exception_repr) == expected


def test_celerys_wrapper_names_the_real_exception() -> None:
    assert exception_type("ExceptionWithTraceback()", CELERY_WRAPPED_TRACEBACK) == "WorkerLostError"
    assert exception_type("ExceptionWithTraceback()", None) == "ExceptionWithTraceback"


def test_classes_past_the_limit_are_other_and_counted() -> None:
    stats = TaskStats(max_task_names=10, runtime_buckets=(1.0,), queue_wait_buckets=(1.0,),
                      max_exception_types=2)
    for exception in ("ValueError", "KeyError", "ValueError", "OSError", "TypeError", "OSError"):
        stats.count_failure("q", "app.t", exception)
    data = stats.data()
    assert data.failures == {
        ("q", "app.t", "ValueError"): 2, ("q", "app.t", "KeyError"): 1, ("q", "app.t", "other"): 3,
    }
    assert data.folded_exception_types == 2
