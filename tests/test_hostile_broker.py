"""A broker written by an attacker: one bad item costs only itself, never the refresh.

Each test puts what a user with write access to Redis could put there (events of the
wrong types, YAML and compression bombs, poisoned history, invented queue names) into
a real redis-server read by the real sidecar process, then checks that the refresh
goes on, the item is counted, and memory and response sizes stay bounded.
"""

from __future__ import annotations

import base64
import bz2
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from testkit.exposition import parse_metrics, queue_counts, value
from testkit.procs import rss_kib
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3", "--no-auth")
EVENT_CHANNEL = "/0.celeryev/task.hostile"
SEP = "\x06\x16"


def generation(sidecar: Sidecar) -> int:
    """The snapshot generation /readyz reports (0 while not ready)."""
    response = sidecar.get("/readyz")
    return int(response.json().get("generation", 0)) if response.status_code == 200 else 0


def assert_refreshing(sidecar: Sidecar, steps: int = 3) -> None:
    """The refresh goes on: /readyz answers 200 and the generation moves `steps` times."""
    start = generation(sidecar)
    assert wait_until(lambda: generation(sidecar) >= start + steps, timeout=15), (
        f"the refresh stopped at generation {generation(sidecar)}:\n{sidecar.log()[-3000:]}"
    )


def promtool_check(text: str) -> None:
    """`promtool check metrics` accepts the exposition."""
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]


def envelope(body: bytes, content_type: str = "application/json") -> bytes:
    """A kombu envelope carrying `body` base64-encoded, as Celery publishes events."""
    return json.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {},
        "properties": {"body_encoding": "base64", "delivery_info": {"exchange": "celeryev"}},
    }).encode()


def task_message(task_id: str, body: bytes, content_type: str, **headers: Any) -> bytes:
    """A protocol-2 task message as kombu keeps it in a Redis list."""
    return json.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary" if headers.get("compression") else "utf-8",
        "content-type": content_type,
        "headers": {"lang": "py", "task": "tests.add", "id": task_id, "retries": 0, **headers},
        "properties": {
            "body_encoding": "base64", "priority": 0, "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": "hostile"},
        },
    }).encode()


#: Seven levels of nine aliases each: 9**7 (4.8 million) strings once expanded.
ALIAS_BOMB = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""
#: The same bomb as a task body: `[args, kwargs, embed]` whose args are the levels.
ALIAS_BOMB_BODY = b"- [" + b", ".join(
    line.split(b": ", 1)[1] for line in ALIAS_BOMB.splitlines()
) + b"]\n- {}\n- {}\n"


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def test_events_of_the_wrong_types_are_counted_and_the_refresh_goes_on(
    redis_server: RedisServer, broker: redis.Redis
) -> None:
    """The events that once stopped every refresh are each counted; nothing else changes."""
    with Sidecar(redis_server.url, *FAST) as sidecar:
        sidecar.wait_ready()
        # A task-started whose hostname is a list (an unhashable key once).
        broker.publish(EVENT_CHANNEL, json.dumps({"body": {
            "type": "task-started", "uuid": "e1", "hostname": ["x"], "timestamp": 1}}))
        # A task-received whose name is a list, with an unacked entry for the same id.
        broker.publish(EVENT_CHANNEL, json.dumps({"body": {
            "type": "task-received", "uuid": "e2", "name": ["x"], "timestamp": 1}}))
        broker.hset("unacked", "tag-e2", json.dumps(
            [json.loads(task_message("e2", b"[[1], {}, {}]", "application/json")), "", "beta"]))
        # A YAML event naming a queue with a lone surrogate (not valid Unicode).
        broker.publish(EVENT_CHANNEL, envelope(
            b'type: task-sent\nuuid: y1\ntimestamp: 1.0\nname: tests.add\nqueue: "evil\\ud800q"\n',
            "application/x-yaml",
        ))
        samples = sidecar.wait_for(
            lambda s: value(s, "celery_exporter_events_undecodable_total") >= 2
            and ("celery_queue_jobs", frozenset({("queue", "evil\ufffdq"), ("status", "failed")}))
            in s
        )
        assert value(samples, "celery_exporter_events_received_total") >= 1
        assert_refreshing(sidecar)
        assert queue_counts(sidecar.metrics(), "beta")["waiting"] == 1  # the unacked one
        listed = sidecar.get("/v1/jobs/queues")
        assert listed.status_code == 200, listed.text
        assert "evil\ufffdq" in {q["name"] for q in listed.json()["queues"]}
        page = sidecar.get("/v1/jobs/queues/evil\ufffdq", params={"status": "failed"})
        assert page.status_code == 200, page.text
        promtool_check(sidecar.get("/metrics").text)
        assert "Traceback" not in sidecar.log(), sidecar.log()[-3000:]


def test_a_yaml_alias_bomb_event_is_refused_without_growing_memory(
    redis_server: RedisServer, broker: redis.Redis
) -> None:
    """A 500-byte alias bomb that expands to millions of nodes is refused at once."""
    with Sidecar(redis_server.url, *FAST) as sidecar:
        sidecar.wait_ready()
        before = rss_kib(sidecar.process.pid)
        bomb = b"type: task-sent\nuuid: bomb\ntimestamp: 1.0\nargs: !!str x\n" + ALIAS_BOMB
        for _ in range(5):
            broker.publish(EVENT_CHANNEL, envelope(bomb, "application/x-yaml"))
        sidecar.wait_for(lambda s: value(s, "celery_exporter_events_undecodable_total") >= 5)
        grown = rss_kib(sidecar.process.pid) - before
        print(f"RSS before {before} KiB, after five alias bombs +{grown} KiB")
        assert grown < 20_000, f"RSS grew by {grown} KiB"
        assert_refreshing(sidecar)


def test_bombs_in_a_waiting_list_cost_only_their_own_entry(
    redis_server: RedisServer, broker: redis.Redis
) -> None:
    """Alias, inflating and wide bodies: each page stays small and fast, memory flat."""
    bz2_bomb = bz2.compress(b"\0" * (256 << 20), 9)
    wide = json.dumps([[[["x" * 90] * 50] * 50] * 4, {}, {}]).encode()  # under 1 MiB
    huge = json.dumps([[["x" * 1000] * 50] * 400, {}, {}]).encode()  # 20 MB
    entries = {
        "alias": task_message("alias", ALIAS_BOMB_BODY, "application/x-yaml"),
        "bz2": task_message("bz2", bz2_bomb, "application/json",
                            compression="application/x-bz2"),
        "wide": task_message("wide", wide, "application/json"),
        "fine": task_message("fine", b"[[1, 2], {}, {}]", "application/json"),
    }
    print(f"bz2 bomb: {len(bz2_bomb)} bytes; wide body: {len(wide)} bytes")
    for raw in entries.values():
        broker.lpush("hostile", raw)
    broker.lpush("oversized", task_message("huge", huge, "application/json"))
    with Sidecar(redis_server.url, *FAST, "--queue", "hostile", "--queue", "oversized") as sidecar:
        sidecar.wait_ready()
        before = rss_kib(sidecar.process.pid)
        started = time.monotonic()
        page = sidecar.get("/v1/jobs/queues/hostile", params={"status": "paused", "limit": 10})
        took = time.monotonic() - started
        grown = rss_kib(sidecar.process.pid) - before
        print(f"page: {len(page.content)} bytes in {took * 1000:.0f} ms; RSS +{grown} KiB "
              f"(before {before} KiB)")
        assert page.status_code == 200, page.text
        jobs = {job["id"]: job for job in page.json()["jobs"]}
        assert "alias" in jobs["alias"]["data"]["undecodable"]
        assert "inflates past" in jobs["bz2"]["data"]["undecodable"]
        assert jobs["fine"]["data"] == {"args": [1, 2], "kwargs": {}}
        assert len(json.dumps(jobs["wide"]["data"])) < 40_000
        assert len(page.content) < 200_000
        assert took < 5
        assert grown < 30_000, f"RSS grew by {grown} KiB"
        # A message larger than --max-message-bytes allows is not decoded at all.
        page = sidecar.get("/v1/jobs/queues/oversized", params={"status": "paused"})
        assert page.status_code == 200, page.text
        [refused] = page.json()["jobs"]
        assert refused["id"] is None
        assert "over the limit" in refused["data"]["undecodable"]
        assert len(page.content) < 5_000
        assert_refreshing(sidecar)


def send_events(
    app: Celery, events: list[tuple[str, dict[str, Any]]], *, batched: bool = False
) -> None:
    """Publish events with Celery's own dispatcher (its real format).

    `batched` buffers task events into `task.multi` lists of 24, as a worker's
    dispatcher does: the same events in far fewer messages.
    """
    buffering: dict[str, Any] = {"buffer_group": ["task"]} if batched else {}
    with app.connection_for_write() as connection, app.events.Dispatcher(
        connection, hostname="hostile@test", enabled=True, **buffering
    ) as dispatcher:
        for kind, fields in events:
            dispatcher.send(kind, **fields)
        dispatcher.flush()


def finished_task(
    task_id: str, queue: str, name: str = "tests.add"
) -> list[tuple[str, dict[str, Any]]]:
    """task-sent, -started and -succeeded events of one task."""
    now = time.time()
    return [
        ("task-sent", {"uuid": task_id, "name": name, "queue": queue, "args": "(1, 2)",
                       "kwargs": "{}", "timestamp": now}),
        ("task-started", {"uuid": task_id, "timestamp": now + 0.01}),
        ("task-succeeded", {"uuid": task_id, "result": "3", "runtime": 0.01,
                            "timestamp": now + 0.02}),
    ]


def test_poisoned_history_entries_are_skipped_one_by_one(
    redis_server: RedisServer, broker: redis.Redis
) -> None:
    """Bad saved jobs are counted and skipped; good ones load once; new jobs are saved."""
    key = "celery-jobs-exporter:jobs:completed:saved"
    good = {"id": "good-1", "name": "tests.add", "queue": "saved", "state": "succeeded",
            "finished_at": 1_700_000_000.0, "attempts": 1, "result": "3"}
    poison = [
        b"not json",
        json.dumps([1, 2]).encode(),
        json.dumps({**good, "id": ["list"]}).encode(),
        json.dumps({**good, "id": "p1", "attempts": "many"}).encode(),
        json.dumps({**good, "id": "p2", "finished_at": "yesterday"}).encode(),
        json.dumps({**good, "id": "p3", "failures": [[1, 2, 3]]}).encode(),
        json.dumps({**good, "id": "p4", "state": "failed"}).encode(),  # in the wrong list
    ]
    broker.rpush(key, json.dumps(good).encode(), *poison, json.dumps(good).encode())
    broker.sadd("celery-jobs-exporter:queues", "saved")
    app = Celery("hostile", broker=redis_server.url, set_as_current=False)
    with Sidecar(redis_server.url, *FAST) as sidecar:
        sidecar.wait_ready()
        samples = sidecar.wait_for(
            lambda s: value(s, "celery_exporter_malformed_messages_total", source="history")
            == len(poison)
        )
        assert queue_counts(samples, "saved")["completed"] == 1  # the duplicate once
        page = sidecar.get("/v1/jobs/queues/saved", params={"status": "completed"})
        assert page.status_code == 200, page.text
        assert [job["id"] for job in page.json()["jobs"]] == ["good-1"]
        send_events(app, finished_task("new-1", "saved"))
        sidecar.wait_for(lambda s: queue_counts(s, "saved")["completed"] == 2)
        assert wait_until(lambda: broker.llen(key) == len(poison) + 3)
        assert_refreshing(sidecar)
    with Sidecar(redis_server.url, *FAST) as again:
        again.wait_ready()
        samples = again.wait_for(
            lambda s: value(s, "celery_exporter_malformed_messages_total", source="history")
            == len(poison)
        )
        assert_refreshing(again)
        assert queue_counts(again.metrics(), "saved")["completed"] == 2  # none restored twice
    app.close()


def test_invented_queue_names_are_bounded(redis_server: RedisServer, broker: redis.Redis) -> None:
    """20,000 bindings and 20,000 unacked routing keys: at most --max-queues are reported."""
    pipe = broker.pipeline(transaction=False)
    for index in range(20_000):
        pipe.sadd("_kombu.binding.celery", f"rk{index}{SEP}{SEP}bound-{index}")
        pipe.hset("unacked", f"tag-{index}", json.dumps([
            json.loads(task_message(f"u{index}", b"[[], {}, {}]", "application/json")),
            "", f"routed-{index}",
        ]))
    long_name = "q" * 10_000
    pipe.sadd("_kombu.binding.celery", f"long{SEP}{SEP}{long_name}")
    pipe.execute()
    with Sidecar(redis_server.url, *FAST, "--queue", "kept", "--max-queues", "300") as sidecar:
        sidecar.wait_ready(timeout=60)
        response = sidecar.get("/metrics")
        samples = parse_metrics(response.text)
        queues = {dict(labels)["queue"] for name, labels in samples if name == "celery_queue_jobs"}
        print(f"/metrics: {len(response.content)} bytes for {len(queues)} queues; "
              f"RSS {rss_kib(sidecar.process.pid)} KiB")
        assert len(queues) == 300
        assert "kept" in queues  # configured queues are always reported
        assert value(samples, "celery_exporter_dropped_queue_names") >= 40_001 - 300
        assert all(len(name) <= 100 for name in queues)
        assert len(response.content) < 2_000_000
        promtool_check(response.text)
        assert_refreshing(sidecar)


def test_every_task_on_every_queue_stays_within_the_series_budget(
    redis_server: RedisServer, broker: redis.Redis
) -> None:
    """200 queues x 200 task names: folded into `other` past --max-task-series."""
    app = Celery("hostile", broker=redis_server.url, set_as_current=False)
    with Sidecar(redis_server.url, *FAST, "--max-task-series", "1000") as sidecar:
        sidecar.wait_ready()
        events: list[tuple[str, dict[str, Any]]] = []
        for queue in range(200):
            for task in range(200):
                events += finished_task(f"{queue}-{task}", f"queue-{queue}", f"tasks.t{task}")
        send_events(app, events, batched=True)
        samples = sidecar.wait_for(
            lambda s: sum(v for (n, _), v in s.items()
                          if n == "celery_tasks_total") >= 40_000,
            timeout=120,
        )
        response = sidecar.get("/metrics")
        pairs = {(dict(labels)["queue"], dict(labels)["task"])
                 for name, labels in samples if name == "celery_tasks_total"}
        print(f"/metrics: {len(response.content)} bytes, {len(pairs)} (queue, task) pairs")
        assert len(pairs) <= 1000 + 200
        assert value(samples, "celery_exporter_folded_task_series") == 40_000 - 1000
        assert len(response.content) < 10_000_000
        promtool_check(response.text)
        assert_refreshing(sidecar)
    app.close()


def test_a_killed_broker_shows_within_two_refresh_intervals(
    redis_server: RedisServer, celery_worker_factory: Any
) -> None:
    """SIGKILL of redis-server: exporter_up 0 and every source down within two intervals."""
    celery_worker_factory(redis_server.url, queues=("celery",), concurrency=1)
    with Sidecar(redis_server.url, "--refresh-interval", "1", "--inspect-timeout", "0.5",
                 "--no-auth") as sidecar:
        sidecar.wait_ready()
        sidecar.wait_for(lambda s: value(s, "celery_exporter_source_up", source="workers") == 1)
        killed_at = time.monotonic()
        os.kill(redis_server.pid or 0, 9)

        def down(samples: dict[Any, float]) -> bool:
            return value(samples, "celery_exporter_up") == 0 and all(
                value(samples, "celery_exporter_source_up", source=s) == 0
                for s in ("broker", "workers")
            )

        assert wait_until(lambda: down(sidecar.metrics()), timeout=10, interval=0.05)
        took = time.monotonic() - killed_at
        print(f"down after {took:.2f}s with --refresh-interval 1")
        assert took <= 2.5, f"still up {took:.1f}s after the broker died:\n{sidecar.log()[-2000:]}"
        durations: dict[float, float] = {}

        def three_refreshes() -> bool:
            samples = sidecar.metrics()
            built_at = value(samples, "celery_exporter_last_refresh_timestamp_seconds")
            durations[built_at] = value(samples, "celery_exporter_refresh_duration_seconds")
            return len(durations) >= 3

        assert wait_until(three_refreshes, timeout=15)
        assert max(durations.values()) <= 1 + 0.5, durations  # interval + inspect timeout
