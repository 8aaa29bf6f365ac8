"""Faults: the broker dies and comes back, garbage in the broker, scrapes never reach Redis."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import queue_counts, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5")


def test_sidecar_starts_while_redis_is_down_and_recovers(redis_server: RedisServer) -> None:
    """No broker at start: it serves (503 until a snapshot, then stale), then recovers."""
    redis_server.stop()
    with Sidecar(redis_server.url, *FAST, "--queue", "jobs") as sidecar:
        def alive() -> bool:
            try:
                return sidecar.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(alive, timeout=20, interval=0.1), sidecar.log()[-3000:]
        assert sidecar.get("/healthz").status_code == 200
        samples = sidecar.wait_for(lambda s: value(s, "celery_exporter_up") == 0)
        assert value(samples, "celery_exporter_source_up", source="broker") == 0
        assert value(samples, "celery_exporter_last_successful_refresh_timestamp_seconds") == 0
        ready = sidecar.get("/readyz")
        assert ready.status_code == 503
        assert "stale" in ready.json()["message"]

        redis_server.start()
        redis_server.client().lpush("jobs", b"{}")
        samples = sidecar.wait_for(lambda s: value(s, "celery_exporter_up") == 1, timeout=30)
        sidecar.wait_ready(timeout=10)
        assert queue_counts(samples, "jobs")["paused"] == 1
        assert sidecar.process.poll() is None


def test_redis_killed_and_restarted_while_serving(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """Killed broker: the last snapshot is served marked stale; then it recovers by itself."""
    worker = celery_worker_factory(redis_server.url, queues=("celery",), concurrency=1)
    app = load_app(redis_server.url)
    with Sidecar(redis_server.url, *FAST, "--queue", "orphans") as sidecar:
        sidecar.wait_ready()
        for _ in range(4):
            app.send_task("tests.add", args=(1, 1), queue="orphans")
        app.send_task("tests.add", args=(2, 2), queue="celery")
        before = sidecar.wait_for(
            lambda s: queue_counts(s, "orphans")["paused"] == 4
            and queue_counts(s, "celery")["completed"] == 1
        )
        last_success = value(before, "celery_exporter_last_successful_refresh_timestamp_seconds")
        assert last_success > 0

        redis_server.kill()
        stale = sidecar.wait_for(lambda s: value(s, "celery_exporter_up") == 0, timeout=30)
        assert queue_counts(stale, "orphans")["paused"] == 4, "last good counts are kept"
        assert value(stale, "celery_exporter_source_up", source="broker") == 0
        assert value(stale, "celery_exporter_source_up", source="events") == 0
        frozen = value(stale, "celery_exporter_last_successful_refresh_timestamp_seconds")
        assert frozen >= last_success
        stale_built = value(stale, "celery_exporter_last_refresh_timestamp_seconds")
        # Stay down until the sidecar itself has counted 1.5 s without a subscription, and
        # has refreshed (failing) again since `stale`.
        later = sidecar.wait_for(
            lambda s: value(s, "celery_exporter_last_refresh_timestamp_seconds") > stale_built
            and value(s, "celery_exporter_event_stream_disconnected_seconds_total") >= 1.5,
            timeout=30,
        )
        assert value(later, "celery_exporter_last_successful_refresh_timestamp_seconds") == frozen
        assert value(later, "celery_exporter_last_refresh_timestamp_seconds") > frozen

        redis_server.start()  # empty: the broker lost its data
        worker.stop()
        worker.start()
        worker.wait_ready(60)
        sidecar.wait_for(
            lambda s: value(s, "celery_exporter_source_up", source="events") == 1, timeout=30
        )
        app.send_task("tests.add", args=(3, 3), queue="celery")
        app.send_task("tests.add", args=(4, 4), queue="orphans")
        recovered = sidecar.wait_for(
            lambda s: value(s, "celery_exporter_up") == 1
            and queue_counts(s, "orphans")["paused"] == 1
            and queue_counts(s, "celery")["completed"] == 2,
            timeout=60,
        )
        assert value(recovered, "celery_exporter_source_up", source="events") == 1
        assert value(recovered, "celery_exporter_event_stream_reconnects_total") >= 1
        # Down for at least the 1.5 s waited for above: the time without a subscription shows.
        assert value(recovered, "celery_exporter_event_stream_disconnected_seconds_total") >= 1.5
        assert sidecar.get("/readyz").status_code == 200
        assert "Traceback" not in sidecar.log()


def test_garbage_in_lists_unacked_and_events_is_counted_and_skipped(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """Malformed broker entries and events are counted, skipped and never fatal."""
    celery_worker_factory(redis_server.url, queues=("celery",), concurrency=1)
    app = load_app(redis_server.url)
    client = redis_server.client()
    with Sidecar(redis_server.url, *FAST, "--queue", "junk") as sidecar:
        sidecar.wait_ready()
        client.lpush("junk", b"\x00not json", b"[1,2", b'{"body": 3}')
        client.hset("unacked", "tag-1", b"not json at all")
        client.hset("unacked", "tag-2", orjson.dumps([{"headers": "x"}, "", "celery"]))
        client.hset("unacked", "tag-3", orjson.dumps({"a": 1}))
        client.publish("/0.celeryev/task.multi", b"garbage")
        client.publish("/0.celeryev/task.multi", orjson.dumps({"body": "!!!", "properties": {}}))
        app.send_task("tests.add", args=(1, 2), queue="celery", countdown=600)
        app.send_task("tests.add", args=(1, 2), queue="celery")
        samples = sidecar.wait_for(
            lambda s: queue_counts(s, "celery")["completed"] == 1
            and queue_counts(s, "celery")["delayed"] == 1
            and value(s, "celery_exporter_malformed_messages_total", source="unacked") == 3
        )
        assert queue_counts(samples, "junk")["paused"] == 3, "garbage still sits in the list"
        assert value(samples, "celery_exporter_events_undecodable_total") == 2
        assert value(samples, "celery_exporter_up") == 1
        again = sidecar.wait_refreshes(3)  # each one reads the unacked hash again
        assert value(again, "celery_exporter_malformed_messages_total", source="unacked") == 3, (
            "a malformed entry is counted once, not once per refresh"
        )


def test_scrapes_never_call_redis(redis_server: RedisServer) -> None:
    """Scrapes serve the bytes rendered by the last refresh: no Redis command per scrape."""
    with Sidecar(redis_server.url, "--refresh-interval", "30", "--no-events") as sidecar:
        sidecar.wait_ready()  # the first refresh is over; the next one is 30 s away
        client = redis_server.client()
        seen = [-1]

        def idle() -> bool:
            """No command since the last look but that INFO, and none blocked (a BRPOP)."""
            info = client.info()
            now = int(info["total_commands_processed"])
            quiet = now - seen[0] <= 1 and int(info["blocked_clients"]) == 0
            seen[0] = now
            return quiet

        assert wait_until(idle, timeout=10, interval=0.2), "Redis never went idle"
        before = int(client.info("stats")["total_commands_processed"])
        bodies = {sidecar.get("/metrics").content for _ in range(50)}
        after = int(client.info("stats")["total_commands_processed"])
        # Only the two INFO calls of this test itself.
        assert after - before <= 2, f"{after - before} commands during 50 scrapes"
        assert len(bodies) == 1


def test_openmetrics_and_gzip_variants(redis_server: RedisServer) -> None:
    """The Accept and Accept-Encoding headers pick the pre-rendered variant."""
    with Sidecar(redis_server.url, *FAST, "--queue", "q1") as sidecar:
        sidecar.wait_ready()
        plain = sidecar.get("/metrics")
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        om = sidecar.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        zipped = sidecar.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert 'celery_queue_jobs{queue="q1",status="paused"}' in zipped.text


def test_several_web_workers_share_one_refresher(redis_server: RedisServer) -> None:
    """With --web-workers 3 there is one event subscription and scrapes agree."""
    with Sidecar(redis_server.url, *FAST, "--web-workers", "3", "--queue", "shared") as sidecar:
        sidecar.wait_ready()
        client = redis_server.client()
        client.lpush("shared", b"{}", b"{}")
        sidecar.wait_for(lambda s: queue_counts(s, "shared")["paused"] == 2)
        subscribers = [c for c in client.client_list() if int(c.get("psub", 0)) > 0]
        assert len(subscribers) == 1, subscribers
        generations = set()
        for _ in range(30):
            body = sidecar.get("/metrics").text
            assert 'celery_queue_jobs{queue="shared",status="paused"} 2.0' in body
            generations.add(sidecar.get("/readyz").json()["generation"])
        assert len(generations) >= 1


def test_jobs_pages_stuck_on_the_broker_do_not_hold_up_metrics(
    redis_server: RedisServer,
) -> None:
    """Pages wait for a frozen broker on their own threads; /metrics answers meanwhile."""
    assert redis_server.pid is not None
    redis_server.client().lpush("stuck", *[b'{"not": "a task message"}'] * 3)
    with Sidecar(
        redis_server.url, *FAST, "--no-auth", "--queue", "stuck", "--web-threads", "1"
    ) as sidecar:
        sidecar.wait_ready()
        sidecar.wait_for(lambda s: queue_counts(s, "stuck")["paused"] == 3)
        page_url = sidecar.base_url + "/v1/jobs/queues/stuck"
        with ThreadPoolExecutor(3) as pool:
            os.kill(redis_server.pid, signal.SIGSTOP)  # replies stop; connections stay open
            try:
                pages = [
                    pool.submit(httpx.get, page_url, params={"status": "paused"}, timeout=30)
                    for _ in range(3)
                ]
                # The scenario itself, not a wait: Redis stays frozen with the pages asked
                # for, and they must still be pending after it. Nothing can complete them
                # meanwhile, so a slow machine cannot make this fail.
                time.sleep(0.5)
                assert not any(page.done() for page in pages), "pages did not wait for Redis"
                slowest = 0.0
                for _ in range(20):
                    started = time.monotonic()
                    assert sidecar.get("/metrics").status_code == 200
                    assert sidecar.get("/healthz").status_code == 200
                    slowest = max(slowest, time.monotonic() - started)
                assert slowest < 0.5, f"/metrics + /healthz took {slowest:.3f}s"
                assert not any(page.done() for page in pages)
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)
            answers = [page.result() for page in pages]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert all(len(a.json()["jobs"]) == 3 for a in answers)
