"""Part 1 of bench/jobs: paging paused queues of a million and of ten thousand messages.

A private redis-server gets a queue of 1,000,000 Celery messages and one of 10,000
(copies, each with its own task id, of the protocol-2 JSON envelope a real Celery app's
`send_task` wrote), nobody consumes them, so they are `paused`. The real
`celery-jobs-exporter serve` pages through them with an API key:

* latency of `GET /v1/jobs/queues/{q}?status=paused&page=P&limit=100`, 200 sequential
  requests per page (keep-alive), for the first, the 1000th, the middle and the last page;
* the Redis work behind one request: `INFO commandstats` and `INFO stats` around 100
  requests (the cost of sampling INFO itself is measured and subtracted; a window in
  which the refresher ran is measured again): commands, LLEN and LRANGE calls, Redis's
  own microseconds in LRANGE, and bytes Redis sent (`total_net_output_bytes`);
* throughput and latency under a small concurrent load with `wrk -t2 -c8 --latency`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import redis

from bench.jobs.api import HEADERS, KEY, LIMIT
from testkit.celery_worker import load_app
from testkit.redis_server import RedisServer
from testkit.report import percentile, table
from testkit.sidecar import Sidecar
from testkit.wrk import parse_wrk

#: Longer than a refresh of the paging sidecar takes (its inspect wait is 1 s at most).
REFRESH_SETTLE_SECONDS = 1.5


def generation(sidecar: Sidecar) -> int:
    """The generation of the snapshot /readyz reports (a new one per refresh)."""
    return int(sidecar.get("/readyz").json()["generation"])


@dataclass(frozen=True)
class MessageTemplate:
    """One message exactly as a real Celery app wrote it, with its id and delivery tag."""

    raw: str
    task_id: str
    delivery_tag: str

    def copies(self, count: int) -> Iterator[str]:
        """`count` copies, each with a new task id (headers, root id, correlation id) and tag."""
        pattern = f"({re.escape(self.task_id)}|{re.escape(self.delivery_tag)})"
        pieces = re.split(pattern, self.raw)
        id_slots = [i for i, p in enumerate(pieces) if p == self.task_id]
        tag_slots = [i for i, p in enumerate(pieces) if p == self.delivery_tag]
        for _ in range(count):
            task_id, tag = str(uuid.uuid4()), str(uuid.uuid4())
            for slot in id_slots:
                pieces[slot] = task_id
            for slot in tag_slots:
                pieces[slot] = tag
            yield "".join(pieces)


def capture_template(server: RedisServer) -> MessageTemplate:
    """Publish one realistic task with the real Celery app and take its message back."""
    app = load_app(server.url)
    try:
        app.send_task(
            "tests.ingest",
            kwargs={"ingestionSourceId": "src-00042",
                    "payload": {"rows": 250, "source": "s3://ingest/2024/05/01/part-00042.csv"}},
            queue="bench-template",
        )
    finally:
        app.close()
    client = server.client()
    raw = client.rpop("bench-template")
    client.delete("_kombu.binding.bench-template")
    if not isinstance(raw, bytes):
        raise RuntimeError("the Celery app did not write a message")
    envelope = json.loads(raw)
    return MessageTemplate(
        raw.decode(), envelope["headers"]["id"], envelope["properties"]["delivery_tag"]
    )


def fill(client: redis.Redis, template: MessageTemplate, queue: str, count: int) -> float:
    """LPUSH `count` copies, 1000 values per command, 20 commands per pipeline; seconds."""
    started = time.monotonic()
    pipe = client.pipeline(transaction=False)
    batch: list[str] = []
    pending = 0
    for message in template.copies(count):
        batch.append(message)
        if len(batch) == 1000:
            pipe.lpush(queue, *batch)
            batch, pending = [], pending + 1
            if pending == 20:
                pipe.execute()
                pending = 0
    if batch:
        pipe.lpush(queue, *batch)
    pipe.execute()
    return time.monotonic() - started


@dataclass(frozen=True)
class RedisSample:
    """Redis's counters at one moment."""

    commands: int
    net_out: int
    calls: dict[str, int]
    usec: dict[str, int]

    @classmethod
    def take(cls, client: redis.Redis) -> RedisSample:
        stats = client.info("stats")
        commandstats = client.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commandstats.items()}
        usec = {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in commandstats.items()}
        return cls(int(stats["total_commands_processed"]), int(stats["total_net_output_bytes"]),
                   calls, usec)

    def minus(self, other: RedisSample) -> RedisSample:
        return RedisSample(
            self.commands - other.commands,
            self.net_out - other.net_out,
            {k: v - other.calls.get(k, 0) for k, v in self.calls.items()},
            {k: v - other.usec.get(k, 0) for k, v in self.usec.items()},
        )


@dataclass(frozen=True)
class PageRow:
    """The figures of one (queue, page)."""

    queue: str
    messages: int
    page: int
    p50: float
    p99: float
    mean: float
    response_bytes: int
    commands: float
    llen: float
    lrange: float
    lrange_usec: float
    net_out: float
    jobs: int

    def row(self) -> list[object]:
        return [
            self.queue, f"{self.messages:,}", f"{self.page:,}", f"{(self.page - 1) * LIMIT:,}",
            self.jobs, f"{1000 * self.p50:.2f}", f"{1000 * self.p99:.2f}",
            f"{1000 * self.mean:.2f}", f"{self.response_bytes / 1024:.1f}",
            f"{self.commands:.2f}", f"{self.llen:.2f}", f"{self.lrange:.2f}",
            f"{self.lrange_usec:.1f}", f"{self.net_out:,.0f}",
        ]


PAGE_HEADERS = (
    "queue", "messages", "page", "offset", "jobs", "p50 ms", "p99 ms", "mean ms", "resp KB",
    "cmds/req", "LLEN/req", "LRANGE/req", "LRANGE µs/req", "Redis bytes out/req",
)


def measure_page(
    sidecar: Sidecar, client: redis.Redis, http: httpx.Client, queue: str,
    messages: int, page: int, *, requests: int, work_requests: int,
) -> PageRow:
    """Latency over sequential requests, then Redis's work per request."""
    url = f"/v1/jobs/queues/{queue}?status=paused&page={page}&limit={LIMIT}"
    first = http.get(url)
    first.raise_for_status()
    body = first.json()
    if body["pagination"]["totalJobs"] != messages:
        raise RuntimeError(f"{queue}: {body['pagination']} (expected {messages} messages)")
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = http.get(url)
        timings.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    # Sampling INFO costs something of its own between two samples: measure it alone.
    RedisSample.take(client)  # creates the commandstats entries of INFO itself
    alone = RedisSample.take(client)
    sampling = RedisSample.take(client).minus(alone)
    work = sampling
    for _attempt in range(10):
        generation_before = generation(sidecar)
        before = RedisSample.take(client)
        for _ in range(work_requests):
            http.get(url).raise_for_status()
        work = RedisSample.take(client).minus(before)
        # A refresh that began inside the window swaps its snapshot only when its
        # reads are done: wait longer than one refresh takes before checking.
        time.sleep(REFRESH_SETTLE_SECONDS)
        if generation(sidecar) == generation_before:
            break  # no refresh touched Redis during the window
    else:
        raise RuntimeError("the refresher ran during every measurement window")
    n = work_requests
    return PageRow(
        queue=queue, messages=messages, page=page,
        p50=percentile(timings, 0.5), p99=percentile(timings, 0.99),
        mean=sum(timings) / len(timings), response_bytes=len(first.content),
        commands=(work.commands - sampling.commands) / n,
        llen=work.calls.get("llen", 0) / n,
        lrange=work.calls.get("lrange", 0) / n,
        lrange_usec=work.usec.get("lrange", 0) / n,
        net_out=(work.net_out - sampling.net_out) / n,
        jobs=len(body["jobs"]),
    )


@dataclass(frozen=True)
class WrkResult:
    """What wrk reported."""

    page: int
    rate: float
    p50: float
    p90: float
    p99: float
    requests: int
    errors: int

    def row(self, duration: float, connections: int) -> list[object]:
        return [
            f"{self.page:,}", f"{connections}", f"{duration:.0f}", f"{self.requests:,}",
            f"{self.rate:,.0f}", f"{1000 * self.p50:.2f}", f"{1000 * self.p90:.2f}",
            f"{1000 * self.p99:.2f}", self.errors,
        ]


def run_wrk(url: str, page: int, duration: float, connections: int) -> WrkResult:
    """`wrk -t2 -cN -dDs --latency -H 'X-API-KEY: …' URL`, parsed."""
    command = [
        "wrk", "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency",
        "-H", f"X-API-KEY: {KEY}", url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    report = parse_wrk(output)
    return WrkResult(
        page, report.requests_per_second, report.p50_ms / 1000, report.p90_ms / 1000,
        report.p99_ms / 1000, report.requests, report.failed,
    )


def paging_benchmark(args: argparse.Namespace) -> None:
    """Part 1: fill, then latency and Redis work per page, then wrk."""
    big, small = args.messages, args.small
    queues = {"paused-big": big, "paused-small": small}
    print(f"== part 1: paging paused queues of {big:,} and {small:,} messages, "
          f"limit={LIMIT}", flush=True)
    server = RedisServer()
    try:
        client: redis.Redis = server.client()
        template = capture_template(server)
        print(f"  message: {len(template.raw)} bytes, a real protocol-2 JSON envelope of "
              f"tests.ingest(ingestionSourceId=…, payload={{…}}) from Celery's send_task",
              flush=True)
        for queue, count in queues.items():
            took = fill(client, template, queue, count)
            print(f"  LPUSHed {count:,} copies into {queue!r} in {took:.1f}s", flush=True)
        used = client.info("memory")["used_memory_human"]
        print(f"  redis used_memory: {used}", flush=True)
        with Sidecar(server.url, "--api-key", KEY, "--queue", "paused-big",
                     "--queue", "paused-small", "--refresh-interval", "5") as sidecar:
            sidecar.wait_ready()
            last_big, last_small = math.ceil(big / LIMIT), math.ceil(small / LIMIT)
            pages = {
                "paused-big": sorted({1, min(1000, last_big), last_big // 2 + 1, last_big}),
                "paused-small": sorted({1, last_small // 2 + 1, last_small}),
            }
            rows: list[PageRow] = []
            with httpx.Client(base_url=sidecar.base_url, headers=HEADERS, timeout=30) as http:
                for queue, numbers in pages.items():
                    for number in numbers:
                        rows.append(measure_page(
                            sidecar, client, http, queue, queues[queue], number,
                            requests=args.requests, work_requests=args.work_requests,
                        ))
            print()
            print(f"sequential: {args.requests} requests per page (one keep-alive connection); "
                  f"Redis work: averaged over {args.work_requests} requests")
            print(table(PAGE_HEADERS, [r.row() for r in rows]))
            works = {(round(r.commands, 2), round(r.llen, 2), round(r.lrange, 2)) for r in rows}
            spread = max(r.net_out for r in rows) / max(min(r.net_out for r in rows), 1)
            print(f"\nRedis commands per request are the same on every page and both queues: "
                  f"{'yes' if len(works) == 1 else 'NO'} {sorted(works)}; bytes out per "
                  f"request vary by x{spread:.2f} (the messages' sizes)")
            big_rows = [r for r in rows if r.queue == "paused-big"]
            small_rows = [r for r in rows if r.queue == "paused-small"]
            print(f"page 1 p50: {1000 * big_rows[0].p50:.2f} ms at {big:,} vs "
                  f"{1000 * small_rows[0].p50:.2f} ms at {small:,} messages; "
                  f"last page p50: {1000 * big_rows[-1].p50:.2f} ms vs "
                  f"{1000 * small_rows[-1].p50:.2f} ms")
            deepest = max(big_rows, key=lambda r: r.lrange_usec)
            print(f"Redis's own time in LRANGE is not O(limit): it walks the list from its "
                  f"nearer end, {big_rows[0].lrange_usec:.0f} µs at page 1 and "
                  f"{big_rows[-1].lrange_usec:.0f} µs at the last page, but "
                  f"{deepest.lrange_usec:,.0f} µs at page {deepest.page:,} (offset "
                  f"{(deepest.page - 1) * LIMIT:,}), during which Redis serves no one else")
            if args.wrk_duration > 0 and shutil.which("wrk"):
                results = []
                for number in pages["paused-big"]:
                    url = (f"{sidecar.base_url}/v1/jobs/queues/paused-big?status=paused"
                           f"&page={number}&limit={LIMIT}")
                    results.append(run_wrk(url, number, args.wrk_duration, args.connections))
                print(f"\nconcurrent: wrk -t2 -c{args.connections} -d{args.wrk_duration:.0f}s "
                      f"--latency on paused-big ({big:,} messages); the sidecar runs gunicorn "
                      f"with 1 asgi worker and 4 page threads; wrk, Redis and the sidecar share "
                      f"{len(os.sched_getaffinity(0))} CPUs (expect ±30% between runs)")
                print(table(
                    ("page", "conns", "s", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms",
                     "errors"),
                    [r.row(args.wrk_duration, args.connections) for r in results],
                ))
            elif args.wrk_duration > 0:
                print("\nwrk not found: concurrent load skipped")
    finally:
        server.cleanup()
