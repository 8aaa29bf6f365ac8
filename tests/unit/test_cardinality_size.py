"""Label bounds: /metrics stays under 12 MB at the default limits, whatever the names."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.config.settings import Settings
from exporter.core.refresher import Refresher
from exporter.core.tracker import MAX_WORKERS
from exporter.model.readings import BrokerReading
from exporter.prometheus.render import render
from exporter.protocol.cardinality import QueueAdmission, label_value
from exporter.protocol.events import events_from
from exporter.serving.runtime import make_tracker

#: The bound the README states for the default limits and histogram buckets.
MAX_EXPOSITION_BYTES = 12_000_000


class InventedQueues:
    """A broker reading that names every queue in `names` (as bindings could)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def read(self, extra_queues: Iterable[str] = ()) -> BrokerReading:
        return BrokerReading(queues=self.names, waiting_in_lists={}, unacked=(),
                             new_malformed=0, round_trips=1, read_at=0.0)


def test_the_worst_case_exposition_at_the_defaults_is_under_12_mb() -> None:
    """Long names everywhere, more queues, tasks, pairs and workers than the limits allow."""
    settings = Settings(broker_url="redis://127.0.0.1:1/0")
    tracker = make_tracker(settings)
    queues = [f"{index:04d}" + "q" * 300 for index in range(settings.max_queues + 100)]
    tasks = [f"{index:04d}" + "t" * 300 for index in range(settings.max_task_names + 100)]
    events = []
    for index, queue in enumerate(queues):
        for step in range(12):
            task_id = f"{index}-{step}"
            events += [
                {"type": "task-sent", "uuid": task_id, "timestamp": 1.0,
                 "name": tasks[(index * 7 + step) % len(tasks)], "queue": queue},
                {"type": "task-started", "uuid": task_id, "timestamp": 2.0},
                {"type": "task-failed", "uuid": task_id, "timestamp": 3.0, "runtime": 1.0},
            ]
    events += [{"type": "worker-heartbeat", "hostname": f"{index}@" + "w" * 300,
                "timestamp": 1.0, "active": 1} for index in range(MAX_WORKERS + 100)]
    tracker.apply_batch(events_from(events))
    refresher = Refresher(settings, InventedQueues(queues), None, tracker)  # type: ignore[arg-type]
    snapshot = refresher.refresh_once()
    refresher.stop()
    exposition = render(snapshot).text

    assert len(snapshot.queues) == settings.max_queues
    assert len(snapshot.workers) == MAX_WORKERS
    assert snapshot.stats.folded_task_series > 0
    assert snapshot.dropped_queue_names == 100
    print(f"worst case at the defaults: {len(exposition):,} bytes")
    assert len(exposition) < MAX_EXPOSITION_BYTES


def test_long_label_values_stay_distinct() -> None:
    first, second = "a" * 200 + "1", "a" * 200 + "2"
    assert label_value("short", 100) == "short"
    cut = label_value(first, 100)
    assert len(cut) == 100 and cut.startswith("a" * 91 + "~")
    assert cut != label_value(second, 100)
    assert cut == label_value(first, 100)


def test_configured_queues_are_always_admitted_and_refusals_are_counted_once() -> None:
    admission = QueueAdmission(2, ("configured",))
    assert admission.admit("configured")
    assert admission.admit("a")
    assert not admission.admit("b")
    assert not admission.admit("b")
    assert admission.admit("configured") and admission.admit("a")
    assert admission.refused == 1
