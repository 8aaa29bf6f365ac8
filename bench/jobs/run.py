"""Jobs API of the real sidecar: paging cost at a million messages, memory per retained job.

Part 1, paging (`paging.py`): latency and Redis work per request for pages of paused
queues of 1,000,000 and 10,000 messages, then throughput under `wrk`. Part 2, memory
(`retention.py`): bytes of the sidecar's RSS per retained job, at the default retention
over 100 queues, and with 100 KB values (which must be truncated).

Usage (repo root): .venv/bin/python -m bench.jobs [--messages 1M] [--wrk-duration 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.jobs.paging import paging_benchmark
from bench.jobs.retention import memory_benchmark
from testkit.report import parse_count


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
