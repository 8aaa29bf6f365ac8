"""Refresh cost at growing broker sizes, measured in-process against a private Redis.

Each scenario gets its own redis-server, filled with queues x messages plus unacked
entries. Then `BrokerSource.read` is timed N times per scenario after a warm-up,
with Redis's own counters (INFO stats and commandstats) sampled around every read,
and the full `Refresher.refresh_once` (snapshot build and render, as the refresher
thread runs it) is timed N times too; the scenarios take turns, read by read.
Between two refreshes some unacked entries are acked and new ones added, as on a
busy broker, so the HMGET and parse path runs every time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.refresh.fill import ack, add_unacked, fill_queues
from exporter.config.settings import Settings
from exporter.core.history import JobHistory
from exporter.core.refresher import Refresher
from exporter.model.snapshot import Snapshot
from exporter.prometheus.render import RenderedMetrics, render
from exporter.protocol.keys import TransportOptions
from exporter.serving.runtime import make_tracker
from exporter.sources.broker import BrokerSource
from exporter.sources.redis import connect, parse_endpoint
from exporter.sources.workers import WorkersSource, make_inspect_app
from testkit.exposition import parse_metrics
from testkit.redis_server import RedisServer

DEFAULT_SCENARIOS = "a:10x1000,b:1000x1000,c:1000x10000"
#: Binding tables are SCANned on the first read only, as within one discovery interval.
DISCOVERY_INTERVAL = 3600.0
MAX_RATIO = 100.0

Counters = dict[str, float]


@dataclass(frozen=True)
class Scenario:
    """A broker size: how many queues, and messages in each."""

    name: str
    queues: int
    per_queue: int

    @property
    def messages(self) -> int:
        """Messages in all queues."""
        return self.queues * self.per_queue


@dataclass
class Result:
    """What one scenario measured (times in seconds, Redis figures per read)."""

    scenario: Scenario
    fill_seconds: float = 0.0
    used_memory: str = ""
    first_read: float = 0.0
    first_round_trips: int = 0
    reads: list[float] = field(default_factory=list)
    read_cpu: list[float] = field(default_factory=list)
    round_trips: set[int] = field(default_factory=set)
    redis: Counters = field(default_factory=dict)
    unacked: int = 0
    delayed: int = 0
    refreshes: list[float] = field(default_factory=list)
    renders: list[float] = field(default_factory=list)
    series: int = 0


class RedisCounters:
    """Samples INFO stats + commandstats; deltas exclude the sampling's own cost."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        pairs = []
        for _ in range(5):
            first = self.sample()
            pairs.append(_subtract(self.sample(), first))
        keys = set().union(*pairs)
        self._overhead = {k: statistics.median(p.get(k, 0.0) for p in pairs) for k in keys}

    def sample(self) -> Counters:
        """The counters now."""
        info: dict[str, Any] = self._client.execute_command(  # type: ignore[no-untyped-call]
            "INFO", "stats", "commandstats"
        )
        counters: Counters = {
            "commands": float(info["total_commands_processed"]),
            "bytes_out": float(info["total_net_output_bytes"]),
            "bytes_in": float(info["total_net_input_bytes"]),
        }
        for key, value in info.items():
            if key.startswith("cmdstat_") and isinstance(value, dict):
                counters[f"calls:{key[8:]}"] = float(value["calls"])
                counters[f"usec:{key[8:]}"] = float(value["usec"])
        return counters

    def delta(self, before: Counters, after: Counters) -> Counters:
        """What happened between two samples, minus the cost of sampling (INFO itself)."""
        raw = _subtract(after, before)
        return {
            k: v - self._overhead.get(k, 0.0)
            for k, v in raw.items()
            if k not in ("calls:info", "usec:info")
        }


def _subtract(after: Counters, before: Counters) -> Counters:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


class Churn:
    """Acks the oldest unacked entries and adds as many new ones, between two reads."""

    def __init__(self, client: redis.Redis, scenario: Scenario, count: int, per: int) -> None:
        self._client = client
        self._scenario = scenario
        self._per = per
        self._added = count
        self._tags = add_unacked(client, count, scenario.queues)

    def step(self) -> None:
        """One round of churn."""
        if not self._per:
            return
        ack(self._client, self._tags[: self._per])
        fresh = add_unacked(self._client, self._per, self._scenario.queues, start=self._added)
        self._tags = self._tags[self._per :] + fresh
        self._added += self._per


class Stand:
    """One scenario's filled Redis, its reader, its refresher and what they measured."""

    def __init__(self, scenario: Scenario, args: argparse.Namespace) -> None:
        self.result = Result(scenario)
        self._args = args
        self._transport = TransportOptions()
        self.server = RedisServer()
        self._client = self.server.client()
        started = time.perf_counter()
        fill_queues(self._client, scenario.queues, scenario.per_queue)
        self._churn = Churn(self._client, scenario, args.unacked, args.churn)
        self.result.fill_seconds = time.perf_counter() - started
        self.result.used_memory = str(self._client.info("memory")["used_memory_human"])
        self._counters = RedisCounters(self._client)
        self._totals: Counters = {}
        self._source = BrokerSource(
            connect(parse_endpoint(self.server.url), self._transport), self._transport,
            discovery_interval=DISCOVERY_INTERVAL,
        )
        self._renders: list[float] = []
        self._latest: list[RenderedMetrics] = []
        self._refresher_client = connect(parse_endpoint(self.server.url), self._transport)
        self._refresher = self._build_refresher()

    def warm_up(self) -> None:
        """The first read (it SCANs for binding tables), then untimed reads and refreshes."""
        started = time.perf_counter()
        first = self._source.read()
        self.result.first_read = time.perf_counter() - started
        self.result.first_round_trips = first.round_trips
        for _ in range(self._args.warmup):
            self._source.read()
        for _ in range(self._args.warmup + 1):
            self._refresher.refresh_once()
        self._renders.clear()

    def timed_read(self) -> None:
        """Churn, then one read between two samples of Redis's counters."""
        self._churn.step()
        before = self._counters.sample()
        cpu, started = time.thread_time(), time.perf_counter()
        reading = self._source.read()
        self.result.reads.append(time.perf_counter() - started)
        self.result.read_cpu.append(time.thread_time() - cpu)
        delta = self._counters.delta(before, self._counters.sample())
        for key, value in delta.items():
            self._totals[key] = self._totals.get(key, 0.0) + value
        self.result.round_trips.add(reading.round_trips)
        self.result.unacked = len(reading.unacked)
        self.result.delayed = sum(1 for task in reading.unacked if task.eta is not None)

    def timed_refresh(self) -> None:
        """Churn, then one full refresh."""
        self._churn.step()
        started = time.perf_counter()
        self._refresher.refresh_once()
        self.result.refreshes.append(time.perf_counter() - started)

    def finish(self) -> Result:
        """Per-read averages of the Redis counters, render times and series."""
        reads = max(len(self.result.reads), 1)
        self.result.redis = {k: v / reads for k, v in self._totals.items()}
        self.result.renders = list(self._renders)
        if self._latest:
            self.result.series = len(parse_metrics(self._latest[0].text.decode()))
        return self.result

    def close(self) -> None:
        """Stop the refresher and the redis-server."""
        self._refresher.stop(timeout=1.0)
        self._refresher_client.close()
        self._client.close()
        self.server.cleanup()

    def _build_refresher(self) -> Refresher:
        """A Refresher wired as `exporter.serving.runtime` wires it, rendering every snapshot."""
        args, transport, url = self._args, self._transport, self.server.url
        settings = Settings(
            broker_url=url, transport=transport, inspect_timeout=args.inspect_timeout or 1.0
        )
        tracker = make_tracker(settings)
        workers = None
        if args.inspect_timeout:
            app = make_inspect_app(url, transport.as_kombu_options())
            workers = WorkersSource(app, args.inspect_timeout)
        client = self._refresher_client
        history = (
            JobHistory(client, settings.history_prefix, settings.retention)
            if settings.history else None
        )
        return Refresher(
            settings,
            BrokerSource(client, transport, discovery_interval=DISCOVERY_INTERVAL),
            workers, tracker, events_enabled=False, on_snapshot=self._on_snapshot,
            history=history,
        )

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        started = time.perf_counter()
        self._latest[:] = [render(snapshot)]
        self._renders.append(time.perf_counter() - started)


def measure(scenarios: Sequence[Scenario], args: argparse.Namespace) -> list[Result]:
    """Fill every scenario's Redis, then time reads and refreshes round-robin.

    Interleaving the scenarios spreads any other load on the machine over all of them
    alike, so their ratios stay meaningful on a busy host.
    """
    stands: list[Stand] = []
    try:
        for scenario in scenarios:
            print(f"filling ({scenario.name}) {scenario.queues} queues x {scenario.per_queue} "
                  "messages ...", file=sys.stderr, flush=True)
            stands.append(Stand(scenario, args))
        for stand in stands:
            stand.warm_up()
        print("timing ...", file=sys.stderr, flush=True)
        for _ in range(args.refreshes):
            for stand in stands:
                stand.timed_read()
        for _ in range(args.refreshes):
            for stand in stands:
                stand.timed_refresh()
        return [stand.finish() for stand in stands]
    finally:
        for stand in stands:
            stand.close()


def _ms(values: Sequence[float]) -> tuple[float, float, float]:
    return (
        statistics.fmean(values) * 1e3, statistics.median(values) * 1e3, max(values) * 1e3
    )


def render_report(results: Sequence[Result], args: argparse.Namespace) -> str:
    """The tables and the ratios."""
    workers = f"inspect timeout {args.inspect_timeout}s" if args.inspect_timeout else "none"
    out = [
        f"{args.refreshes} timed refreshes after {args.warmup} warm-up; {args.unacked} unacked "
        f"entries, {args.churn} acked and {args.churn} added between refreshes; "
        f"workers source: {workers}",
        f"machine before: {args.load_before}; after: {machine_load()}",
        "",
        "setup",
        f"{'':>2} {'queues':>6} {'messages':>10} {'fill s':>7} {'redis mem':>10} "
        f"{'1st read ms':>12} {'1st RT':>7} {'unacked':>8} {'delayed':>8}",
    ]
    for r in results:
        s = r.scenario
        out.append(
            f"{s.name:>2} {s.queues:>6} {s.messages:>10} {r.fill_seconds:>7.1f} "
            f"{r.used_memory:>10} {r.first_read * 1e3:>12.2f} {r.first_round_trips:>7} "
            f"{r.unacked:>8} {r.delayed:>8}"
        )
    out += [
        "",
        "BrokerSource.read (per read; Redis figures are INFO deltas)",
        f"{'':>2} {'queues':>6} {'messages':>10} {'mean ms':>8} {'p50 ms':>7} {'max ms':>7} "
        f"{'py CPU ms':>9} {'RT':>3} {'commands':>8} {'redis us':>9} {'bytes out':>10} "
        f"{'bytes in':>9}",
    ]
    for r in results:
        s = r.scenario
        mean, p50, top = _ms(r.reads)
        usec = sum(v for k, v in r.redis.items() if k.startswith("usec:"))
        trips = ",".join(str(t) for t in sorted(r.round_trips))
        out.append(
            f"{s.name:>2} {s.queues:>6} {s.messages:>10} {mean:>8.2f} {p50:>7.2f} {top:>7.2f} "
            f"{statistics.fmean(r.read_cpu) * 1e3:>9.2f} {trips:>3} "
            f"{r.redis.get('commands', 0):>8.0f} {usec:>9.0f} {r.redis.get('bytes_out', 0):>10.0f} "
            f"{r.redis.get('bytes_in', 0):>9.0f}"
        )
    out += ["", "Redis commands per read (INFO commandstats calls)"]
    for r in results:
        calls = sorted(
            (k[6:], v) for k, v in r.redis.items() if k.startswith("calls:") and round(v)
        )
        out.append(f"{r.scenario.name:>2} " + "  ".join(f"{k}={v:g}" for k, v in calls))
    out += [
        "",
        "Refresher.refresh_once (read + snapshot + render, as the refresher thread runs it)",
        f"{'':>2} {'queues':>6} {'messages':>10} {'mean ms':>8} {'p50 ms':>7} {'max ms':>7} "
        f"{'render ms':>10} {'series':>7}",
    ]
    for r in results:
        s = r.scenario
        mean, p50, top = _ms(r.refreshes)
        out.append(
            f"{s.name:>2} {s.queues:>6} {s.messages:>10} {mean:>8.2f} {p50:>7.2f} {top:>7.2f} "
            f"{statistics.fmean(r.renders) * 1e3:>10.2f} {r.series:>7}"
        )
    out.append("")
    out += _ratios(results)
    return "\n".join(out)


def _ratios(results: Sequence[Result]) -> list[str]:
    by_name = {r.scenario.name: r for r in results}
    lines = []
    pairs = [("b", "a", "more queues"), ("c", "b", "more messages per queue")]
    for top, base, what in pairs:
        if top not in by_name or base not in by_name:
            continue
        t, b = by_name[top], by_name[base]
        read = statistics.median(t.reads) / statistics.median(b.reads)
        cpu = statistics.median(t.read_cpu) / statistics.median(b.read_cpu)
        full = statistics.median(t.refreshes) / statistics.median(b.refreshes)
        cmds = t.redis.get("commands", 0) / max(b.redis.get("commands", 1), 1)
        queues = t.scenario.queues / b.scenario.queues
        messages = t.scenario.messages / b.scenario.messages
        verdict = ""
        if (top, base) == ("b", "a"):
            verdict = f"  [{'PASS' if read <= MAX_RATIO else 'FAIL'}: read ratio <= {MAX_RATIO:g}x]"
        lines.append(
            f"({top})/({base}) {what} ({queues:g}x queues, {messages:g}x messages): "
            f"read p50 {read:.1f}x (its CPU {cpu:.1f}x), full refresh p50 {full:.1f}x, "
            f"Redis commands {cmds:.1f}x"
            + verdict
        )
    return lines


def machine_load() -> str:
    """The 1-minute load average and, where the kernel reports it, CPU pressure (PSI)."""
    text = f"load average {os.getloadavg()[0]:.2f}"
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n")[0].split()
        text += f", CPU pressure {some[1].partition('=')[2]}% (avg10)"
    except (OSError, IndexError):
        pass
    return text


def parse_scenarios(text: str) -> list[Scenario]:
    """`name:QUEUESxPER_QUEUE,...` → scenarios."""
    scenarios = []
    for part in text.split(","):
        name, _, size = part.partition(":")
        queues, _, per_queue = size.partition("x")
        scenarios.append(Scenario(name, int(queues), int(per_queue)))
    return scenarios


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.refresh", description=__doc__)
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                        help="comma-separated NAME:QUEUESxMESSAGES_PER_QUEUE "
                        "(default: %(default)s)")
    parser.add_argument("--refreshes", type=int, default=20, help="timed refreshes (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed refreshes (default: 3)")
    parser.add_argument("--unacked", type=int, default=100,
                        help="entries in the unacked hash (default: 100)")
    parser.add_argument("--churn", type=int, default=10,
                        help="unacked entries acked and added between refreshes (default: 10)")
    parser.add_argument("--inspect-timeout", type=float, default=0.0,
                        help="give the Refresher a WorkersSource with this timeout "
                        "(no workers run; default 0: no workers source)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario and print the report."""
    args = parse_args(argv)
    args.load_before = machine_load()
    print(render_report(measure(parse_scenarios(args.scenarios), args), args))
    return 0

