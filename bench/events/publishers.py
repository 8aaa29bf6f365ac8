"""Publisher processes: each writes its shard of the stream to Redis at a fixed rate.

A publisher generates its share of the stream first (`stream.py`), as ready-made RESP
``PUBLISH`` commands, then writes them pipelined on a raw socket at a fixed rate
counted in events (a ``task.multi`` list of N events counts as N), and reads Redis's
replies as it goes.
"""

from __future__ import annotations

import bisect
import contextlib
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.events.stream import Batch, StreamConfig, StreamGenerator, load_templates


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
