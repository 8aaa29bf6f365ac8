"""Rendering a Snapshot built by a real Refresher against a private redis-server."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from celery import Celery
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.config.settings import Settings
from exporter.core.refresher import Refresher
from exporter.core.tracker import TaskTracker
from exporter.model.snapshot import STATUSES, Snapshot
from exporter.prometheus.render import RenderedMetrics, render
from exporter.protocol.events import decode_event_message, events_from
from exporter.serving.runtime import make_tracker
from exporter.sources.broker import BrokerSource
from exporter.sources.redis import connect, parse_endpoint
from exporter.sources.workers import WorkersSource, make_inspect_app
from testkit.celery_worker import CeleryWorker
from testkit.exposition import parse_metrics
from testkit.payloads import load_payloads
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

PROMTOOL = Path("/usr/bin/promtool")
QUEUE_GAUGES = ("celery_queue_jobs", "celery_queue_consumers", "celery_queue_prefetched_jobs")

#: Tasks published per queue before the refresh; `discovered` is not configured.
PUBLISHED = {"alpha": 3, "beta": 2, "discovered": 1}
CONFIGURED = ("alpha", "beta", "empty")


def captured_events() -> list[list[dict[str, Any]]]:
    return [
        [msgspec.structs.asdict(e) for e in decode_event_message(p.raw)] for p in load_payloads()
    ]


def finished_per_queue() -> dict[str, tuple[int, int]]:
    """(succeeded, failed) per queue, as the captured events tell it."""
    queue_of: dict[str, str] = {}
    counts: dict[str, Counter[str]] = {}
    for batch in captured_events():
        for event in batch:
            if event["type"] == "task-sent":
                queue_of[event["uuid"]] = event["queue"]
            elif event["type"] in ("task-succeeded", "task-failed"):
                queue = queue_of[event["uuid"]]
                counts.setdefault(queue, Counter())[event["type"]] += 1
    return {q: (c["task-succeeded"], c["task-failed"]) for q, c in counts.items()}


@dataclass
class Built:
    """A snapshot, its rendering, and what went into it."""

    snapshot: Snapshot
    rendered: RenderedMetrics
    tracker: TaskTracker


@pytest.fixture
def built(redis_server: RedisServer) -> Iterator[Built]:
    """Tasks in real lists, real events in the tracker, one real refresh, rendered."""
    settings = Settings(
        broker_url=redis_server.url, queues=CONFIGURED, refresh_interval=1.0, inspect_timeout=0.5
    )
    app = Celery("render", broker=redis_server.url, set_as_current=False)
    client = connect(parse_endpoint(settings.broker_url), settings.transport)
    try:
        for queue, count in PUBLISHED.items():
            for index in range(count):
                app.send_task("tests.add", args=(index, 1), queue=queue, priority=index * 4)
        tracker = make_tracker(settings)
        for batch in captured_events():
            tracker.apply_batch(events_from(batch))
        broker = BrokerSource(
            client, settings.transport, configured_queues=settings.queues, discovery_interval=0
        )
        refresher = Refresher(settings, broker, None, tracker)
        snapshot = refresher.refresh_once()
        refresher.stop()
        yield Built(snapshot, render(snapshot), tracker)
    finally:
        client.close()
        app.close()


def run_promtool(exposition: bytes) -> subprocess.CompletedProcess[bytes]:
    """`promtool check metrics` on the exposition; a missing promtool is a failure."""
    if not PROMTOOL.exists():
        found = shutil.which("promtool")
        pytest.fail(
            f"promtool not found at {PROMTOOL} (PATH has {found!r}); CI must install it "
            "(Debian package 'prometheus')"
        )
    return subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )


def queue_samples(text: str) -> dict[str, dict[tuple[str, ...], float]]:
    """Samples of the queue gauges, by metric and label values."""
    found: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in QUEUE_GAUGES}
    for (name, pairs), sample in parse_metrics(text).items():
        if name in found:
            labels = dict(pairs)
            found[name][tuple(labels[k] for k in ("queue", "status") if k in labels)] = sample
    return found


# -- the exposition formats ---------------------------------------------------------------


def test_text_exposition_passes_promtool(built: Built) -> None:
    """promtool accepts the text exposition without a lint problem."""
    result = run_promtool(built.rendered.text)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert (result.stdout + result.stderr).strip() == b""
    # Control: promtool does flag a lint problem, so the check above can fail.
    bad = run_promtool(b"# HELP foo_things x\n# TYPE foo_things counter\nfoo_things 1\n")
    assert bad.returncode != 0
    assert b"_total" in bad.stdout + bad.stderr


def test_openmetrics_variant(built: Built) -> None:
    """OpenMetrics ends with `# EOF` and parses with the same queue values as the text."""
    openmetrics = built.rendered.openmetrics
    assert openmetrics.endswith(b"# EOF\n")
    assert openmetrics.count(b"# EOF") == 1
    text = built.rendered.text
    assert b"# EOF" not in text
    parsed = parse_openmetrics(openmetrics.decode())  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parsed}
    om_jobs = {
        (s.labels["queue"], s.labels["status"]): s.value
        for s in families["celery_queue_jobs"].samples
    }
    assert om_jobs == queue_samples(text.decode())["celery_queue_jobs"]
    assert families["celery_tasks"].type == "counter"
    assert families["celery_task_runtime_seconds"].type == "histogram"


def test_gzip_variants_decompress_to_the_same_bytes(built: Built) -> None:
    """Each gzip variant is the plain variant compressed; body() picks the right one."""
    rendered = built.rendered
    assert gzip.decompress(rendered.text_gzip) == rendered.text
    assert gzip.decompress(rendered.openmetrics_gzip) == rendered.openmetrics
    assert rendered.text_gzip != rendered.openmetrics_gzip
    assert rendered.body(openmetrics=False, compressed=False) == rendered.text
    assert rendered.body(openmetrics=False, compressed=True) == rendered.text_gzip
    assert rendered.body(openmetrics=True, compressed=False) == rendered.openmetrics
    assert rendered.body(openmetrics=True, compressed=True) == rendered.openmetrics_gzip
    assert rendered.generation == built.snapshot.generation == 1
    # Deterministic: the same snapshot renders to the same bytes, gzip included (mtime 0).
    again = render(built.snapshot)
    assert again == rendered


# -- content ------------------------------------------------------------------------------


def test_every_status_of_every_queue_is_present(built: Built) -> None:
    """Each queue has a sample for every status, 0 when empty; values match the broker."""
    samples = queue_samples(built.rendered.text.decode())
    jobs = samples["celery_queue_jobs"]
    finished = finished_per_queue()
    queues = set(CONFIGURED) | set(PUBLISHED) | set(finished)
    assert {q for q, _ in jobs} == queues
    assert set(jobs) == {(q, s) for q in queues for s in STATUSES}
    for queue in queues:
        completed, failed = finished.get(queue, (0, 0))
        expected = {
            "waiting": 0,  # nobody consumes: waiting lists count as paused
            "active": 0,
            "delayed": 0,
            "paused": PUBLISHED.get(queue, 0),
            "completed": completed,
            "failed": failed,
        }
        assert {s: jobs[(queue, s)] for s in STATUSES} == expected, queue
        assert samples["celery_queue_consumers"][(queue,)] == 0
        assert samples["celery_queue_prefetched_jobs"][(queue,)] == 0
    assert set(built.snapshot.queues) == queues


def test_queue_gauges_help_mentions_background_refresh(built: Built) -> None:
    """The HELP of every queue gauge says it comes from the background refresh."""
    helps = {
        line.split(" ", 3)[2]: line.split(" ", 3)[3]
        for line in built.rendered.text.decode().splitlines()
        if line.startswith("# HELP ")
    }
    for name in QUEUE_GAUGES:
        assert "background refresh" in helps[name], helps[name]
        assert "celery_exporter_last_refresh_timestamp_seconds" in helps[name]
    assert "background refresh" not in helps["celery_tasks_total"]


def test_task_counters_and_histograms_match_the_tracker(built: Built) -> None:
    """celery_tasks_total and the histograms carry the tracker's numbers."""
    stats = built.tracker.view().stats
    families = {f.name: f for f in parse_text(built.rendered.text.decode())}
    outcomes = {
        (s.labels["queue"], s.labels["task"], s.labels["outcome"]): s.value
        for s in families["celery_tasks"].samples
        if s.name == "celery_tasks_total"
    }
    assert outcomes == {k: float(v) for k, v in stats.outcomes.items()}
    assert outcomes[("celery", "tests.flaky_fail", "retried")] == 2

    runtime = families["celery_task_runtime_seconds"].samples
    for (queue, task), data in stats.runtime.items():
        labels = {"queue": queue, "task": task}
        buckets = [
            s for s in runtime
            if s.name.endswith("_bucket") and {k: s.labels[k] for k in labels} == labels
        ]
        assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
        assert buckets[-1].labels["le"] == "+Inf"
        assert buckets[-1].value == data.count
        (count,) = [
            s.value for s in runtime
            if s.name.endswith("_count") and {k: s.labels[k] for k in labels} == labels
        ]
        assert count == data.count
    waits = {
        s.labels["queue"]: s.value
        for s in families["celery_task_queue_wait_seconds"].samples
        if s.name.endswith("_count")
    }
    assert waits == {q: float(d.count) for q, d in stats.queue_wait.items()}


def test_exporter_self_metrics(built: Built) -> None:
    """The exporter's own gauges and counters reflect the refresh and the events."""
    snapshot = built.snapshot
    view = built.tracker.view()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in parse_text(built.rendered.text.decode())
        for s in f.samples
    }
    assert values[("celery_exporter_up", ())] == 1.0
    assert values[("celery_exporter_last_refresh_timestamp_seconds", ())] == pytest.approx(
        snapshot.created_at
    )
    assert values[("celery_exporter_events_received_total", ())] == view.events_received
    assert values[("celery_exporter_broker_round_trips", ())] == snapshot.broker_round_trips > 0
    assert values[("celery_exporter_source_up", (("source", "broker"),))] == 1.0
    # Workers were not read (no workers source): no series for them.
    assert ("celery_exporter_source_up", (("source", "workers"),)) not in values


# -- with a real worker -----------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_snapshot_with_a_real_worker_renders_and_passes_promtool(
    redis_server: RedisServer,
    celery_app: Celery,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    """A consumer and its delayed tasks show up, and the exposition stays valid."""
    worker = celery_worker_factory(redis_server.url, queues=["alpha"], concurrency=1)
    settings = Settings(
        broker_url=redis_server.url, queues=("alpha", "beta"), refresh_interval=2.0,
        inspect_timeout=1.5,
    )
    delayed = [
        celery_app.send_task("tests.add", args=(i, 1), queue="alpha", countdown=300).id
        for i in range(2)
    ]
    for i in range(3):
        celery_app.send_task("tests.add", args=(i, 2), queue="beta")
    raw: redis.Redis = redis_server.client()
    inspect_app = make_inspect_app(settings.broker_url, settings.transport.as_kombu_options())
    client = connect(parse_endpoint(settings.broker_url), settings.transport)
    try:
        assert wait_until(lambda: raw.hlen("unacked") == len(delayed), timeout=30)
        refresher = Refresher(
            settings,
            BrokerSource(client, settings.transport, configured_queues=settings.queues),
            WorkersSource(inspect_app, settings.inspect_timeout),
            make_tracker(settings),
        )
        snapshot = refresher.refresh_once()
        refresher.stop()
    finally:
        raw.close()
        client.close()
        inspect_app.close()

    rendered = render(snapshot)
    samples = queue_samples(rendered.text.decode())
    jobs = samples["celery_queue_jobs"]
    assert jobs[("alpha", "delayed")] == len(delayed)
    assert jobs[("beta", "paused")] == 3
    assert samples["celery_queue_consumers"][("alpha",)] == 1
    assert samples["celery_queue_consumers"][("beta",)] == 0
    assert {p.task_id for p in snapshot.placements if p.status == "delayed"} == set(delayed)
    up = {
        s.labels["worker"]: s.value
        for f in parse_text(rendered.text.decode())
        if f.name == "celery_worker_up"
        for s in f.samples
    }
    assert up == {worker.hostname: 1.0}

    result = run_promtool(rendered.text)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert rendered.openmetrics.endswith(b"# EOF\n")


def test_the_exposition_is_the_bytes_prometheus_client_writes(built: Built) -> None:
    """The fast writer took the fast path on a real snapshot and matches the library."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest as library_text
    from prometheus_client.openmetrics.exposition import (
        generate_latest as library_openmetrics,
    )

    from exporter.prometheus.exposition import library_families, takes_fast_path
    from exporter.prometheus.render import _SnapshotCollector

    families = list(_SnapshotCollector(built.snapshot).collect())
    assert takes_fast_path(families)

    class Library:
        def collect(self) -> list[Metric]:
            return library_families(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Library())
    assert built.rendered.text == library_text(registry)
    assert built.rendered.openmetrics == library_openmetrics(registry)  # type: ignore[no-untyped-call]
