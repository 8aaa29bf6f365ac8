"""Capture raw Celery event pub/sub messages from a real worker into JSONL.

Starts a private redis-server and a real worker (testkit), PSUBSCRIBEs to the
Celery event channel pattern, runs a mix of tasks, stops the worker (to get
``worker-offline``) and writes each message as ``{"channel": ..., "data": ...}``
where ``data`` is the raw pub/sub payload string exactly as received: by default
to testkit/data/payloads.jsonl, the payloads the tests and benchmarks load.

Usage: .venv/bin/python bench/events/capture.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from testkit.celery_worker import CeleryWorker, load_app  # noqa: E402
from testkit.payloads import EVENT_TYPES, PAYLOADS, decode_body  # noqa: E402
from testkit.redis_server import RedisServer  # noqa: E402

if TYPE_CHECKING:
    from celery import Celery


def event_channel_pattern(db: int = 0, global_keyprefix: str = "") -> str:
    """Pattern matching kombu's fanout topic for exchange ``celeryev``.

    kombu ``Channel._get_publish_topic``: ``keyprefix_fanout + exchange + '/' +
    routing_key`` with ``keyprefix_fanout = '/{db}.'``; the PUBLISH channel
    additionally carries ``global_keyprefix`` in front when one is set.
    """
    return f"{global_keyprefix}/{db}.celeryev/*"


class Collector(threading.Thread):
    """Background PSUBSCRIBE reader storing (channel, raw data) tuples."""

    def __init__(self, server: RedisServer, pattern: str) -> None:
        """Subscribe immediately so nothing published afterwards is missed."""
        super().__init__(daemon=True)
        self.client = server.client()
        self.pubsub = self.client.pubsub(  # type: ignore[no-untyped-call]
            ignore_subscribe_messages=True
        )
        self.pubsub.psubscribe(pattern)
        # Wait for the psubscribe confirmation before returning.
        while self.pubsub.get_message(timeout=1.0) is None and not self.pubsub.subscribed:
            pass
        self.messages: list[tuple[str, str]] = []
        self._stop_flag = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        """Read messages until stopped."""
        while not self._stop_flag.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg is None or msg["type"] != "pmessage":
                continue
            channel = msg["channel"].decode()
            data = msg["data"].decode()
            with self._lock:
                self.messages.append((channel, data))

    def types(self) -> Counter[str]:
        """Count event types seen so far."""
        with self._lock:
            snapshot = list(self.messages)
        counts: Counter[str] = Counter()
        for _channel, data in snapshot:
            for event in decode_body(data):
                counts[event.get("type", "?")] += 1
        return counts

    def close(self) -> None:
        """Stop the reader thread and close the connection."""
        self._stop_flag.set()
        self.join(timeout=5)
        self.pubsub.close()
        self.client.close()


def wait_for(collector: Collector, predicate: str, count: int, timeout: float) -> None:
    """Wait until at least ``count`` events of type ``predicate`` were seen."""
    deadline = time.monotonic() + timeout
    while collector.types()[predicate] < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {collector.types()[predicate]} {predicate} events")
        time.sleep(0.05)


def run_task_mix(app: Celery) -> None:
    """Publish the task mix: add x2, fail, flaky_fail, ingest, sleep(0.1)."""
    app.send_task("tests.add", args=(2, 3), queue="celery")
    app.send_task("tests.add", args=(40, 2), queue="bench")
    app.send_task("tests.fail", args=("boom",), queue="celery")
    app.send_task("tests.flaky_fail", args=("flaky boom",), queue="celery")
    app.send_task(
        "tests.ingest",
        kwargs={"ingestionSourceId": "src-42", "payload": {"rows": [1, 2, 3]}},
        queue="bench",
    )
    app.send_task("tests.sleep", args=(0.1,), queue="celery")


def main() -> int:
    """Run the capture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PAYLOADS)
    parser.add_argument("--db", type=int, default=0, help="Redis database number")
    parser.add_argument(
        "--transport-options",
        type=json.loads,
        default={},
        help="JSON object of kombu transport options",
    )
    parser.add_argument(
        "--heartbeats", type=int, default=2, help="worker-heartbeat events to wait for (2s apart)"
    )
    args = parser.parse_args()

    with RedisServer() as server:
        options: dict[str, Any] = args.transport_options
        url = server.url_for_db(args.db)
        pattern = event_channel_pattern(args.db, options.get("global_keyprefix", ""))
        collector = Collector(server, pattern)
        collector.start()
        app = load_app(url, options)
        worker = CeleryWorker(
            url,
            queues=["celery", "bench"],
            concurrency=2,
            name="bench",
            transport_options=options,
        )
        try:
            worker.wait_ready(60)
            wait_for(collector, "worker-online", 1, 10)
            run_task_mix(app)
            wait_for(collector, "task-succeeded", 4, 30)  # add x2, ingest, sleep
            wait_for(collector, "task-failed", 2, 30)  # fail, flaky_fail (final)
            wait_for(collector, "task-retried", 2, 30)
            wait_for(collector, "worker-heartbeat", args.heartbeats, 30)
            worker.stop()  # warm shutdown -> worker-offline
            wait_for(collector, "worker-offline", 1, 10)
            time.sleep(0.3)
        finally:
            worker.close()
            collector.close()
            app.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for channel, data in collector.messages:
            fh.write(json.dumps({"channel": channel, "data": data}) + "\n")

    counts = collector.types()
    print(f"wrote {len(collector.messages)} messages to {args.out}")
    for name, n in sorted(counts.items()):
        print(f"  {name}: {n}")
    missing = [name for name in EVENT_TYPES if not counts[name]]
    if missing:
        print(f"MISSING event types: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
