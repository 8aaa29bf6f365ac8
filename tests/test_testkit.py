"""The kit of the tests and benchmarks (testkit/).

Its pure parts (the exposition parser, the payload loader, the report and wrk parsers,
/proc readers) are unit tests; its process wrappers get smoke tests against a real
redis-server and a real worker (e2e).
"""

from __future__ import annotations

import ast
import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from testkit import REPO_ROOT
from testkit.celery_worker import CeleryWorker
from testkit.exposition import (
    QUEUE_STATUSES,
    parse_metrics,
    queue_counts,
    sample_key,
    total,
    value,
)
from testkit.net import find_free_port
from testkit.payloads import (
    EVENT_CHANNEL_PREFIX,
    EVENT_TYPES,
    PAYLOADS,
    Payload,
    decode_body,
    events_by_type,
    first_events,
    load_payloads,
)
from testkit.procs import children, cpu_seconds, descendants, memory_mb, pid_alive, rss_kib
from testkit.redis_server import RedisServer
from testkit.report import parse_count, percentile, table
from testkit.republish import Envelope, envelopes, resp_publish
from testkit.wait import wait_until
from testkit.wrk import parse_wrk, wrk_ms

# -- the exposition parser -----------------------------------------------------------------

PAGE = r"""# HELP celery_queue_jobs Jobs per queue and status.
# TYPE celery_queue_jobs gauge
celery_queue_jobs{queue="emails",status="waiting"} 3.0
celery_queue_jobs{queue="emails",status="active"} 1.0
celery_queue_jobs{queue="emails",status="delayed"} 0.0
celery_queue_jobs{queue="emails",status="paused"} 0.0
celery_queue_jobs{queue="emails",status="completed"} 7.0
celery_queue_jobs{queue="emails",status="failed"} 2.0
celery_queue_jobs{queue="reports",status="failed"} 5.0
# HELP celery_tasks_total Tasks finished.
# TYPE celery_tasks_total counter
celery_tasks_total{queue="emails",task="app.send",outcome="succeeded"} 5.0
celery_tasks_total{queue="emails",task="app.send",outcome="failed"} 1.0
celery_tasks_total{queue="reports",task="app.build",outcome="failed"} 2.0
# HELP celery_task_runtime_seconds Runtime.
# TYPE celery_task_runtime_seconds histogram
celery_task_runtime_seconds_bucket{queue="emails",task="app.send",le="0.1"} 1.0
celery_task_runtime_seconds_bucket{queue="emails",task="app.send",le="+Inf"} 2.0
celery_task_runtime_seconds_sum{queue="emails",task="app.send"} 0.35
celery_task_runtime_seconds_count{queue="emails",task="app.send"} 2.0
# HELP celery_exporter_up Whether the last refresh worked.
# TYPE celery_exporter_up gauge
celery_exporter_up 1.0
# HELP odd Escapes in a label value.
# TYPE odd gauge
odd{path="a\"b\\c\nd"} 4.0
"""


def test_parse_metrics_keys_samples_by_name_and_labels() -> None:
    """Every sample line is one entry; counters and histograms keep their sample names."""
    samples = parse_metrics(PAGE)
    assert len(samples) == sum(1 for line in PAGE.splitlines() if not line.startswith("#"))
    assert samples[("celery_exporter_up", frozenset())] == 1.0
    assert samples[sample_key("celery_tasks_total", queue="emails", task="app.send",
                              outcome="failed")] == 1.0
    assert samples[sample_key("celery_task_runtime_seconds_bucket", queue="emails",
                              task="app.send", le="+Inf")] == 2.0
    assert samples[sample_key("celery_task_runtime_seconds_sum", queue="emails",
                              task="app.send")] == 0.35
    assert samples[sample_key("odd", path='a"b\\c\nd')] == 4.0


def test_value_needs_the_exact_labels() -> None:
    """value() finds one sample by all its labels; a missing one is a KeyError naming it."""
    samples = parse_metrics(PAGE)
    assert value(samples, "celery_queue_jobs", queue="emails", status="completed") == 7.0
    assert value(samples, "celery_exporter_up") == 1.0
    with pytest.raises(KeyError, match="celery_queue_jobs"):
        value(samples, "celery_queue_jobs", queue="emails")  # a subset of its labels
    with pytest.raises(KeyError, match="no sample nothing"):
        value(samples, "nothing")


def test_total_sums_the_samples_whose_labels_include_the_given_ones() -> None:
    """total() sums over the labels left out; nothing matching sums to 0."""
    samples = parse_metrics(PAGE)
    assert total(samples, "celery_queue_jobs", status="failed") == 7.0
    assert total(samples, "celery_queue_jobs", queue="emails") == 13.0
    assert total(samples, "celery_tasks_total", outcome="failed") == 3.0
    assert total(samples, "celery_tasks_total") == 8.0
    assert total(samples, "celery_queue_jobs", queue="nowhere") == 0.0
    assert total(samples, "celery_exporter_up") == 1.0


def test_queue_counts_reads_the_six_statuses() -> None:
    """queue_counts() gives every status of a queue; one missing is an error."""
    samples = parse_metrics(PAGE)
    assert queue_counts(samples, "emails") == {
        "waiting": 3, "active": 1, "delayed": 0, "paused": 0, "completed": 7, "failed": 2,
    }
    assert tuple(queue_counts(samples, "emails")) == QUEUE_STATUSES
    with pytest.raises(KeyError):
        queue_counts(samples, "reports")


def test_parse_metrics_rejects_what_is_not_an_exposition() -> None:
    """A malformed page fails loudly instead of being half read."""
    assert parse_metrics("") == {}
    with pytest.raises(ValueError):
        parse_metrics("celery_exporter_up{")
    with pytest.raises(ValueError):
        parse_metrics("celery_exporter_up one\n")


def test_parse_metrics_reads_a_whole_rendered_page() -> None:
    """The exporter's own golden exposition: one sample per sample line."""
    text = (REPO_ROOT / "tests" / "unit" / "data" / "metrics.txt").read_text()
    samples = parse_metrics(text)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(samples) == len(lines) > 0


# -- the payload loader ----------------------------------------------------------------------


def test_load_payloads_reads_every_captured_message() -> None:
    """One Payload per line of the capture, each an event channel and a kombu envelope."""
    payloads = load_payloads()
    lines = [line for line in PAYLOADS.read_text().splitlines() if line.strip()]
    assert len(payloads) == len(lines) > 0
    for payload, line in zip(payloads, lines, strict=True):
        record = json.loads(line)
        assert (payload.channel, payload.data) == (record["channel"], record["data"])
        assert payload.channel.startswith(EVENT_CHANNEL_PREFIX)
        assert payload.routing_key == payload.channel.removeprefix(EVENT_CHANNEL_PREFIX)
        assert payload.raw == record["data"].encode()
        assert {"body", "headers", "properties"} <= payload.envelope().keys()
    assert load_payloads() is payloads  # read once


def test_captured_payloads_hold_every_event_type() -> None:
    """The capture has each type the tests and benchmarks build on, lists on task.multi."""
    by_type = events_by_type()
    assert set(EVENT_TYPES) <= by_type.keys()
    for kind, events in by_type.items():
        assert all(event["type"] == kind for event in events)
    multi = [p for p in load_payloads() if p.routing_key == "task.multi"]
    assert multi and any(len(p.events()) > 1 for p in multi)
    assert first_events()["task-sent"] == by_type["task-sent"][0]
    sent = by_type["task-sent"][0]
    assert {"uuid", "name", "queue", "hostname", "timestamp", "clock"} <= sent.keys()


def test_payload_events_are_fresh_copies() -> None:
    """Changing a decoded event changes neither the capture nor the next decoding."""
    payload = load_payloads()[0]
    events = payload.events()
    events[0]["type"] = "changed"
    assert payload.events()[0]["type"] != "changed"


def test_decode_body_reads_dict_and_list_bodies() -> None:
    """A body is one event or a list of them, base64-encoded or not."""
    one = {"type": "task-sent", "uuid": "u-1"}
    two = [{"type": "task-received"}, {"type": "task-started"}]
    encoded = {"body": base64.b64encode(json.dumps(one).encode()).decode(),
               "properties": {"body_encoding": "base64"}}
    plain = {"body": json.dumps(two), "properties": {}}
    assert decode_body(json.dumps(encoded)) == [one]
    assert decode_body(json.dumps(plain)) == two


def test_load_payloads_skips_blank_lines_and_names_a_bad_one(tmp_path: Path) -> None:
    """Blank lines are skipped; a line that is not a captured message names its number."""
    good = json.dumps({"channel": "/0.celeryev/task.sent", "data": "{}"})
    path = tmp_path / "payloads.jsonl"
    path.write_text(f"{good}\n\n{good}\n")
    assert load_payloads(path) == (Payload("/0.celeryev/task.sent", "{}"),) * 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{good}\n{json.dumps({'channel': 'x'})}\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a captured payload"):
        load_payloads(bad)


def test_envelope_renders_the_captured_envelope_with_new_values() -> None:
    """A rendered envelope is the captured one with body, hostname and tag replaced."""
    payload = next(p for p in load_payloads() if p.routing_key == "task.sent")
    rendered = json.loads(Envelope(payload.data).render("Ym9keQ==", "gen9@web-9", "tag-9"))
    captured = payload.envelope()
    assert rendered["body"] == "Ym9keQ=="
    assert rendered["headers"]["hostname"] == "gen9@web-9"
    assert rendered["properties"]["delivery_tag"] == "tag-9"
    for envelope in (rendered, captured):
        del envelope["body"], envelope["headers"]["hostname"]
        del envelope["properties"]["delivery_tag"]
    assert rendered == captured
    assert {"task.sent", "task.multi", "worker.heartbeat"} <= envelopes().keys()


def test_resp_publish_is_one_redis_command() -> None:
    """PUBLISH in RESP: an array of three bulk strings."""
    assert resp_publish(b"/0.celeryev/task.sent", b"{}") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$21\r\n/0.celeryev/task.sent\r\n$2\r\n{}\r\n"
    )


# -- report and wrk parsing -------------------------------------------------------------------

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:9808/metrics
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.43ms    1.20ms  25.21ms   84.59%
    Req/Sec     1.82k   150.23     2.10k    71.00%
  Latency Distribution
     50%  812.00us
     75%    4.89ms
     90%    5.80ms
     99%    1.02s
  36251 requests in 10.01s, 27.10GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   3621.58
Transfer/sec:      2.71GB
"""


def test_parse_wrk_reads_rate_latencies_and_errors() -> None:
    """The figures of a `wrk --latency` report, durations in milliseconds."""
    report = parse_wrk(WRK_OUTPUT)
    assert report.requests_per_second == 3621.58
    assert report.p50_ms == pytest.approx(0.812)
    assert (report.p90_ms, report.p99_ms, report.max_ms) == (
        5.80, 1020.0, 25.21,
    )
    assert report.requests == 36251
    assert report.transfer == "2.71GB/s"
    assert report.failed == 6
    assert "Non-2xx or 3xx responses: 3" in report.errors
    assert wrk_ms("1.50m") == 90_000.0
    with pytest.raises(ValueError):
        parse_wrk("wrk: connection refused")


def test_report_helpers() -> None:
    """Counts with suffixes, nearest-rank percentiles, right-aligned tables."""
    assert [parse_count(t) for t in ("200k", "1.5M", "1_000", "42")] == [
        200_000, 1_500_000, 1000, 42,
    ]
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 0.5) == 3.0
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 0.99) == 5.0
    assert table(("a", "bb"), [(1, 22), (333, 4)]) == "  a  bb\n---  --\n  1  22\n333   4"


# -- /proc ------------------------------------------------------------------------------------


def test_proc_readers_see_a_child_process() -> None:
    """children, descendants, liveness, CPU and memory of real processes."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in children(os.getpid())
        assert child.pid in descendants(os.getpid())
        assert pid_alive(child.pid)
        rss, peak = memory_mb(os.getpid())
        assert 0 < rss <= peak
        assert rss_kib(os.getpid()) > rss * 1024
        assert cpu_seconds(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)


# -- who imports whom ---------------------------------------------------------------------------


def imported_packages(folder: Path) -> set[str]:
    """The top-level packages the modules under `folder` import."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_the_kit_and_the_benchmarks_never_import_the_tests() -> None:
    """bench/ and testkit/ stand without tests/; testkit/ also without bench/."""
    assert "tests" not in imported_packages(REPO_ROOT / "bench")
    assert not {"tests", "bench"} & imported_packages(REPO_ROOT / "testkit")


# -- the process wrappers (real services) ---------------------------------------------------------


def test_find_free_port_is_bindable() -> None:
    """find_free_port returns a usable non-privileged port."""
    port = find_free_port()
    assert 1024 < port < 65536


def test_redis_server_basics(redis_server: RedisServer) -> None:
    """The server answers on its own port, never the shared 6379."""
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.url_for_db(3).endswith(f":{redis_server.port}/3")
    client = redis_server.client()
    try:
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
    finally:
        client.close()


def test_redis_server_kill_and_restart_same_port(redis_server: RedisServer) -> None:
    """kill() drops the server; start() brings it back on the same port, empty."""
    port = redis_server.port
    client = redis_server.client()
    try:
        client.set("before", "1")
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(Exception):  # noqa: B017 - any connection error
            client.ping()
        redis_server.start()
        assert redis_server.running
        assert redis_server.port == port
        assert client.ping()  # redis-py reconnects transparently
        assert client.get("before") is None  # no persistence
    finally:
        client.close()


@pytest.mark.e2e
def test_redis_server_context_manager() -> None:
    """The context manager starts and stops the process."""
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None
        assert server.client().ping()
    assert not server.running


@pytest.mark.timeout(120)
def test_worker_consumes_add_task(
    redis_server: RedisServer,
    celery_app: Celery,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    """A real worker answers ping and drains the ``celery`` list."""
    worker = celery_worker_factory(redis_server.url, queues=["celery"], concurrency=1)
    replies = celery_app.control.ping(destination=[worker.hostname], timeout=2.0)
    assert any(worker.hostname in reply for reply in replies)

    client = redis_server.client()
    try:
        for i in range(5):
            celery_app.send_task("tests.add", args=(2, i), queue="celery")
        assert wait_until(lambda: client.llen("celery") == 0, timeout=30)
        assert wait_until(lambda: worker.log().count("succeeded in") == 5, timeout=30)
    finally:
        client.close()

    assert "tests.add[" in worker.log()
    worker.stop()
    assert not worker.running
