"""Shared benchmark helpers: a realistic Celery event stream, publishers, the real exporter.

The stream is built from the payloads a real worker published (``bench/events/
payloads.jsonl``): every message keeps the captured kombu envelope and event fields;
only uuids, timestamps, hostnames, pids, clocks, queues and task names are rewritten.
Publishers are separate processes that pre-encode whole RESP ``PUBLISH`` commands and
write them pipelined on a raw socket at a fixed event rate. The exporter is the real
``celery-jobs-exporter serve`` process; its figures come from /metrics and /proc.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.redis_server import RedisServer, find_free_port  # noqa: E402

PAYLOADS = REPO_ROOT / "bench" / "events" / "payloads.jsonl"
EXPORTER_BIN = Path(sys.executable).parent / "celery-jobs-exporter"
EVENT_PATTERN = "/0.celeryev/"
HEARTBEAT_INTERVAL = 2.0
QUEUE_NAMES = (
    "default", "emails", "billing", "reports", "ingest",
    "webhooks", "media", "search", "notifications", "exports",
)
TASK_VERBS = ("send", "sync", "build", "import", "refresh")
TASK_NOUNS = ("invoice", "report", "thumbnail", "index")
CLK_TCK = os.sysconf("SC_CLK_TCK")

Event = dict[str, Any]


# -- the captured templates ----------------------------------------------------------


class Envelope:
    """A captured kombu envelope (JSON text) with body, hostname and delivery tag as holes."""

    _HOLES: ClassVar[dict[str, str]] = {
        "body": "@@BODY@@", "hostname": "@@HOST@@", "tag": "@@TAG@@",
    }

    def __init__(self, raw: str) -> None:
        envelope = json.loads(raw)
        envelope["body"] = self._HOLES["body"]
        envelope["headers"]["hostname"] = self._HOLES["hostname"]
        envelope["properties"]["delivery_tag"] = self._HOLES["tag"]
        parts = re.split("(@@[A-Z]+@@)", json.dumps(envelope))
        self._parts = parts
        self._slots = {hole: i for i, hole in enumerate(parts) if hole.startswith("@@")}

    def render(self, body: str, hostname: str, tag: str) -> str:
        """The envelope text with its holes filled (the same text kombu would write)."""
        parts = list(self._parts)
        parts[self._slots[self._HOLES["body"]]] = body
        parts[self._slots[self._HOLES["hostname"]]] = hostname
        parts[self._slots[self._HOLES["tag"]]] = tag
        return "".join(parts)


@dataclass(frozen=True)
class Templates:
    """Captured events and envelopes, one of each kind the synthetic stream needs."""

    pairs: tuple[tuple[Event, Event], ...]
    started: Event
    succeeded: tuple[Event, ...]
    failed: tuple[Event, ...]
    heartbeat: Event
    sent_envelope: Envelope
    multi_envelope: Envelope
    heartbeat_envelope: Envelope


def decode_events(raw: str) -> list[Event]:
    """The events of one captured payload (a dict body or a task.multi list)."""
    envelope = json.loads(raw)
    body = json.loads(base64.b64decode(envelope["body"]))
    return body if isinstance(body, list) else [body]


def read_captured(path: Path = PAYLOADS) -> tuple[dict[str, list[Event]], dict[str, Envelope]]:
    """The captured events by type, and the first envelope of each routing key."""
    by_type: dict[str, list[Event]] = {}
    envelopes: dict[str, Envelope] = {}
    for line in path.read_text().splitlines():
        message = json.loads(line)
        routing_key = message["channel"].rsplit("/", 1)[1]
        envelopes.setdefault(routing_key, Envelope(message["data"]))
        for event in decode_events(message["data"]):
            by_type.setdefault(event["type"], []).append(event)
    return by_type, envelopes


def load_templates(path: Path = PAYLOADS) -> Templates:
    """Read the captured payloads and pick the templates of the synthetic stream."""
    by_type, envelopes = read_captured(path)
    received = {e["uuid"]: e for e in by_type["task-received"] if not e.get("retries")}
    pairs = tuple(
        (sent, received[sent["uuid"]])
        for sent in by_type["task-sent"]
        if not sent.get("retries") and sent["uuid"] in received
    )
    return Templates(
        pairs=pairs,
        started=by_type["task-started"][0],
        succeeded=tuple(by_type["task-succeeded"]),
        failed=tuple(by_type["task-failed"]),
        heartbeat=by_type["worker-heartbeat"][0],
        sent_envelope=envelopes["task.sent"],
        multi_envelope=envelopes["task.multi"],
        heartbeat_envelope=envelopes["worker.heartbeat"],
    )


# -- the synthetic stream --------------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    """The shape of the synthetic stream; one shard per publisher process."""

    rate: float
    shard: int = 0
    shards: int = 1
    queues: int = 10
    task_names: int = 20
    workers: int = 8
    failure_ratio: float = 0.1
    unique_tracebacks: bool = False
    seed: int = 7


@dataclass(slots=True)
class _Task:
    uuid: str
    name: str
    queue: str
    failed: bool
    pair: tuple[Event, Event]
    started_at: float = 0.0


@dataclass(slots=True)
class _Worker:
    hostname: str
    pid: int
    clock: int = 0
    processed: int = 0
    last_heartbeat: float = 0.0
    to_start: _Task | None = None
    to_finish: _Task | None = None
    buffer: list[Event] = field(default_factory=list)


@dataclass
class Batch:
    """Pre-encoded RESP PUBLISH commands and the number of events each one carries."""

    commands: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Events in the batch."""
        return sum(self.counts)

    @property
    def nbytes(self) -> int:
        """Bytes the batch writes to Redis."""
        return sum(len(c) for c in self.commands)


def resp_publish(channel: bytes, data: bytes) -> bytes:
    """One PUBLISH command in RESP."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel, len(data), data,
    )


def task_message(
    task: str,
    queue: str,
    *,
    args: tuple[int, ...] = (1, 2),
    eta: float | None = None,
    delivery_tag: str | None = None,
) -> dict[str, Any]:
    """A small but valid Celery protocol-2 task message: kombu's envelope, as a dict.

    Lists hold it as JSON; the `unacked` hash holds `[message, exchange, routing_key]`.
    """
    task_id = str(uuid.uuid4())
    eta_text = datetime.fromtimestamp(eta, UTC).isoformat() if eta is not None else None
    body = [list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": eta_text,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(args), "kwargsrepr": "{}", "origin": "gen1@bench",
            "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    }


def task_names(count: int) -> list[str]:
    """Realistic task names, `count` of them."""
    names = [f"app.tasks.{verb}_{noun}" for noun in TASK_NOUNS for verb in TASK_VERBS]
    names += [f"app.tasks.job_{i}" for i in range(len(names), count)]
    return names[:count]


def queue_names(count: int) -> list[str]:
    """Queue names, `count` of them."""
    return [QUEUE_NAMES[i] if i < len(QUEUE_NAMES) else f"queue-{i}" for i in range(count)]


class StreamGenerator:
    """Makes the messages of one shard: each task sent, received, started, then ended.

    Task-sent goes alone on ``task.sent`` (a dict body, from a producer); each worker's
    events go on ``task.multi`` as lists of 1-3 events, the way prefork workers batch
    them. Each worker runs a 3-stage pipeline (receive, start, finish) and sends a
    heartbeat every 2 s of stream time with its cumulative ``processed`` counter.
    """

    def __init__(self, templates: Templates, config: StreamConfig) -> None:
        self._t = templates
        self._c = config
        self._rng = random.Random(config.seed * 1000 + config.shard)
        owned = [w for w in range(config.workers) if w % config.shards == config.shard]
        if not owned:
            raise ValueError("more publisher shards than workers")
        self._workers = [_Worker(f"celery@worker-{w:02d}", 30_000 + w) for w in owned]
        self._producers = [(f"gen{20_000 + p}@web-{p}", 20_000 + p) for p in range(4)]
        self._producer_clock = 0
        names = task_names(config.task_names)
        queues = queue_names(config.queues)
        self._routes = [(name, queues[i % len(queues)]) for i, name in enumerate(names)]
        self._now = time.time()
        self._step_seconds = config.shards / config.rate
        self._channels = {
            kind: f"{EVENT_PATTERN}{kind}".encode()
            for kind in ("task.sent", "task.multi", "worker.heartbeat")
        }

    def take(self, events: int, *, final: bool = False) -> Batch:
        """At least `events` events of the stream; `final` also ends every task in flight."""
        batch = Batch()
        emitted = 0
        while emitted < events:
            emitted += self._step(batch)
        if final:
            for worker in self._workers:
                while worker.to_start is not None or worker.to_finish is not None:
                    self._advance(worker, None)
                    self._flush(worker, batch)
                self._heartbeat(worker, batch)
        return batch

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _step(self, batch: Batch) -> int:
        rng = self._rng
        worker = self._workers[rng.randrange(len(self._workers))]
        name, queue = self._routes[rng.randrange(len(self._routes))]
        pair = self._t.pairs[rng.randrange(len(self._t.pairs))]
        task = _Task(self._uuid(), name, queue, rng.random() < self._c.failure_ratio, pair)
        before = len(batch.counts)
        self._send(task, batch)
        self._advance(worker, task)
        self._flush(worker, batch)
        if self._now - worker.last_heartbeat >= HEARTBEAT_INTERVAL:
            self._heartbeat(worker, batch)
        emitted = sum(batch.counts[before:])
        self._now += emitted * self._step_seconds
        return emitted

    def _send(self, task: _Task, batch: Batch) -> None:
        hostname, pid = self._producers[self._rng.randrange(len(self._producers))]
        self._producer_clock += 1
        event = dict(task.pair[0])
        event.update(
            hostname=hostname, pid=pid, clock=self._producer_clock, uuid=task.uuid,
            root_id=task.uuid, name=task.name, queue=task.queue, routing_key=task.queue,
            timestamp=self._now,
        )
        self._publish(batch, "task.sent", self._t.sent_envelope, event, hostname, 1)

    def _advance(self, worker: _Worker, task: _Task | None) -> None:
        """One pipeline step of a worker: finish one task, start one, receive `task`."""
        now = self._now
        if worker.to_finish is not None:
            worker.buffer.append(self._finished(worker, worker.to_finish, now + 0.0004))
        if worker.to_start is not None:
            worker.to_start.started_at = now + 0.0002
            worker.buffer.append(self._worker_event(
                worker, self._t.started, worker.to_start.uuid, worker.to_start.started_at,
            ))
            worker.processed += 1
        if task is not None:
            received = self._worker_event(worker, task.pair[1], task.uuid, now + 0.0003)
            received.update(name=task.name, root_id=task.uuid)
            worker.buffer.append(received)
        worker.to_finish, worker.to_start = worker.to_start, task

    def _finished(self, worker: _Worker, task: _Task, now: float) -> Event:
        if task.failed:
            template = self._t.failed[self._rng.randrange(len(self._t.failed))]
            event = self._worker_event(worker, template, task.uuid, now)
            if self._c.unique_tracebacks:
                event["exception"] = f"{template['exception']} [{task.uuid}]"
                event["traceback"] = template["traceback"].rstrip("\n") + f" [{task.uuid}]\n"
            return event
        template = self._t.succeeded[self._rng.randrange(len(self._t.succeeded))]
        event = self._worker_event(worker, template, task.uuid, now)
        event["runtime"] = now - task.started_at
        return event

    def _worker_event(self, worker: _Worker, template: Event, task_id: str, ts: float) -> Event:
        worker.clock += 1
        event = dict(template)
        event.update(
            hostname=worker.hostname, pid=worker.pid, clock=worker.clock, uuid=task_id,
            timestamp=ts,
        )
        return event

    def _flush(self, worker: _Worker, batch: Batch) -> None:
        """Send the worker's buffered events as task.multi lists of 1 to 3 events."""
        events = worker.buffer
        while events:
            size = self._rng.randint(1, 3)
            chunk, events = events[:size], events[size:]
            self._publish(
                batch, "task.multi", self._t.multi_envelope, chunk, worker.hostname, len(chunk)
            )
        worker.buffer = []

    def _heartbeat(self, worker: _Worker, batch: Batch) -> None:
        worker.clock += 1
        worker.last_heartbeat = self._now
        event = dict(self._t.heartbeat)
        event.update(
            hostname=worker.hostname, pid=worker.pid, clock=worker.clock, timestamp=self._now,
            active=1 if worker.to_finish is not None else 0, processed=worker.processed,
        )
        self._publish(
            batch, "worker.heartbeat", self._t.heartbeat_envelope, event, worker.hostname, 1
        )

    def _publish(
        self, batch: Batch, kind: str, envelope: Envelope, body: object, hostname: str, n: int
    ) -> None:
        encoded = base64.b64encode(json.dumps(body).encode()).decode()
        data = envelope.render(encoded, hostname, self._uuid()).encode()
        batch.commands.append(resp_publish(self._channels[kind], data))
        batch.counts.append(n)


# -- publishers --------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    """What one publisher achieved for one batch."""

    events: int
    messages: int
    nbytes: int
    started: float
    last_ack: float
    max_behind: float
    errors: int
    progress: tuple[tuple[float, int], ...]

    @property
    def rate(self) -> float:
        """Events per second, from the scheduled start to Redis' last reply."""
        return self.events / max(self.last_ack - self.started, 1e-9)

    def published_by(self, at: float) -> float:
        """Events written by monotonic time `at` (interpolated)."""
        times = [t for t, _ in self.progress]
        i = bisect.bisect_right(times, at)
        if i == 0:
            return 0.0
        if i == len(times):
            return float(self.progress[-1][1])
        (t0, e0), (t1, e1) = self.progress[i - 1], self.progress[i]
        return e0 + (e1 - e0) * (at - t0) / max(t1 - t0, 1e-9)


def publish(sock: socket.socket, batch: Batch, rate: float, start_at: float) -> PublishResult:
    """Write the batch at `rate` events/s from monotonic `start_at`, pipelined; wait replies."""
    cumulative: list[int] = []
    total = 0
    for count in batch.counts:
        total += count
        cumulative.append(total)
    commands = batch.commands
    n = len(commands)
    replies = errors = 0
    max_behind = 0.0
    progress: list[tuple[float, int]] = [(start_at, 0)]
    next_progress = start_at + 0.05
    while time.monotonic() < start_at:
        time.sleep(min(0.005, max(start_at - time.monotonic(), 0)))
    i = 0
    while i < n:
        now = time.monotonic()
        due = (now - start_at) * rate
        j = min(bisect.bisect_right(cumulative, due, lo=i), i + 2000)
        if j == i:
            wait = start_at + cumulative[i] / rate - now
            time.sleep(min(max(wait, 0.0), 0.005))
            continue
        max_behind = max(max_behind, now - (start_at + cumulative[j - 1] / rate))
        sock.sendall(b"".join(commands[i:j]))
        i = j
        got, bad = _drain(sock, block=False)
        replies += got
        errors += bad
        if now >= next_progress:
            progress.append((now, cumulative[i - 1]))
            next_progress = now + 0.05
    progress.append((time.monotonic(), total))
    while replies < n:
        got, bad = _drain(sock, block=True)
        replies += got
        errors += bad
    return PublishResult(
        events=total, messages=n, nbytes=batch.nbytes, started=start_at,
        last_ack=time.monotonic(), max_behind=max_behind, errors=errors,
        progress=tuple(progress),
    )


def _drain(sock: socket.socket, *, block: bool) -> tuple[int, int]:
    """Read PUBLISH replies (one line each); returns (replies, error replies)."""
    replies = errors = 0
    flags = 0 if block else socket.MSG_DONTWAIT
    while True:
        try:
            data = sock.recv(1 << 20, flags)
        except (BlockingIOError, InterruptedError):
            return replies, errors
        if not data:
            raise ConnectionError("redis closed the publisher connection")
        replies += data.count(b"\n")
        errors += data.count(b"-ERR")
        if block:
            return replies, errors
        flags = socket.MSG_DONTWAIT


def publisher_main(
    conn: Connection, host: str, port: int, config: StreamConfig, cpus: set[int]
) -> None:
    """A publisher process: generate on request, publish on request, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    generator = StreamGenerator(load_templates(), config)
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    batch = Batch()
    while True:
        command, *args = conn.recv()
        if command == "generate":
            started = time.monotonic()
            batch = generator.take(int(args[0]), final=bool(args[1]))
            conn.send(("ready", batch.events, time.monotonic() - started))
        elif command == "publish":
            conn.send(("done", publish(sock, batch, float(args[1]), float(args[0]))))
            batch = Batch()
        else:
            sock.close()
            conn.send(("bye",))
            return


class Publishers:
    """A set of publisher processes, each owning one shard of the stream."""

    def __init__(
        self, host: str, port: int, configs: Sequence[StreamConfig], cpus: set[int]
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._started = 0.0
        for config in configs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=publisher_main, args=(child, host, port, config, cpus), daemon=True
            )
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def generate(self, events: int, *, final: bool = False) -> tuple[int, float]:
        """Every shard pre-generates its share; returns (events, slowest seconds)."""
        share = -(-events // len(self._conns))
        for conn in self._conns:
            conn.send(("generate", share, final))
        replies = [conn.recv() for conn in self._conns]
        return sum(r[1] for r in replies), max(r[2] for r in replies)

    def start(self, rate: float, delay: float = 0.3) -> float:
        """Start publishing the generated batches at `rate` events/s in all; returns when."""
        start_at = time.monotonic() + delay
        for conn in self._conns:
            conn.send(("publish", start_at, rate / len(self._conns)))
        self._started = start_at
        return start_at

    def collect(self) -> Published:
        """Wait until every publisher has written its batch and had every reply."""
        return Published(self._started, tuple(conn.recv()[1] for conn in self._conns))

    def close(self) -> None:
        """Stop every publisher process (by its pid)."""
        for conn in self._conns:
            with contextlib.suppress(OSError, EOFError):
                conn.send(("stop",))
                conn.recv()
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


@dataclass(frozen=True)
class Published:
    """The publishers' results for one batch, summed."""

    start: float
    results: tuple[PublishResult, ...]

    @property
    def events(self) -> int:
        """Events published."""
        return sum(r.events for r in self.results)

    @property
    def end(self) -> float:
        """Monotonic time of the last reply from Redis."""
        return max(r.last_ack for r in self.results)

    @property
    def rate(self) -> float:
        """Achieved events per second, all publishers together."""
        return self.events / max(self.end - self.start, 1e-9)

    @property
    def messages(self) -> int:
        """PUBLISH commands written."""
        return sum(r.messages for r in self.results)

    @property
    def mbytes(self) -> float:
        """Megabytes written."""
        return sum(r.nbytes for r in self.results) / 1e6

    @property
    def errors(self) -> int:
        """Error replies from Redis."""
        return sum(r.errors for r in self.results)

    def published_by(self, at: float) -> float:
        """Events written by monotonic time `at`."""
        return sum(r.published_by(at) for r in self.results)


# -- the exporter process and what it exposes ----------------------------------------------


Sample = tuple[str, dict[str, str], float]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed /metrics page."""

    def __init__(self, text: str) -> None:
        self.samples: list[Sample] = []
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match is None or line.startswith("#"):
                continue
            labels = dict(_LABEL.findall(match.group(2) or ""))
            self.samples.append((match.group(1), labels, float(match.group(3))))

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`."""
        return sum(
            v for n, lab, v in self.samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    @property
    def received(self) -> int:
        """celery_exporter_events_received_total."""
        return int(self.value("celery_exporter_events_received_total"))

    @property
    def lost(self) -> int:
        """celery_exporter_events_lost_total."""
        return int(self.value("celery_exporter_events_lost_total"))

    @property
    def reconnects(self) -> int:
        """celery_exporter_event_stream_reconnects_total."""
        return int(self.value("celery_exporter_event_stream_reconnects_total"))

    @property
    def refreshed_at(self) -> float:
        """When the snapshot behind this page was built (Unix time)."""
        return self.value("celery_exporter_last_refresh_timestamp_seconds")

    @property
    def retained(self) -> int:
        """Completed plus failed jobs retained, over every queue."""
        return int(
            self.value("celery_queue_jobs", status="completed")
            + self.value("celery_queue_jobs", status="failed")
        )


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def process_cpu(pids: Iterable[int]) -> tuple[float, float]:
    """User and system CPU seconds used so far by these processes (gone ones count 0)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (all its threads)."""
    return sum(process_cpu([pid]))


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def core_busy_seconds(cpus: set[int]) -> float:
    """Busy (non-idle) seconds of the given cores since boot, from /proc/stat."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(v) for v in values[:8]]
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / CLK_TCK


def wait_quiet(cpus: set[int], *, limit: float = 0.15, timeout: float = 30.0) -> float:
    """Wait (at most `timeout` s) until other processes leave `cpus` mostly idle.

    Returns the busy share of the last 0.5 s window; the machine may be shared.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = core_busy_seconds(cpus)
        time.sleep(0.5)
        busy = (core_busy_seconds(cpus) - before) / (0.5 * max(len(cpus), 1))
        if busy <= limit or time.monotonic() >= deadline:
            return busy


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Exporter:
    """The real `celery-jobs-exporter serve` process (gunicorn arbiter + one worker)."""

    def __init__(
        self,
        broker_url: str,
        *,
        cpus: set[int] | None = None,
        extra_args: Sequence[str] = (),
        refresh_interval: float = 1.0,
    ) -> None:
        self.port = find_free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="bench-exporter-"))
        self.log_path = self._dir / "exporter.log"
        command = [
            str(EXPORTER_BIN), "serve", "--broker-url", broker_url,
            "--listen-address", f"127.0.0.1:{self.port}",
            "--refresh-interval", str(refresh_interval), *extra_args,
        ]
        if cpus:
            command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
        self.command = command
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.worker_pid = self._wait_ready()

    @property
    def pid(self) -> int:
        """The serve (gunicorn arbiter) process."""
        return self._proc.pid

    def _wait_ready(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"exporter exited early:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                page = self.metrics(timeout=1.0)
                if page.value("celery_exporter_source_up", source="events") == 1:
                    workers = children(self.pid)
                    if len(workers) == 1:
                        return workers[0]
            time.sleep(0.2)
        raise TimeoutError(f"exporter not ready after {timeout}s:\n{self.log_tail()}")

    def metrics(self, timeout: float = 5.0) -> Metrics:
        """GET /metrics and parse it."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Metrics(response.read().decode())

    def check_alive(self) -> None:
        """Raise with the log's tail if the exporter has exited."""
        if self._proc.poll() is not None:
            raise RuntimeError(f"exporter exited ({self._proc.returncode}):\n{self.log_tail()}")

    def process_cpu(self) -> tuple[float, float]:
        """User and system CPU seconds of the gunicorn arbiter and its workers so far."""
        return process_cpu([self.pid, *children(self.pid)])

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def current_worker(self) -> int | None:
        """The gunicorn worker's pid now (it changes if gunicorn restarted it)."""
        workers = children(self.pid)
        return workers[0] if len(workers) == 1 else None

    def alive(self) -> bool:
        """The serve process and its worker both run."""
        return self._proc.poll() is None and pid_alive(self.worker_pid)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the exporter's log."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def log_count(self, needle: str) -> int:
        """Lines of the exporter's log that contain `needle`."""
        text = self.log_path.read_text(errors="replace")
        return sum(needle in line for line in text.splitlines())

    def disconnected_seconds(self) -> float:
        """Seconds the exporter spent without an event subscription, from its /metrics."""
        return self.metrics().value("celery_exporter_event_stream_disconnected_seconds_total")

    def stop(self) -> None:
        """SIGTERM the serve process (gunicorn stops its worker), SIGKILL if it hangs."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if pid_alive(self.worker_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker_pid, signal.SIGKILL)
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def wait_drained(
    exporter: Exporter, expected: int, *, timeout: float = 30.0, quiet: float = 3.0
) -> tuple[Metrics, float]:
    """Poll /metrics until every event is counted or the count stops moving; returns (page, s)."""
    started = time.monotonic()
    page = exporter.metrics()
    last, changed = page.received, started
    while page.received < expected and time.monotonic() - started < timeout:
        if time.monotonic() - changed >= quiet:
            break
        time.sleep(0.25)
        page = exporter.metrics()
        if page.received != last:
            last, changed = page.received, time.monotonic()
    return page, changed - started


# -- the private Redis and CPU placement ---------------------------------------------------


def cpu_split() -> tuple[set[int], set[int]]:
    """(exporter cpus, everything else): the exporter gets the first allowed core alone."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return set(allowed), set(allowed)
    return {allowed[0]}, set(allowed[1:])


@contextlib.contextmanager
def private_redis(cpus: set[int], extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A redis-server of our own on a free loopback port, pinned to `cpus`."""
    server = RedisServer(extra_args=list(extra_args))
    try:
        if server.pid is not None and cpus:
            os.sched_setaffinity(server.pid, cpus)
        yield server
    finally:
        server.cleanup()


def redis_log_count(server: RedisServer, needle: str) -> int:
    """Lines of the Redis log that contain `needle`."""
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(needle in line for line in text.splitlines())


# -- output ------------------------------------------------------------------------------


def exporter_revision() -> str:
    """The git commit of the exporter under test, and whether exporter/ has local changes."""
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "exporter")
    return f"{commit}{' + uncommitted changes in exporter/' if dirty else ''}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class WrkReport:
    """The numbers of one `wrk --latency` report."""

    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    transfer: str
    errors: str  # wrk's error lines, or "none"
    failed: int  # non-2xx/3xx responses plus socket errors


_WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _WRK_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkReport:
    """Parse the report of `wrk --latency`."""
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.M))
    latency = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    requests = re.search(r"^\s+(\d+) requests in", output, re.M)
    transfer = re.search(r"^Transfer/sec:\s+(\S+)", output, re.M)
    if not ({"50", "90", "99"} <= percentiles.keys() and latency and rps and requests and transfer):
        raise ValueError(f"cannot parse wrk output:\n{output}")
    error_lines = [
        line.strip() for line in output.splitlines()
        if "Socket errors" in line or "Non-2xx" in line
    ]
    failed = sum(int(n) for line in error_lines for n in re.findall(r"\d+", line.split(":", 1)[1]))
    return WrkReport(
        requests_per_second=float(rps.group(1)),
        p50_ms=_wrk_ms(percentiles["50"]),
        p90_ms=_wrk_ms(percentiles["90"]),
        p99_ms=_wrk_ms(percentiles["99"]),
        max_ms=_wrk_ms(latency.group(1)),
        requests=int(requests.group(1)),
        transfer=transfer.group(1) + "/s",
        errors="; ".join(error_lines) or "none",
        failed=failed,
    )


def add_exporter_options(parser: argparse.ArgumentParser) -> None:
    """The flags every event-stream benchmark takes: extra `serve` arguments, pinning."""
    parser.add_argument("--exporter-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `serve`, repeatable "
                        "(e.g. --exporter-arg=--no-history)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the exporter and the publishers to separate cores")


def parse_count(text: str) -> int:
    """`200k`, `1.5M` or `1500000` as an integer."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)
