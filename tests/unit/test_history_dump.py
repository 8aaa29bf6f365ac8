"""A finished job as the history saves it: every field, in order, tracebacks as text."""

from __future__ import annotations

import orjson

from exporter.core.history import FIELDS, dump_job
from exporter.core.saved import load_saved_job
from exporter.model.jobs import Job, pack_traceback


def failed_job(task_id: str, traceback: str) -> Job:
    job = Job(task_id)
    job.name, job.queue, job.state, job.hostname = "app.task", "q", "failed", "w@h"
    job.args, job.kwargs, job.attempts = "(1,)", "{}", 2
    job.sent_at, job.received_at, job.started_at, job.finished_at = 1.0, 2.0, 3.0, 4.0
    job.failures = [("ValueError('a')", pack_traceback(traceback)), ("KeyError('b')", None)]
    return job


def test_a_saved_job_holds_every_field_in_order() -> None:
    job = failed_job("t1", "Traceback: one\n")
    saved = orjson.loads(dump_job(job))
    assert list(saved) == list(FIELDS)
    assert saved["failures"] == [["ValueError('a')", "Traceback: one\n"], ["KeyError('b')", None]]
    assert {k: v for k, v in saved.items() if k != "failures"} == {
        field: getattr(job, field) for field in FIELDS if field != "failures"
    }
    loaded = load_saved_job(dump_job(job), "failed")
    assert loaded.failure_texts() == job.failure_texts()


def test_the_retry_link_is_saved_and_loaded() -> None:
    job = failed_job("t1", "Traceback: one\n")
    assert load_saved_job(dump_job(job), "failed").retried_by is None
    job.retried_by = "t2"
    assert orjson.loads(dump_job(job))["retried_by"] == "t2"
    assert load_saved_job(dump_job(job), "failed").retried_by == "t2"


def test_jobs_sharing_a_traceback_each_save_their_own_texts() -> None:
    one, two = failed_job("t1", "Traceback: shared\n"), failed_job("t2", "Traceback: shared\n")
    three = failed_job("t3", "Traceback: other\n")
    texts = [orjson.loads(dump_job(job))["failures"][0][1] for job in (one, two, three, one)]
    assert texts == ["Traceback: shared\n", "Traceback: shared\n", "Traceback: other\n",
                     "Traceback: shared\n"]


def test_a_job_without_failures_saves_null() -> None:
    job = Job("t")
    job.state = "succeeded"
    assert orjson.loads(dump_job(job))["failures"] is None
