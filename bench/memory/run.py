"""Memory of the real exporter process as events accumulate: RSS versus retained jobs.

One `celery-jobs-exporter serve` (default retention: 1000 completed + 5000 failed jobs
per queue) subscribes to a private redis-server; publisher processes replay a realistic
stream built from the captured payloads (10 queues, 20 task names, 10% failures that
carry the captured tracebacks) at a rate the exporter keeps up with. At each checkpoint
the benchmark waits until every event is counted, then reads the gunicorn worker's
VmRSS and the retained jobs (celery_queue_jobs completed + failed) from /metrics.

Usage (repo root): .venv/bin/python -m bench.memory [--checkpoints 200k,1M,1.5M]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.events.exporter import (
    Counts,
    add_exporter_options,
    exporter_env,
    start_exporter,
    wait_drained,
)
from bench.events.publishers import Publishers
from bench.events.stream import StreamConfig
from testkit.procs import cpu_split, memory_mb, wait_quiet
from testkit.redis_server import RedisServer
from testkit.report import exporter_revision, parse_count, table

TARGET_MB = 150.0
COMPLETED_RETENTION = 1000
FAILED_RETENTION = 5000
HEADERS = (
    "events", "published ev/s", "counted %", "completed", "failed", "retained", "RSS MB",
    "RSS - start", "KB/retained job", "Δretained", "ΔRSS MB", "peak MB", "lost",
    "reconnects",
)


@dataclass(frozen=True)
class Checkpoint:
    """Figures after one checkpoint."""

    events: int
    rate: float
    page: Counts
    rss: float
    peak: float

    @property
    def completed(self) -> int:
        """Completed jobs retained."""
        return int(self.page.value("celery_queue_jobs", status="completed"))

    @property
    def failed(self) -> int:
        """Failed jobs retained."""
        return int(self.page.value("celery_queue_jobs", status="failed"))


def rows(start_rss: float, points: list[Checkpoint]) -> list[list[object]]:
    """The table rows, with growth per retained job and per added job."""
    out: list[list[object]] = [
        ["start", "", "", 0, 0, 0, f"{start_rss:.1f}", "+0.0", "", "", "", "", "", ""]
    ]
    previous: Checkpoint | None = None
    for point in points:
        retained = point.page.retained
        grown = point.rss - start_rss
        if previous is None:
            added, delta = f"{retained:+,}", f"{grown:+.1f}"
        else:
            added = f"{retained - previous.page.retained:+,}"
            delta = f"{point.rss - previous.rss:+.1f}"
        out.append([
            f"{point.events:,}",
            f"{point.rate:,.0f}",
            f"{100 * point.page.received / point.events:.1f}",
            f"{point.completed:,}",
            f"{point.failed:,}",
            f"{retained:,}",
            f"{point.rss:.1f}",
            f"{grown:+.1f}",
            f"{1024 * grown / retained:.2f}" if retained else "",
            added,
            delta,
            f"{point.peak:.1f}",
            f"{point.page.lost:,}",
            point.page.reconnects,
        ])
        previous = point
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="200k,1M,1.5M",
                        help="cumulative event counts to measure at (default %(default)s)")
    parser.add_argument("--rate", default="20k",
                        help="publish rate in events/s (default %(default)s)")
    parser.add_argument("--queues", type=int, default=10,
                        help="queues the tasks spread over (default %(default)s)")
    parser.add_argument("--failure-ratio", type=float, default=0.1,
                        help="share of tasks that fail (default %(default)s)")
    parser.add_argument("--unique-tracebacks", action="store_true",
                        help="make every traceback distinct (the task id in its last line), "
                        "so the exporter cannot share one copy between failures")
    parser.add_argument("--publishers", type=int, default=0,
                        help="publisher processes (0: one per 100k events/s)")
    add_exporter_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Publish up to each checkpoint, measure, and print the table."""
    args = parse_args(argv)
    checkpoints = sorted(parse_count(c) for c in args.checkpoints.split(",") if c.strip())
    rate = float(parse_count(args.rate))
    exporter_cpus, other_cpus = cpu_split() if not args.no_pin else (set(), set())
    shards = args.publishers if args.publishers > 0 else max(1, math.ceil(rate / 100_000))
    full = args.queues * (COMPLETED_RETENTION + FAILED_RETENTION)
    print(f"exporter under test: commit {exporter_revision()}")
    print(
        f"exporter: celery-jobs-exporter serve --refresh-interval 1 (default retention "
        f"{COMPLETED_RETENTION} completed + {FAILED_RETENTION} failed per queue, i.e. at most "
        f"{full:,} jobs over {args.queues} queues), "
        f"{'taskset -c ' + ','.join(map(str, sorted(exporter_cpus))) if exporter_cpus else ''}; "
        f"{rate:,.0f} events/s; {args.failure_ratio:.0%} failed with captured tracebacks"
        f"{' made unique per task' if args.unique_tracebacks else ''}"
        f"{'; serve ' + ' '.join(args.exporter_arg) if args.exporter_arg else ''}"
        f"{'; env ' + ' '.join(args.exporter_env) if args.exporter_env else ''}",
        flush=True,
    )
    with RedisServer(cpus=other_cpus) as redis:
        configs = [
            StreamConfig(
                rate=rate, shard=i, shards=shards, queues=args.queues,
                failure_ratio=args.failure_ratio, unique_tracebacks=args.unique_tracebacks,
            )
            for i in range(shards)
        ]
        pubs = Publishers(redis.host, redis.port, configs, other_cpus)
        try:
            exporter, worker = start_exporter(
                redis.url, cpus=exporter_cpus, extra_args=args.exporter_arg,
                env=exporter_env(args.exporter_env),
            )
            with exporter:
                time.sleep(2.0)
                start_rss, _ = memory_mb(worker)
                points: list[Checkpoint] = []
                done = 0
                for target in checkpoints:
                    generated, seconds = pubs.generate(
                        target - done, final=target == checkpoints[-1]
                    )
                    print(f"  {done:,} -> {target:,} events: generated {generated:,} in "
                          f"{seconds:.1f}s, publishing ...", flush=True)
                    if exporter_cpus:
                        wait_quiet(exporter_cpus, timeout=10.0)
                    pubs.start(rate)
                    published = pubs.collect()
                    done += published.events
                    page, _ = wait_drained(exporter, done)
                    rss, peak = memory_mb(worker)
                    points.append(Checkpoint(done, published.rate, page, rss, peak))
                alive = exporter.alive(worker) and exporter.current_worker() == worker
        finally:
            pubs.close()
    print()
    print(table(HEADERS, rows(start_rss, points)))
    last = points[-1]
    fill_tasks = args.queues * FAILED_RETENTION / max(args.failure_ratio, 1e-9)
    print(f"""
counted %: celery_exporter_events_received_total / events published so far
retained: celery_queue_jobs{{status="completed"}} + {{status="failed"}}, summed over queues
KB/retained job: (RSS - RSS at start) / retained jobs; Δretained, ΔRSS: change since the
  previous checkpoint (once retention is full, RSS should stay flat)
retention is full at {full:,} jobs: failed jobs fill it after \
{fill_tasks:,.0f} tasks (~{4 * fill_tasks:,.0f} events)
exporter alive with the same worker throughout: {'yes' if alive else 'NO'}
final RSS {last.rss:.1f} MB: {'under' if last.rss < TARGET_MB else 'OVER'} the {TARGET_MB:.0f} MB \
target""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
