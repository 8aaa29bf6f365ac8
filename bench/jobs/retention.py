"""Part 2 of bench/jobs: memory per retained job.

A fresh sidecar (`--no-history`, so only the in-memory retention is measured)
subscribes to a private redis-server; the benchmark publishes Celery events built from
the payloads a real worker published (`testkit/data/payloads.jsonl`): `task-sent` (with
its queue) on `task.sent`, then `task-received`, `task-started` and `task-succeeded` or
`task-failed` as one `task.multi` list, with new uuids, timestamps, realistic
args/kwargs/results, and the captured traceback plus application frames whose line
numbers and message differ per task (so sharing equal strings cannot hide the cost).
100 queues x (1000 completed + 5000 failed) fill the default retention exactly; the
gunicorn worker's VmRSS before and after gives bytes per retained job. A second run
sends 100 KB args, kwargs, results and tracebacks and shows they are truncated.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.jobs.api import HEADERS, KEY, LIMIT
from exporter.model.jobs import MAX_TEXT, MAX_TRACEBACK, TRUNCATION_MARK, clip
from exporter.web.jobformat import MAX_VALUE_CHARS
from testkit.exposition import value
from testkit.payloads import EVENT_CHANNEL_PREFIX, Event, events_by_type, load_payloads
from testkit.procs import memory_mb
from testkit.redis_server import RedisServer
from testkit.report import percentile, table
from testkit.republish import Envelope, envelopes, resp_publish
from testkit.sidecar import Sidecar

UNLIMITED_PUBSUB = ("--client-output-buffer-limit", "pubsub 0 0 0")


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


def load_captured() -> Captured:
    """Templates from the payloads a real worker published."""
    payloads = load_payloads()
    by_type, by_key = events_by_type(payloads), envelopes(payloads)
    return Captured(
        sent=by_type["task-sent"][0],
        received=by_type["task-received"][0],
        started=by_type["task-started"][0],
        succeeded=by_type["task-succeeded"][0],
        failed=max(by_type["task-failed"], key=lambda e: len(e["traceback"] or "")),
        sent_envelope=by_key["task.sent"],
        multi_envelope=by_key["task.multi"],
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
        self._sent_channel = f"{EVENT_CHANNEL_PREFIX}task.sent".encode()
        self._multi_channel = f"{EVENT_CHANNEL_PREFIX}task.multi".encode()

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
        return int(value(self._sidecar.metrics(), "celery_exporter_events_received_total"))

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
            sidecar.wait_subscribed()
            worker = sidecar.worker_pid()
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
            if sidecar.worker_pid() != worker:
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
