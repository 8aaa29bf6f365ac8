"""Job objects of the Jobs API: failure reasons, including Celery's wrapped pool errors."""

from __future__ import annotations

import pytest

from exporter.model.jobs import Job, pack_traceback
from exporter.web.jobformat import failed_reason, from_job

LOST_CHILD = (
    "Traceback (most recent call last):\n"
    '  File "billiard/pool.py", line 1367, in mark_as_worker_lost\n'
    "    raise WorkerLostError(\n"
    "billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 1.\n"
)


@pytest.mark.parametrize(
    ("exception", "traceback", "reason"),
    [
        ("ValueError('boom')", None, "ValueError: boom"),
        ("KeyError()", None, "KeyError"),
        ("WorkerLost('worker w@h stopped while the job ran')", None,
         "WorkerLost: worker w@h stopped while the job ran"),
        ("ExceptionWithTraceback()", LOST_CHILD,
         "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 1."),
        ("ExceptionWithTraceback()", None, "ExceptionWithTraceback"),
        ("not a repr", None, "not a repr"),
        (None, None, None),
    ],
)
def test_failed_reason(exception: str | None, traceback: str | None, reason: str | None) -> None:
    assert failed_reason(exception, traceback) == reason


def test_a_killed_pool_child_reads_as_its_worker_lost_error() -> None:
    job = Job("j")
    job.failures = [("ExceptionWithTraceback()", pack_traceback(LOST_CHILD))]
    shown = from_job(job, "failed")
    assert shown["failedReason"] == shown["error"]
    assert shown["failedReason"].startswith("WorkerLostError: Worker exited prematurely")
    assert shown["stacktrace"] == [LOST_CHILD]
