"""Jobs API of the real sidecar: paging cost at a million messages, memory per retained job.

Part 1, paging. A private redis-server gets a queue of 1,000,000 Celery messages and
one of 10,000 (copies, each with its own task id, of the protocol-2 JSON envelope a
real Celery app's `send_task` wrote), nobody consumes them, so they are `paused`. The
real `celery-jobs-exporter serve` pages through them with an API key:

* latency of `GET /v1/jobs/queues/{q}?status=paused&page=P&limit=100`, 200 sequential
  requests per page (keep-alive), for the first, the 1000th, the middle and the last page;
* the Redis work behind one request: `INFO commandstats` and `INFO stats` around 100
  requests (the cost of sampling INFO itself is measured and subtracted; a window in
  which the refresher ran is measured again): commands, LLEN and LRANGE calls, Redis's
  own microseconds in LRANGE, and bytes Redis sent (`total_net_output_bytes`);
* throughput and latency under a small concurrent load with `wrk -t2 -c8 --latency`.

Part 2, memory. A fresh sidecar (`--no-history`, so only the in-memory retention is
measured) subscribes to a private redis-server; the benchmark publishes Celery events
built from the payloads a real worker published (`bench/events/payloads.jsonl`):
`task-sent` (with its queue) on `task.sent`, then `task-received`, `task-started` and
`task-succeeded` or `task-failed` as one `task.multi` list, with new uuids, timestamps,
realistic args/kwargs/results, and the captured traceback plus application frames whose
line numbers and message differ per task (so sharing equal strings cannot hide the
cost). 100 queues x (1000 completed + 5000 failed) fill the default retention exactly;
the gunicorn worker's VmRSS before and after gives bytes per retained job. A second
run sends 100 KB args, kwargs, results and tracebacks and shows they are truncated.

Usage (repo root): .venv/bin/python -m bench.jobs [--messages 1M] [--wrk-duration 10]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import redis

from bench.common import (
    PAYLOADS,
    Envelope,
    Event,
    children,
    memory_mb,
    parse_count,
    parse_wrk,
    read_captured,
    resp_publish,
    table,
)
from exporter.model.jobs import MAX_TEXT, MAX_TRACEBACK, TRUNCATION_MARK, clip
from exporter.web.jobformat import MAX_VALUE_CHARS
from tests.support.celery_worker import load_app
from tests.support.redis_server import RedisServer
from tests.support.sidecar import Sidecar

KEY = "bench-jobs-api-key-0123456789abcdef"
HEADERS = {"X-API-KEY": KEY}
LIMIT = 100
EVENT_PREFIX = "/0.celeryev/"
UNLIMITED_PUBSUB = ("--client-output-buffer-limit", "pubsub 0 0 0")


# -- small helpers ------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of `values` (share in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def gunicorn_worker(sidecar: Sidecar, timeout: float = 30.0) -> int:
    """The gunicorn worker process: the only child of the `serve` process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = children(sidecar.process.pid)
        if len(workers) == 1:
            return workers[0]
        time.sleep(0.1)
    raise RuntimeError("no single gunicorn worker under the sidecar")


def metric(sidecar: Sidecar, name: str) -> float:
    """One unlabelled sample of /metrics."""
    text = sidecar.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    if match is None:
        raise KeyError(name)
    return float(match.group(1))


def wait_events_subscribed(sidecar: Sidecar, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = sidecar.get("/metrics").text
        if re.search(r'^celery_exporter_source_up\{source="events"\} 1(\.0)?$', text, re.M):
            return
        time.sleep(0.2)
    raise TimeoutError("the sidecar did not subscribe to the event stream")


#: Longer than a refresh of the paging sidecar takes (its inspect wait is 1 s at most).
REFRESH_SETTLE_SECONDS = 1.5


def generation(sidecar: Sidecar) -> int:
    return int(sidecar.get("/readyz").json()["generation"])


# -- part 1: a queue of a million messages -------------------------------------------------------


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


# -- part 2: memory per retained job ------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """The captured events and envelopes the stream is made of."""

    sent: Event
    received: Event
    started: Event
    succeeded: Event
    failed: Event
    sent_envelope: Envelope
    multi_envelope: Envelope


def load_captured(path: Path = PAYLOADS) -> Captured:
    """Templates from the payloads a real worker published."""
    by_type, envelopes = read_captured(path)
    return Captured(
        sent=by_type["task-sent"][0],
        received=by_type["task-received"][0],
        started=by_type["task-started"][0],
        succeeded=by_type["task-succeeded"][0],
        failed=max(by_type["task-failed"], key=lambda e: len(e["traceback"] or "")),
        sent_envelope=envelopes["task.sent"],
        multi_envelope=envelopes["task.multi"],
    )


class TaskEvents:
    """The events of one task at a time: task.sent, then received+started+ended as task.multi."""

    def __init__(self, captured: Captured, *, huge_kb: int = 0) -> None:
        self._c = captured
        self._huge = "x" * (huge_kb * 1024) if huge_kb else ""
        lines = captured.failed["traceback"].rstrip("\n").split("\n")
        self._tb_head = "\n".join(lines[:-1])
        self._now = time.time()
        self._clock = 0
        self._sent_channel = f"{EVENT_PREFIX}task.sent".encode()
        self._multi_channel = f"{EVENT_PREFIX}task.multi".encode()

    def _values(self, i: int) -> tuple[str, str, str]:
        if self._huge:
            return repr((self._huge,)), repr({"payload": self._huge}), repr(self._huge)
        source = f"src-{i % 977:05d}"
        args = f"('acct-{i:07d}', {i % 500}, True)"
        kwargs = (
            f"{{'ingestionSourceId': '{source}', 'payload': {{'rows': {i % 250}, "
            f"'source': 's3://ingest-bucket/2024/05/{i % 28 + 1:02d}/part-{i:07d}.csv', "
            f"'options': {{'dedupe': True, 'encoding': 'utf-8'}}}}}}"
        )
        result = f"{{'ok': True, 'rows': {i % 250}, 'source': '{source}'}}"
        return args, kwargs, result

    def _failure(self, i: int) -> tuple[str, str]:
        message = f"bad row {i % 250} in part-{i:07d}.csv"
        frames = (
            f'\n  File "/app/ingest/pipeline.py", line {100 + i % 900}, in ingest_batch\n'
            f"    rows = list(parse_rows(source, options))\n"
            f'  File "/app/ingest/parsers.py", line {(i * 7) % 1000 + 1}, in parse_rows\n'
            f'    raise ValueError(f"bad row {{n}} in {{source}}")\n'
        )
        traceback = f"{self._tb_head}{frames}ValueError: {message}\n"
        if self._huge:
            traceback += self._huge
        return f"ValueError({message!r})", traceback

    def messages(self, i: int, queue: str, failed: bool) -> list[bytes]:
        """Two RESP PUBLISH commands: the producer's task-sent, the worker's task.multi."""
        c = self._c
        task_id = str(uuid.uuid4())
        args, kwargs, result = self._values(i)
        self._now += 0.0001
        now = self._now
        self._clock += 4
        producer, worker = f"gen{i % 8}@web-{i % 8}", f"celery@worker-{i % 16:02d}"
        sent = {**c.sent, "hostname": producer, "pid": 2000 + i % 8, "clock": self._clock,
                "uuid": task_id, "root_id": task_id, "parent_id": None,
                "name": "app.tasks.ingest", "args": args, "kwargs": kwargs, "retries": 0,
                "eta": None, "expires": None, "queue": queue, "exchange": "",
                "routing_key": queue, "timestamp": now}
        common = {"hostname": worker, "pid": 3000 + i % 16, "uuid": task_id}
        received = {**c.received, **common, "clock": self._clock + 1, "name": "app.tasks.ingest",
                    "args": args, "kwargs": kwargs, "root_id": task_id, "parent_id": None,
                    "retries": 0, "eta": None, "expires": None, "timestamp": now + 0.001}
        started = {**c.started, **common, "clock": self._clock + 2, "timestamp": now + 0.002}
        if failed:
            exception, traceback = self._failure(i)
            ended = {**c.failed, **common, "clock": self._clock + 3, "timestamp": now + 0.02,
                     "exception": exception, "traceback": traceback}
        else:
            ended = {**c.succeeded, **common, "clock": self._clock + 3, "timestamp": now + 0.02,
                     "result": result, "runtime": 0.018}
        sent_body = base64.b64encode(json.dumps(sent).encode()).decode()
        multi_body = base64.b64encode(json.dumps([received, started, ended]).encode()).decode()
        return [
            resp_publish(self._sent_channel,
                         c.sent_envelope.render(sent_body, producer, str(uuid.uuid4())).encode()),
            resp_publish(self._multi_channel,
                         c.multi_envelope.render(multi_body, worker, str(uuid.uuid4())).encode()),
        ]

    def traceback_length(self, i: int) -> int:
        return len(self._failure(i)[1])


class Publisher:
    """Writes PUBLISH commands pipelined on a raw socket; waits for the exporter to keep up."""

    def __init__(self, server: RedisServer, sidecar: Sidecar, max_lag: int) -> None:
        self._sock = socket.create_connection((server.host, server.port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sidecar = sidecar
        self._max_lag = max_lag
        self.events = 0
        self.nbytes = 0

    def send(self, commands: list[bytes], events: int) -> None:
        data = b"".join(commands)
        self._sock.sendall(data)
        self.nbytes += len(data)
        replies = 0
        while replies < len(commands):
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            replies += chunk.count(b"\n")
        self.events += events
        if self.events - self.received() > self._max_lag:
            while self.events - self.received() > self._max_lag // 4:
                time.sleep(0.2)

    def received(self) -> int:
        return int(metric(self._sidecar, "celery_exporter_events_received_total"))

    def wait_drained(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received() < self.events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the exporter counted {self.received()} of {self.events}")
            time.sleep(0.25)

    def close(self) -> None:
        self._sock.close()


def wait_retained(sidecar: Sidecar, jobs: int, timeout: float = 60.0) -> int:
    """Wait until the queues retain `jobs` jobs in all; returns how many they retain."""
    deadline = time.monotonic() + timeout
    kept = 0
    while time.monotonic() < deadline:
        kept = sum(sum(c) for c in retained(sidecar).values())
        if kept >= jobs:
            return kept
        time.sleep(0.5)
    raise TimeoutError(f"{kept} jobs retained, expected {jobs}")


def retained(sidecar: Sidecar) -> dict[str, tuple[int, int]]:
    """(completed, failed) per queue, from GET /v1/jobs/queues."""
    response = sidecar.get("/v1/jobs/queues", headers=HEADERS)
    response.raise_for_status()
    return {q["name"]: (q["counts"]["completed"], q["counts"]["failed"])
            for q in response.json()["queues"]}


@dataclass(frozen=True)
class MemoryRun:
    """Figures of one memory run."""

    label: str
    jobs: int
    completed: int
    failed: int
    rss_before: float
    rss_after: float
    peak: float
    seconds: float
    events: int
    mbytes: float
    traceback_chars: int
    rss_mid: float
    jobs_mid: int

    @property
    def per_job(self) -> float:
        """Bytes of RSS per retained job, from the start."""
        return (self.rss_after - self.rss_before) * 1024 * 1024 / max(self.jobs, 1)

    @property
    def per_job_second_half(self) -> float:
        """Bytes of RSS per job added in the second half (fixed costs cancel out)."""
        jobs = self.jobs - self.jobs_mid
        return (self.rss_after - self.rss_mid) * 1024 * 1024 / max(jobs, 1)

    def row(self) -> list[object]:
        return [
            self.label, f"{self.jobs:,}", f"{self.completed:,}", f"{self.failed:,}",
            f"{self.events:,}", f"{self.mbytes:,.0f}", f"{self.events / self.seconds:,.0f}",
            f"{self.traceback_chars:,}", f"{self.rss_before:.1f}", f"{self.rss_after:.1f}",
            f"{self.rss_mid:.1f}", f"{self.rss_after - self.rss_before:+.1f}",
            f"{self.peak:.1f}", f"{self.per_job:,.0f}", f"{self.per_job_second_half:,.0f}",
        ]


MEMORY_HEADERS = (
    "run", "retained jobs", "completed", "failed", "events", "MB published", "events/s",
    "traceback chars", "RSS before MB", "RSS after MB", "RSS half-way MB", "ΔRSS MB",
    "peak MB", "bytes/job", "bytes/job 2nd half",
)


def memory_run(
    label: str, queues: int, completed: int, failed: int, *, huge_kb: int = 0,
    chunk_tasks: int = 2000, max_lag: int = 200_000,
) -> tuple[MemoryRun, dict[str, Any]]:
    """Publish every queue's jobs (completed and failed interleaved), measure RSS."""
    names = [f"q{n:03d}" for n in range(queues)]
    per_queue = completed + failed
    total = queues * per_queue
    events = TaskEvents(load_captured(), huge_kb=huge_kb)
    server = RedisServer(extra_args=list(UNLIMITED_PUBSUB))
    try:
        with Sidecar(
            server.url, "--api-key", KEY, "--no-history", "--refresh-interval", "1",
            "--completed-retention", str(completed), "--failed-retention", str(failed),
        ) as sidecar:
            sidecar.wait_ready()
            wait_events_subscribed(sidecar)
            worker = gunicorn_worker(sidecar)
            time.sleep(3.0)
            rss_before, _ = memory_mb(worker)
            publisher = Publisher(server, sidecar, max_lag)
            started = time.monotonic()
            commands: list[bytes] = []
            pending = 0
            rss_mid, jobs_mid = rss_before, 0
            # Successes are spread evenly among a queue's jobs (Bresenham): both kinds keep
            # arriving until the end, and each queue gets exactly `completed` and `failed`.
            for index in range(total):
                queue_index, k = index % queues, index // queues
                succeeded = (k + 1) * completed // per_queue > k * completed // per_queue
                commands += events.messages(index, names[queue_index], not succeeded)
                pending += 1
                if pending == chunk_tasks or index == total // 2 - 1:
                    publisher.send(commands, 4 * pending)
                    commands, pending = [], 0
                if index == total // 2 - 1:
                    # Half-way: the same measure, so that what does not grow with the jobs
                    # (buffers, allocator arenas) cancels out of the second half's figure.
                    publisher.wait_drained()
                    jobs_mid = wait_retained(sidecar, index + 1)
                    time.sleep(3.0)
                    rss_mid, _ = memory_mb(worker)
            if commands:
                publisher.send(commands, 4 * pending)
            publisher.wait_drained()
            counts = retained(sidecar)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                counts = retained(sidecar)
                if all(counts.get(n) == (completed, failed) for n in names):
                    break
                time.sleep(0.5)
            took = time.monotonic() - started
            if not all(counts.get(n) == (completed, failed) for n in names):
                wrong = {n: counts.get(n) for n in names if counts.get(n) != (completed, failed)}
                raise RuntimeError(f"retention not reached: {dict(list(wrong.items())[:5])}")
            time.sleep(3.0)
            rss_after, peak = memory_mb(worker)
            if gunicorn_worker(sidecar) != worker:
                raise RuntimeError("the gunicorn worker was restarted during the run")
            sample = inspect_jobs(sidecar, names[0])
            publisher.close()
            run = MemoryRun(
                label=label, jobs=sum(sum(c) for c in counts.values()),
                completed=sum(c for c, _ in counts.values()),
                failed=sum(f for _, f in counts.values()),
                rss_before=rss_before, rss_after=rss_after, peak=peak, seconds=took,
                rss_mid=rss_mid, jobs_mid=jobs_mid,
                events=publisher.events, mbytes=publisher.nbytes / 1e6,
                traceback_chars=events.traceback_length(total - 1),
            )
            return run, sample
    finally:
        server.cleanup()


def inspect_jobs(sidecar: Sidecar, queue: str) -> dict[str, Any]:
    """Sizes of what the API shows for a queue's newest failed and completed job."""
    found: dict[str, Any] = {}
    with httpx.Client(base_url=sidecar.base_url, headers=HEADERS, timeout=30) as http:
        for status in ("failed", "completed"):
            timings = []
            body: dict[str, Any] = {}
            for number in (1, 10):
                for _ in range(20):
                    started = time.perf_counter()
                    response = http.get(f"/v1/jobs/queues/{queue}",
                                        params={"status": status, "page": number, "limit": LIMIT})
                    timings.append(time.perf_counter() - started)
                    response.raise_for_status()
                    if number == 1:
                        body = response.json()
            job = body["jobs"][0] if body.get("jobs") else {}
            found[status] = {
                "p50_ms": 1000 * percentile(timings, 0.5),
                "args": len(json.dumps(job.get("data", {}).get("args"))),
                "kwargs": len(json.dumps(job.get("data", {}).get("kwargs"))),
                "stacktrace": max((len(t) for t in job.get("stacktrace", [])), default=0),
                "failedReason": len(job.get("failedReason") or ""),
                "returnValue": len(json.dumps(job.get("returnValue"))),
            }
    return found


def memory_benchmark(args: argparse.Namespace) -> None:
    """Part 2: bytes per retained job, with realistic and with huge values."""
    print(f"\n== part 2: memory per retained job ({args.queues} queues x ({args.completed:,} "
          f"completed + {args.failed:,} failed)), sidecar --no-history --refresh-interval 1",
          flush=True)
    runs: list[tuple[MemoryRun, dict[str, Any]]] = []
    runs.append(memory_run("realistic", args.queues, args.completed, args.failed))
    print("  realistic run done", flush=True)
    if args.huge_kb > 0:
        runs.append(memory_run(
            f"huge {args.huge_kb} KB values", args.huge_queues, args.huge_jobs // 2,
            args.huge_jobs - args.huge_jobs // 2, huge_kb=args.huge_kb,
            chunk_tasks=20, max_lag=800,
        ))
        print("  huge run done", flush=True)
    print()
    print(table(MEMORY_HEADERS, [run.row() for run, _ in runs]))
    print("\nwhat GET /v1/jobs/queues/q000 shows for the newest job (JSON characters), "
          "and p50 of 40 requests (pages 1 and 10, limit 100)")
    rows = []
    for run, sample in runs:
        for status in ("completed", "failed"):
            s = sample[status]
            rows.append([run.label, status, f"{s['p50_ms']:.2f}", s["args"], s["kwargs"],
                         s["returnValue"], s["failedReason"], s["stacktrace"]])
    print(table(("run", "status", "p50 ms", "data.args", "data.kwargs", "returnValue",
                 "failedReason", "stacktrace[0]"), rows))
    realistic = runs[0][0]
    print(f"\nbytes/job: (RSS after - RSS before) / retained jobs; the realistic run keeps "
          f"{realistic.jobs:,} jobs in {realistic.rss_after - realistic.rss_before:,.0f} MB "
          f"({realistic.per_job:,.0f} bytes each; failed jobs carry a "
          f"~{realistic.traceback_chars:,}-character traceback of their own)")
    if len(runs) > 1:
        huge = runs[1][0]
        raw = 4 * args.huge_kb * 1024
        print(f"huge run: each job arrived with ~{raw // 1024} KB of args, kwargs and result "
              f"or traceback; kept: {huge.per_job:,.0f} bytes/job overall, "
              f"{huge.per_job_second_half:,.0f} in the second half "
              f"({'bounded' if huge.per_job_second_half < raw / 4 else 'NOT bounded'}: the "
              f"tracker keeps {MAX_TEXT:,} characters of args/kwargs/results and "
              f"{MAX_TRACEBACK:,} of a traceback; the API shows {MAX_VALUE_CHARS:,})")
        value = sys.getsizeof(clip("x" * raw))
        traceback = sys.getsizeof(clip("x" * raw, MAX_TRACEBACK))
        width = "1 byte" if TRUNCATION_MARK.isascii() else "2 or more bytes"
        print(f"a clipped value ends with {TRUNCATION_MARK!r}, so Python stores the kept "
              f"string at {width} per character: a clipped value takes {value:,} bytes, "
              f"a clipped traceback {traceback:,}")


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=parse_count, default=1_000_000,
                        help="messages in the big paused queue (default %(default)s)")
    parser.add_argument("--small", type=parse_count, default=10_000,
                        help="messages in the small paused queue (default %(default)s)")
    parser.add_argument("--requests", type=int, default=200,
                        help="sequential requests per page for latency (default %(default)s)")
    parser.add_argument("--work-requests", type=int, default=100,
                        help="requests averaged for the Redis work (default %(default)s)")
    parser.add_argument("--wrk-duration", type=float, default=10.0,
                        help="seconds of wrk per page, 0 to skip (default %(default)s)")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections (default %(default)s)")
    parser.add_argument("--queues", type=int, default=100,
                        help="queues of the memory run (default %(default)s)")
    parser.add_argument("--completed", type=parse_count, default=1000,
                        help="completed jobs retained per queue (default %(default)s)")
    parser.add_argument("--failed", type=parse_count, default=5000,
                        help="failed jobs retained per queue (default %(default)s)")
    parser.add_argument("--huge-kb", type=int, default=100,
                        help="size of each huge value in KB, 0 to skip (default %(default)s)")
    parser.add_argument("--huge-queues", type=int, default=10,
                        help="queues of the huge run (default %(default)s)")
    parser.add_argument("--huge-jobs", type=int, default=100,
                        help="jobs per queue of the huge run, half failed (default %(default)s)")
    parser.add_argument("--skip-paging", action="store_true", help="skip part 1")
    parser.add_argument("--skip-memory", action="store_true", help="skip part 2")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if not args.skip_paging:
        paging_benchmark(args)
    if not args.skip_memory:
        memory_benchmark(args)
    print(f"\ntotal {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
