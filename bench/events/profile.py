"""Where the exporter's CPU goes per event, in-process: no Redis, no HTTP, one thread.

The synthetic stream of `bench.events` (`stream.py`) is turned into the raw bytes Redis
sends a pattern subscriber (RESP ``pmessage`` replies) and fed, in reads of
`--read-bytes` as the socket would return them, through the exporter's own hot path:
`PubSubReplies` (hiredis), `decode_batch` (envelope, base64, body) and
`TaskTracker.apply_batch`. Each stage is timed over the whole stream on its own, in
CPU time, best of `--repeat`; the last row times the whole path as `EventStream` runs it.

The process is made to look like the exporter's: the modules `serve` loads are
imported and the tracker starts with its retention full (10 queues x 1000 completed +
5000 failed jobs), so the cyclic GC has a realistic heap to walk. Each stage runs with
the GC as Python sets it, with `gc.freeze()` after start-up, and with the GC off.

Usage (repo root): .venv/bin/python -m bench.events.profile [--events 200k] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hiredis

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.events.stream import StreamConfig, StreamGenerator, load_templates, queue_names
from exporter.core.taskstats import TaskStats
from exporter.core.tracker import TaskTracker
from exporter.model import jobs as job_model
from exporter.model.jobs import Job, RetentionLimits, pack_traceback
from exporter.protocol import events as event_protocol
from exporter.protocol.events import decode_batch
from exporter.sources.events import RECV_BYTES, PubSubReplies
from testkit.report import parse_count, table

PATTERN = b"/0.celeryev/*"
GC_MODES = ("on", "frozen", "off")


def pmessages(events: int, *, unique_tracebacks: bool = False) -> tuple[bytes, int]:
    """The raw RESP a pattern subscriber reads for `events` events of the stream."""
    config = StreamConfig(rate=50_000, unique_tracebacks=unique_tracebacks)
    batch = StreamGenerator(load_templates(), config).take(events, final=True)
    reader = hiredis.Reader()
    parts = []
    for command in batch.commands:
        reader.feed(command)
        _, channel, data = reader.gets()
        parts.append(b">4\r\n$8\r\npmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(PATTERN), PATTERN, len(channel), channel, len(data), data,
        ))
    return b"".join(parts), batch.events


def chunks(raw: bytes, size: int) -> list[bytes]:
    """The stream as successive socket reads of at most `size` bytes."""
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def split(reads: list[bytes]) -> list[list[bytes]]:
    """The payloads each read completes, as the reader hands them to decode_batch."""
    replies = PubSubReplies()
    return [payloads for data in reads if (payloads := replies.split(data))]


def retained_jobs(limits: RetentionLimits, queues: int = 10) -> list[Job]:
    """A full retention of finished jobs (failed ones with a packed traceback), newest first."""
    traceback = "Traceback (most recent call last):\n" + "  File \"app.py\", line 1\n" * 30
    jobs = []
    for q, queue in enumerate(queue_names(queues)):
        for state, count in (("succeeded", limits.completed), ("failed", limits.failed)):
            for i in range(count):
                job = Job(f"{q}-{state}-{i:08d}-0000-0000-000000000000")
                job.name, job.queue, job.state = "app.tasks.sync_report", queue, state
                job.args, job.kwargs, job.hostname = "(1, 2)", "{}", "celery@worker-01"
                job.sent_at = job.received_at = job.started_at = job.finished_at = 1e9 + i
                if state == "failed":
                    job.failures = [(f"ValueError('{i}')", pack_traceback(traceback + str(i)))]
                else:
                    job.result = "42"
                jobs.append(job)
    return jobs


class Trackers:
    """Fresh trackers configured as `serve` makes them, each with its retention full."""

    def __init__(self, prefill: bool) -> None:
        self.limits = RetentionLimits()
        self._prefill = retained_jobs(self.limits) if prefill else []

    def make(self) -> TaskTracker:
        """A tracker holding the prefilled jobs (shared between trackers: they are read only)."""
        tracker = TaskTracker(
            limits=self.limits,
            stats=TaskStats(
                max_task_names=1000,
                runtime_buckets=(0.01, 0.1, 1, 10, 60, 300),
                queue_wait_buckets=(0.01, 0.1, 1, 10, 60, 300),
            ),
        )
        tracker.restore(self._prefill)
        return tracker


def timed(run: Callable[[], Any]) -> float:
    """CPU seconds of one call (process time: what `µs CPU/ev` in the benchmark counts)."""
    started = time.process_time_ns()
    run()
    return (time.process_time_ns() - started) / 1e9


def stages(reads: list[bytes], events: int, trackers: Trackers) -> list[tuple[str, float]]:
    """CPU seconds of each stage, each run over the whole stream."""
    batches = split(reads)
    payloads = [p for batch in batches for p in batch]
    envelopes: list[Any] = []
    out: list[tuple[str, float]] = []

    def envelope() -> None:  # msgspec reads the envelope and decodes the base64 body
        decode = event_protocol._BASE64_ENVELOPE.decode
        envelopes.extend(decode(p) for p in payloads)

    def body() -> None:
        decode = event_protocol._BODY.decode
        for each in envelopes:
            decode(each.body)

    def whole_decode() -> None:
        for batch in batches:
            decode_batch(batch)

    per_batch = [decode_batch(batch) for batch in batches]
    packs = job_model._pack
    pack_seconds = 0.0

    def counting_pack(text: str) -> bytes:
        nonlocal pack_seconds
        started = time.process_time_ns()
        try:
            return packs(text)
        finally:
            pack_seconds += (time.process_time_ns() - started) / 1e9

    def apply() -> None:
        tracker = trackers.make()
        packs.cache_clear()
        started = time.process_time_ns()
        for batch_events, bad in per_batch:
            tracker.apply_batch(batch_events, bad)
        out.append(("tracker apply_batch", (time.process_time_ns() - started) / 1e9))
        assert tracker.view().events_received == events

    def whole() -> None:
        tracker = trackers.make()
        packs.cache_clear()
        replies = PubSubReplies()
        started = time.process_time_ns()
        for data in reads:
            if batch := replies.split(data):
                tracker.apply_batch(*decode_batch(batch))
        out.append(("whole path (parse+decode+apply)", (time.process_time_ns() - started) / 1e9))
        assert tracker.view().events_received == events

    out.append(("recv + hiredis parse", timed(lambda: split(reads))))
    out.append(("envelope + base64 body", timed(envelope)))
    out.append(("body decode", timed(body)))
    out.append(("decode_batch (both, and the loop)", timed(whole_decode)))
    job_model._pack = counting_pack  # type: ignore[assignment]
    try:
        apply()
    finally:
        job_model._pack = packs
    out.append(("  of which traceback compression", pack_seconds))
    whole()
    return out


def set_gc(mode: str) -> None:
    """The cyclic GC as Python sets it (`on`), on with the start-up heap frozen, or off."""
    gc.unfreeze()
    gc.enable()
    gc.collect()
    if mode == "frozen":
        gc.freeze()
    elif mode == "off":
        gc.disable()


def main(argv: list[str] | None = None) -> int:
    """Build the stream, time each stage in each GC mode, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="200k", help="events in the stream (default 200k)")
    parser.add_argument("--read-bytes", type=int, default=RECV_BYTES,
                        help="bytes per socket read (default %(default)s: the reader's "
                        "buffer, what it reads while it is behind)")
    parser.add_argument("--unique-tracebacks", action="store_true",
                        help="every failure's traceback distinct (no sharing, no cache hits)")
    parser.add_argument("--no-prefill", action="store_true",
                        help="start each tracker empty instead of with its retention full")
    parser.add_argument("--bare", action="store_true",
                        help="do not import the modules `serve` loads (a smaller heap)")
    parser.add_argument("--gc", default=",".join(GC_MODES),
                        help="GC modes to run, of %(default)s")
    parser.add_argument("--cprofile", action="store_true",
                        help="also print cProfile's top functions of the whole path")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per stage; the best is reported (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.bare:
        import exporter.serving.server  # noqa: F401  (the heap of a real `serve` worker)
    started = time.monotonic()
    raw, events = pmessages(parse_count(args.events), unique_tracebacks=args.unique_tracebacks)
    reads = chunks(raw, args.read_bytes)
    trackers = Trackers(prefill=not args.no_prefill)
    modes = [m for m in args.gc.split(",") if m in GC_MODES]
    print(f"{events:,} events, {len(raw) / 1e6:.1f} MB of RESP, {len(reads):,} reads of "
          f"{args.read_bytes:,} bytes (built in {time.monotonic() - started:.1f}s); "
          f"{len(trackers.make().store):,} jobs retained at start; "
          f"{len(gc.get_objects()):,} objects tracked by the GC")
    columns = []
    for mode in modes:
        set_gc(mode)
        runs = [stages(reads, events, trackers) for _ in range(args.repeat)]
        columns.append([
            (name, min(run[i][1] for run in runs)) for i, (name, _) in enumerate(runs[0])
        ])
    set_gc("on")
    print(table(
        ("stage", *(f"µs/event (gc {m})" for m in modes)),
        [
            [column[0][0], *(f"{1e6 * seconds / events:.2f}" for _, seconds in column)]
            for column in zip(*columns, strict=True)
        ],
    ))
    if args.cprofile:
        batches = split(reads)
        tracker = trackers.make()
        profiler = cProfile.Profile()
        profiler.enable()
        for batch in batches:
            tracker.apply_batch(*decode_batch(batch))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
