"""Label bounds: which queues are reported, and label values cut without merging series."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.protocol import cardinality
from exporter.protocol.cardinality import DistinctCount, QueueAdmission, label_value

# -- --max-queues -----------------------------------------------------------------------


def test_queues_are_admitted_first_come_first_served_up_to_the_limit() -> None:
    admission = QueueAdmission(3, ("configured",))
    assert [admission.admit(name) for name in ("a", "b", "c", "a", "configured")] == [
        True, True, False, True, True,
    ]
    assert admission.refused == 1


def test_configured_queues_are_admitted_even_past_the_limit() -> None:
    admission = QueueAdmission(1, ("one", "two"))
    assert admission.admit("one") and admission.admit("two")
    assert not admission.admit("discovered")


def test_a_refused_name_is_counted_once_however_often_it_comes_back() -> None:
    admission = QueueAdmission(1)
    admission.admit("kept")
    for _ in range(3):
        assert not admission.admit("refused-1")
        assert not admission.admit("refused-2")
    assert admission.refused == 2


def test_admitted_filters_a_set_of_names() -> None:
    admission = QueueAdmission(2, ("configured",))
    admission.admit("early")
    assert admission.admitted({"configured", "early", "late"}) == {"configured", "early"}
    assert admission.refused == 1


def test_concurrent_admission_never_passes_the_limit() -> None:
    """The broker read and the event stream admit names at the same time."""
    admission = QueueAdmission(50)
    barrier = threading.Barrier(8)
    admitted: list[list[str]] = [[] for _ in range(8)]

    def admit_many(index: int) -> None:
        barrier.wait()
        admitted[index] = [n for n in (f"q{index}-{i}" for i in range(100)) if admission.admit(n)]

    threads = [threading.Thread(target=admit_many, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(names) for names in admitted) == 50
    assert admission.refused == 8 * 100 - 50


def test_distinct_counts_stop_growing_at_their_memory_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cardinality, "MAX_REMEMBERED", 3)
    counted = DistinctCount()
    for name in ("a", "b", "a", "c", "d", "e"):
        counted.add(name)
    assert len(counted) == 3


# -- --max-label-length -----------------------------------------------------------------


def test_a_short_value_is_kept_as_it_is() -> None:
    assert label_value("emails", 16) == "emails"
    assert label_value("x" * 16, 16) == "x" * 16


def test_a_long_value_is_cut_to_the_limit_and_ends_with_its_hash() -> None:
    cut = label_value("reports." + "r" * 200, 32)
    assert len(cut) == 32
    assert cut.startswith("reports." + "r" * 15 + "~")
    assert all(c in "0123456789abcdef" for c in cut[-8:])


@settings(max_examples=200, deadline=None, database=None)
@given(
    prefix=st.text(min_size=100, max_size=120),
    first=st.text(min_size=1, max_size=5),
    second=st.text(min_size=1, max_size=5),
    limit=st.integers(16, 99),
)
def test_long_values_sharing_a_prefix_stay_apart(
    prefix: str, first: str, second: str, limit: int
) -> None:
    """Two queues differing past the cut are two series, and each keeps its name."""
    one, two = label_value(prefix + first, limit), label_value(prefix + second, limit)
    assert len(one) <= limit and len(two) <= limit
    assert (one == two) == (first == second)
    assert one == label_value(prefix + first, limit)


def test_text_that_is_not_valid_unicode_can_still_be_cut() -> None:
    cut = label_value("\ud800" * 200, 20)
    assert len(cut) == 20 and cut[11] == "~"
