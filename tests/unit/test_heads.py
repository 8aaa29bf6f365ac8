"""The age of each queue's next job: from its publish time, else a lower bound."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.core.heads import HeadAge, HeadClock
from exporter.model.jobs import Job


def published(**sent_at: float) -> dict[str, Job]:
    jobs = {}
    for task_id, at in sent_at.items():
        job = Job(task_id)
        job.sent_at = at
        jobs[task_id] = job
    return jobs


def test_a_known_publish_time_gives_the_true_age() -> None:
    known = published(a=100.0)
    clock = HeadClock(lambda ids: {i: known[i] for i in ids if i in known})
    assert clock.ages({"emails": "a"}, now=130.0) == {"emails": HeadAge(30.0, False)}


def test_an_unknown_publish_time_counts_from_first_seen_at_the_head() -> None:
    asked: list[list[str]] = []

    def lookup(ids: Iterable[str]) -> dict[str, Job]:
        asked.append(sorted(ids))
        return {}

    clock = HeadClock(lookup)
    assert clock.ages({"emails": "sha1:ab"}, now=100.0) == {"emails": HeadAge(0.0, True)}
    assert clock.ages({"emails": "sha1:ab"}, now=107.5) == {"emails": HeadAge(7.5, True)}
    # The head was taken: the next message is new at the head, its clock starts again.
    assert clock.ages({"emails": "b"}, now=110.0) == {"emails": HeadAge(0.0, True)}
    assert asked == [["sha1:ab"], ["sha1:ab"], ["b"]]


def test_an_emptied_queue_is_forgotten() -> None:
    clock = HeadClock(lambda ids: {})
    clock.ages({"emails": "a"}, now=100.0)
    assert clock.ages({}, now=150.0) == {}
    assert clock.ages({"emails": "a"}, now=160.0) == {"emails": HeadAge(0.0, True)}


def test_clock_skew_never_gives_a_negative_age() -> None:
    known = published(a=200.0)
    clock = HeadClock(lambda ids: {i: known[i] for i in ids if i in known})
    assert clock.ages({"q": "a"}, now=190.0) == {"q": HeadAge(0.0, False)}
