"""Task counters and histograms: Prometheus bucket semantics and bounded label values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core import taskstats
from exporter.core.taskstats import OTHER_TASK, Histogram, TaskStats
from exporter.model.stats import TaskStatsData

RUNTIME = (0.1, 1.0, 10.0)
WAIT = (0.5, 5.0)


def stats(max_task_names: int = 10, max_task_series: int = 100) -> TaskStats:
    return TaskStats(max_task_names=max_task_names, runtime_buckets=RUNTIME,
                     queue_wait_buckets=WAIT, max_task_series=max_task_series)


# -- histograms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(0.0, 0), (0.1, 0), (0.10001, 1), (1.0, 1), (9.99, 2), (10.0, 2), (10.5, 3), (1e9, 3)],
)
def test_a_value_counts_in_the_first_bucket_whose_bound_it_does_not_exceed(
    value: float, bucket: int
) -> None:
    """Prometheus buckets are `le`: a value equal to a bound belongs to that bound."""
    histogram = Histogram(RUNTIME)
    histogram.observe(value)
    data = histogram.data()
    assert data.counts == tuple(int(i == bucket) for i in range(len(RUNTIME) + 1))
    assert (data.count, data.total) == (1, value)


def test_negative_durations_from_clock_skew_count_as_zero() -> None:
    histogram = Histogram(RUNTIME)
    histogram.observe(-3.0)
    histogram.observe(2.0)
    data = histogram.data()
    assert data.counts == (1, 0, 1, 0)
    assert data.total == 2.0


def test_a_frozen_copy_does_not_move() -> None:
    histogram = Histogram(WAIT)
    histogram.observe(1.0)
    before = histogram.data()
    histogram.observe(1.0)
    assert (before.count, histogram.data().count) == (1, 2)


# -- counters and label bounds -------------------------------------------------------------


def test_outcomes_are_counted_per_queue_task_and_outcome() -> None:
    counted = stats()
    for outcome in ("succeeded", "succeeded", "failed"):
        counted.count("emails", "app.send", outcome)
    counted.count("reports", "app.send", "succeeded")
    assert counted.data().outcomes == {
        ("emails", "app.send", "succeeded"): 2,
        ("emails", "app.send", "failed"): 1,
        ("reports", "app.send", "succeeded"): 1,
    }


def test_touch_creates_counters_at_zero_without_counting() -> None:
    """Rates exist before the first end; touching again changes nothing."""
    counted = stats()
    counted.touch("emails", "app.send", ("succeeded", "failed"))
    counted.count("emails", "app.send", "failed")
    counted.touch("emails", "app.send", ("succeeded", "failed"))
    data = counted.data()
    assert data.outcomes == {("emails", "app.send", "succeeded"): 0,
                             ("emails", "app.send", "failed"): 1}
    assert data.recovered == {("emails", "app.send"): 0}


def test_task_names_past_the_limit_fold_into_other() -> None:
    counted = stats(max_task_names=2)
    for name in ("app.a", "app.b", "app.c", "app.d", "app.c", None):
        counted.count("emails", name, "succeeded")
    data = counted.data()
    assert data.outcomes == {
        ("emails", "app.a", "succeeded"): 1,
        ("emails", "app.b", "succeeded"): 1,
        ("emails", OTHER_TASK, "succeeded"): 4,
    }
    assert data.folded_task_names == 2  # app.c and app.d, each counted once
    assert counted.task_label("app.a") == "app.a"  # a name admitted stays admitted


def test_queue_task_pairs_past_the_budget_fold_into_their_queue_s_other() -> None:
    counted = stats(max_task_series=2)
    counted.count("emails", "app.send", "succeeded")
    counted.count("reports", "app.send", "succeeded")
    counted.count("audit", "app.send", "succeeded")  # a third pair: folded
    counted.count("audit", "app.build", "failed")
    counted.count("emails", "app.send", "succeeded")  # an admitted pair goes on
    data = counted.data()
    assert data.outcomes == {
        ("emails", "app.send", "succeeded"): 2,
        ("reports", "app.send", "succeeded"): 1,
        ("audit", OTHER_TASK, "succeeded"): 1,
        ("audit", OTHER_TASK, "failed"): 1,
    }
    assert data.folded_task_series == 2
    assert data.folded_task_names == 0


def test_folded_names_do_not_spend_the_pair_budget() -> None:
    counted = stats(max_task_names=1, max_task_series=2)
    counted.count("emails", "app.send", "succeeded")
    counted.count("emails", "app.other", "succeeded")  # name folded: (emails, other)
    counted.count("reports", "app.send", "succeeded")  # still fits the pair budget
    assert ("reports", "app.send", "succeeded") in counted.data().outcomes


def test_runtimes_are_per_queue_and_task_and_waits_per_queue() -> None:
    counted = stats(max_task_names=1)
    counted.observe_runtime("emails", "app.send", 0.05)
    counted.observe_runtime("emails", "app.send", 5.0)
    counted.observe_runtime("emails", "app.build", 50.0)  # folded name
    counted.observe_queue_wait("emails", 0.2)
    counted.observe_queue_wait("reports", 7.0)
    data = counted.data()
    assert data.runtime["emails", "app.send"].counts == (1, 0, 1, 0)
    assert data.runtime["emails", OTHER_TASK].counts == (0, 0, 0, 1)
    assert data.runtime["emails", "app.send"].bounds == RUNTIME
    assert data.queue_wait["emails"].counts == (1, 0, 0)
    assert data.queue_wait["reports"].counts == (0, 0, 1)
    assert data.queue_wait["reports"].bounds == WAIT


def test_recovered_executions_are_counted_apart_from_the_outcomes() -> None:
    counted = stats()
    counted.count("emails", "app.send", "lost")
    counted.count_recovered("emails", "app.send")
    data = counted.data()
    assert data.outcomes == {("emails", "app.send", "lost"): 1}
    assert data.recovered == {("emails", "app.send"): 1}


def test_data_is_a_copy() -> None:
    counted = stats()
    counted.count("emails", "app.send", "succeeded")
    counted.observe_runtime("emails", "app.send", 1.0)
    before = counted.data()
    counted.count("emails", "app.send", "succeeded")
    counted.observe_runtime("emails", "app.send", 1.0)
    assert before.outcomes[("emails", "app.send", "succeeded")] == 1
    assert before.runtime["emails", "app.send"].count == 1


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["touch", "touch-other", "count", "recovered", "failure", "runtime"]),
        st.sampled_from(["emails", "reports", "media"]),
        st.sampled_from(["a", "b", "c", "d", "e"]) | st.none(),
        st.sampled_from(["succeeded", "failed", "lost"]),
    ),
    max_size=60,
)


def replay(operations: list[tuple[str, str, str | None, str]]) -> TaskStatsData:
    counted = stats(max_task_names=3, max_task_series=4)
    outcomes, other_outcomes = ("succeeded", "failed"), ("succeeded", "failed")
    for operation, queue, task, outcome in operations:
        if operation == "touch":
            counted.touch(queue, task, outcomes)
        elif operation == "touch-other":  # equal outcomes, another tuple: counters made again
            counted.touch(queue, task, other_outcomes)
        elif operation == "count":
            counted.count(queue, task, outcome)
        elif operation == "recovered":
            counted.count_recovered(queue, task)
        elif operation == "failure":
            counted.count_failure(queue, task, outcome)
        else:
            counted.observe_runtime(queue, task, 1.0)
    return counted.data()


@settings(max_examples=100, deadline=None, database=None)
@given(OPERATIONS)
def test_remembered_labels_count_exactly_as_labels_worked_out_each_time(
    operations: list[tuple[str, str, str | None, str]],
) -> None:
    """The hot path's memory of labels and touched pairs changes no figure, past any limit."""
    remembered = replay(operations)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(taskstats, "MAX_REMEMBERED_PAIRS", 0)
        worked_out = replay(operations)
    assert remembered == worked_out


def test_remembered_pairs_are_bounded() -> None:
    counted = stats(max_task_names=5)
    for n in range(taskstats.MAX_REMEMBERED_PAIRS + 50):
        counted.touch("emails", f"task-{n}", ("succeeded",))
        counted.count("emails", f"task-{n}", "succeeded")
    assert counted._remembered == taskstats.MAX_REMEMBERED_PAIRS
    data = counted.data()
    assert data.outcomes[("emails", OTHER_TASK, "succeeded")] == taskstats.MAX_REMEMBERED_PAIRS + 45
