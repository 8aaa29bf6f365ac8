"""Retention of finished jobs: per queue, completed and failed apart, newest first, bounded."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.core.jobstore import JobStore
from exporter.model.jobs import Job, RetentionLimits
from tests.unit.builders import NOW


def finished(task_id: str, queue: str | None = "emails", *, failed: bool = False,
             at: float = NOW) -> Job:
    job = Job(task_id)
    job.queue = queue
    job.state = "failed" if failed else "succeeded"
    job.finished_at = at
    return job


def ids(jobs: Iterable[Job]) -> list[str]:
    return [job.id for job in jobs]


def test_completed_and_failed_are_kept_apart_per_queue() -> None:
    store = JobStore(RetentionLimits())
    store.add(finished("ok-1"))
    store.add(finished("bad-1", failed=True))
    store.add(finished("ok-2", "reports"))
    assert store.counts() == {"emails": (1, 1), "reports": (1, 0)}
    assert len(store) == 3
    frozen = store.frozen()
    assert (ids(frozen["emails"][0]), ids(frozen["emails"][1])) == (["ok-1"], ["bad-1"])
    assert (ids(frozen["reports"][0]), frozen["reports"][1]) == (["ok-2"], ())


def test_a_job_without_a_queue_is_kept_under_unknown() -> None:
    store = JobStore(RetentionLimits())
    store.add(finished("x", None))
    assert store.counts() == {"unknown": (1, 0)}


def test_the_newest_are_kept_and_listed_first() -> None:
    store = JobStore(RetentionLimits(completed=3, failed=2))
    for n in range(5):
        store.add(finished(f"ok-{n}", at=NOW + n))
        store.add(finished(f"bad-{n}", failed=True, at=NOW + n))
    assert ids(store.newest_first("emails", "completed")) == ["ok-4", "ok-3", "ok-2"]
    assert ids(store.newest_first("emails", "failed")) == ["bad-4", "bad-3"]
    completed, failed_jobs = store.frozen()["emails"]
    assert (ids(completed), ids(failed_jobs)) == (["ok-4", "ok-3", "ok-2"], ["bad-4", "bad-3"])
    assert store.counts() == {"emails": (3, 2)}
    assert list(store.newest_first("nowhere", "failed")) == []


def test_a_frozen_copy_does_not_change_with_the_store() -> None:
    store = JobStore(RetentionLimits(completed=2))
    store.add(finished("a"))
    before = store.frozen()
    store.add(finished("b"))
    store.add(finished("c"))
    assert ids(before["emails"][0]) == ["a"]


def test_restored_jobs_go_behind_newer_ones_and_only_where_there_is_room() -> None:
    """Jobs saved before a restart come back older than what finished since."""
    store = JobStore(RetentionLimits(completed=3))
    store.add(finished("new"))
    for saved in ("saved-newest", "saved-older", "saved-oldest"):  # loaded newest first
        store.restore(finished(saved))
    assert ids(store.newest_first("emails", "completed")) == ["new", "saved-newest", "saved-older"]
    store.add(finished("newer"))
    assert ids(store.newest_first("emails", "completed")) == ["newer", "new", "saved-newest"]


def test_discard_forgets_one_kept_job() -> None:
    """A job recorded as lost whose worker spoke again."""
    store = JobStore(RetentionLimits())
    lost, other = finished("lost", failed=True), finished("other", failed=True)
    store.add(lost)
    store.add(other)
    store.discard(lost)
    store.discard(lost)  # already gone: nothing happens
    store.discard(finished("never-kept", "reports"))
    assert ids(store.newest_first("emails", "failed")) == ["other"]


def test_prune_forgets_jobs_older_than_the_maximum_age() -> None:
    store = JobStore(RetentionLimits(max_age=60.0))
    store.add(finished("old", at=NOW - 120))
    store.add(finished("old-bad", failed=True, at=NOW - 61))
    store.add(finished("recent", at=NOW - 30))
    store.add(finished("recent-bad", failed=True, at=NOW - 59))
    store.prune(NOW)
    assert ids(store.newest_first("emails", "completed")) == ["recent"]
    assert ids(store.newest_first("emails", "failed")) == ["recent-bad"]


def test_without_a_maximum_age_nothing_is_pruned() -> None:
    store = JobStore(RetentionLimits())
    store.add(finished("ancient", at=0.0))
    store.prune(NOW)
    assert len(store) == 1
