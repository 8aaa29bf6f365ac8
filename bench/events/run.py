"""Event-stream throughput of the real exporter, one core, at fixed publish rates.

For each rate: a fresh `celery-jobs-exporter serve` (pinned with `taskset` to one core)
subscribes to a private redis-server; publisher processes on the other core(s) replay a
realistic stream built from the captured payloads at that rate for a fixed time. The
table says how much the exporter counted in real time and after draining, what it lost,
and its CPU and RSS. An overload run then checks that the exporter survives a rate it
cannot sustain.

Usage (repo root): .venv/bin/python -m bench.events [--rates 5k,10k] [--duration 10]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.events.exporter import (
    Counts,
    ScrapeProbe,
    add_exporter_options,
    counts,
    exporter_env,
    start_exporter,
    wait_drained,
)
from bench.events.publishers import Published, Publishers
from bench.events.stream import StreamConfig
from testkit.procs import core_busy_seconds, cpu_seconds, cpu_split, memory_mb, wait_quiet
from testkit.redis_server import RedisServer
from testkit.report import exporter_revision, parse_count, percentile, table

OVERLOAD_REDIS_ARGS = ("--client-output-buffer-limit", "pubsub 8mb 2mb 10")
REDIS_DROP_LINE = "scheduled to be closed ASAP for overcoming of output buffer limits"
HEADERS = (
    "target ev/s", "achieved ev/s", "events", "msgs", "real-time %", "rt-snap %",
    "drained %", "drain s", "missing", "lost", "reconnects", "CPU %", "µs CPU/ev",
    "core other %", "scrape p50 ms", "scrape p99 ms", "scrape max ms", "RSS MB", "peak MB",
    "alive", "restarts",
)


@dataclass(frozen=True)
class RunResult:
    """The figures of one rate."""

    target: float
    published: Published
    at_end: Counts
    snapshot_published: float
    drained: Counts
    drain_seconds: float
    cpu: float
    cpu_total: float
    core_other: float
    rss: float
    peak: float
    alive: bool
    metrics_answer: bool
    restarts: int
    stream_drops: int
    redis_drops: int
    disconnected: float
    scrapes: tuple[float, ...] = ()
    scrape_errors: int = 0

    def scrape_ms(self, share: float) -> str:
        """A percentile of the /metrics latencies while publishing, in ms ('' if none)."""
        if not self.scrapes:
            return ""
        ms = f"{1000 * percentile(self.scrapes, share):.1f}"
        return f"{ms} ({self.scrape_errors} errors)" if self.scrape_errors else ms

    def row(self) -> list[object]:
        """The table row."""
        events = self.published.events
        return [
            f"{self.target:,.0f}",
            f"{self.published.rate:,.0f}",
            f"{events:,}",
            f"{self.published.messages:,}",
            f"{100 * self.at_end.received / events:.1f}",
            f"{100 * self.at_end.received / max(self.snapshot_published, 1):.1f}",
            f"{100 * self.drained.received / events:.1f}",
            f"{self.drain_seconds:.1f}",
            f"{events - self.drained.received:,}",
            f"{self.drained.lost:,}",
            self.drained.reconnects,
            f"{100 * self.cpu:.0f}",
            f"{1e6 * self.cpu_total / max(self.drained.received, 1):.1f}",
            f"{100 * self.core_other:.0f}",
            self.scrape_ms(0.5),
            self.scrape_ms(0.99),
            self.scrape_ms(1.0),
            f"{self.rss:.0f}",
            f"{self.peak:.0f}",
            "yes" if self.alive and self.metrics_answer else "NO",
            self.restarts,
        ]


def publisher_count(requested: int, rate: float) -> int:
    """Publisher processes for a rate: as asked, or one per 100k events/s."""
    return requested if requested > 0 else max(1, math.ceil(rate / 100_000))


def run_rate(
    rate: float,
    duration: float,
    *,
    publishers: int,
    redis_args: tuple[str, ...] = (),
    drain_timeout: float = 30.0,
    pin: bool = True,
    settle: float = 20.0,
    exporter_args: tuple[str, ...] = (),
    exporter_env: dict[str, str] | None = None,
    scrape_interval: float = 0.1,
    cpus: tuple[set[int], set[int]] | None = None,
) -> RunResult:
    """One rate against a fresh Redis and a fresh exporter (`cpus`: exporter's, others')."""
    exporter_cpus, other_cpus = (cpus or cpu_split()) if pin else (set(), set())
    shards = publisher_count(publishers, rate)
    with RedisServer(extra_args=list(redis_args), cpus=other_cpus) as redis:
        pubs = Publishers(
            redis.host, redis.port,
            [StreamConfig(rate=rate, shard=i, shards=shards) for i in range(shards)],
            other_cpus,
        )
        try:
            pubs.generate(int(rate * duration), final=True)
            exporter, worker = start_exporter(
                redis.url, cpus=exporter_cpus, extra_args=exporter_args, env=exporter_env
            )
            with exporter:
                time.sleep(1.5)  # let the first refreshes settle
                if pin and settle > 0:
                    wait_quiet(exporter_cpus, timeout=settle)
                start_at = pubs.start(rate)
                time.sleep(max(start_at - time.monotonic(), 0.0))
                cpu0, core0 = cpu_seconds(worker), core_busy_seconds(exporter_cpus)
                with ScrapeProbe(exporter.base_url, scrape_interval) as probe:
                    published = pubs.collect()
                at_end = counts(exporter)
                cpu1, core1 = cpu_seconds(worker), core_busy_seconds(exporter_cpus)
                wall = time.monotonic() - start_at
                offset = time.time() - time.monotonic()
                snapshot_published = published.published_by(at_end.refreshed_at - offset)
                drained, drain_seconds = wait_drained(
                    exporter, published.events, timeout=drain_timeout
                )
                cpu2 = cpu_seconds(worker)
                rss, peak = memory_mb(worker)
                alive = exporter.alive(worker)
                try:
                    last = counts(exporter)
                    answers = True
                except httpx.HTTPError:
                    last, answers = drained, False
                current = exporter.current_worker()
                return RunResult(
                    target=rate,
                    published=published,
                    at_end=at_end,
                    snapshot_published=snapshot_published,
                    drained=drained,
                    drain_seconds=drain_seconds,
                    cpu=(cpu1 - cpu0) / wall,
                    cpu_total=cpu2 - cpu0,
                    core_other=max(core1 - core0 - (cpu1 - cpu0), 0.0) / wall,
                    rss=rss,
                    peak=peak,
                    alive=alive,
                    metrics_answer=answers,
                    restarts=0 if current == worker else 1,
                    stream_drops=exporter.log_count("event stream: connection lost"),
                    redis_drops=redis.log_count(REDIS_DROP_LINE),
                    disconnected=last.disconnected,
                    scrapes=tuple(probe.latencies),
                    scrape_errors=probe.errors,
                )
        finally:
            pubs.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5k,10k,20k,30k,40k",
                        help="comma-separated target rates in events/s (default %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of publishing per rate (default %(default)s)")
    parser.add_argument("--publishers", type=int, default=0,
                        help="publisher processes (0: one per 100k events/s)")
    parser.add_argument("--overload-rate", default="150k",
                        help="events/s of the overload run, 0 to skip (default %(default)s)")
    parser.add_argument("--overload-duration", type=float, default=10.0,
                        help="seconds of the overload run (default %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="most seconds to wait for the count to settle (default %(default)s)")
    parser.add_argument("--scrape-interval", type=float, default=0.1,
                        help="seconds between GETs of /metrics while publishing, timed for "
                        "the scrape columns (default %(default)s; 0: none)")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="before each rate, wait up to this many seconds for other "
                        "processes to leave the exporter's core idle (default %(default)s)")
    add_exporter_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every rate, then the overload run; print the tables."""
    args = parse_args(argv)
    rates = [parse_count(r) for r in args.rates.split(",") if r.strip()]
    exporter_cpus, other_cpus = cpu_split()
    pin = not args.no_pin
    if pin:  # this process too (it scrapes /metrics) stays off the exporter's core
        os.sched_setaffinity(0, other_cpus)
    print(f"exporter under test: commit {exporter_revision()}")
    print(
        f"exporter: celery-jobs-exporter serve --refresh-interval 1, "
        f"{'taskset -c ' + ','.join(map(str, sorted(exporter_cpus))) if pin else 'not pinned'}; "
        f"redis-server and publishers on cpu(s) {sorted(other_cpus) if pin else 'any'}; "
        f"{args.duration:g}s per rate; stream: 10 queues, 20 task names, 8 workers, 10% failed"
        f"{'; serve ' + ' '.join(args.exporter_arg) if args.exporter_arg else ''}"
        f"{'; env ' + ' '.join(args.exporter_env) if args.exporter_env else ''}",
        flush=True,
    )
    env = exporter_env(args.exporter_env)
    results = []
    for rate in rates:
        print(f"  running {rate:,} events/s ...", flush=True)
        results.append(run_rate(
            rate, args.duration, publishers=args.publishers,
            drain_timeout=args.drain_timeout, pin=pin, settle=args.settle,
            exporter_args=tuple(args.exporter_arg), exporter_env=env,
            scrape_interval=args.scrape_interval, cpus=(exporter_cpus, other_cpus),
        ))
    print()
    print(table(HEADERS, [r.row() for r in results]))
    print(LEGEND)
    overload = parse_count(args.overload_rate)
    if overload > 0:
        print(f"\n  overload run: {overload:,} events/s for {args.overload_duration:g}s, "
              f"redis-server {' '.join(repr(a) for a in OVERLOAD_REDIS_ARGS)} ...", flush=True)
        result = run_rate(
            overload, args.overload_duration, publishers=args.publishers,
            redis_args=OVERLOAD_REDIS_ARGS, drain_timeout=args.drain_timeout, pin=pin,
            settle=args.settle, exporter_args=tuple(args.exporter_arg), exporter_env=env,
            scrape_interval=args.scrape_interval, cpus=(exporter_cpus, other_cpus),
        )
        print()
        print(table(HEADERS, [result.row()]))
        print(
            f"overload: exporter process alive afterwards: {'yes' if result.alive else 'NO'}; "
            f"/metrics answered: {'yes' if result.metrics_answer else 'NO'}; "
            f"subscriber drops logged by redis: {result.redis_drops}; "
            f"'connection lost' lines in the exporter log: {result.stream_drops}, "
            f"{result.disconnected:.1f}s without a subscription; "
            f"events_lost_total {result.drained.lost:,}; "
            f"event_stream_reconnects_total {result.drained.reconnects}"
        )
    return 0


LEGEND = """
achieved ev/s: events published / (last Redis reply - scheduled start), all publishers
real-time %: celery_exporter_events_received_total read when publishing ended / published
rt-snap %:   the same count / events published by the time that snapshot was built
             (/metrics is a snapshot refreshed every 1 s, so it lags by up to ~1 s)
drained %:   the count once it stops moving (or max --drain-timeout s) / published
missing:     published - counted after draining; lost: celery_exporter_events_lost_total
CPU %:       user+sys of the gunicorn worker (the exporter) / wall time while publishing
µs CPU/ev:   the worker's CPU from start to drained / events counted (includes the
             refresher's fixed cost, which dominates at low rates)
core other %: other processes' CPU on the exporter's core meanwhile (machine noise)
scrape ms:   latency of GET /metrics, asked every --scrape-interval s while publishing
             (p50, p99, max), from the benchmark process on the other core(s)
RSS MB:      VmRSS of the gunicorn worker after draining; peak MB: its VmHWM
restarts:    1 if gunicorn replaced its worker during the run""".rstrip()


if __name__ == "__main__":
    raise SystemExit(main())
