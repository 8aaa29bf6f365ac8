"""Job search latency over 60,000 retained jobs, measured in-process.

The snapshot is what the sidecar's tracker holds after 10 queues x 6,000 jobs
(half failed with Celery tracebacks; corpus.py), plus a few running and delayed jobs.
`JobSearch.search` (exporter/core/search.py) is timed directly, case by case, with
`limit` 10; then the same queries through the ASGI app (`create_app` with the search
route, over httpx.ASGITransport). Separately: the first search of the process (every
text built), the first search after each refresh (the texts carried over, the new
jobs' built), the memory the texts hold, and a scan of a 5,000-message list (in
memory: decoding only, no Redis). Exits 1 when a gated case's p99 reaches the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from bench.search.corpus import Corpus, Shape, account, list_messages, queue_name, source
from exporter.core.search import DEFAULT_MAX_SCAN, JobSearch
from exporter.model.readings import WaitingMessage
from exporter.model.search import SearchQuery, SearchResult
from exporter.model.snapshot import ExporterCounters, QueueState, Snapshot
from exporter.model.stats import TaskStatsData
from exporter.prometheus.render import RenderedMetrics
from exporter.protocol.keys import TransportOptions
from exporter.sources.broker import QueuePager
from exporter.sources.redis import connect, parse_endpoint
from exporter.web.app import create_app
from exporter.web.jobformat import failed_reason
from exporter.web.search import SearchResource
from testkit.redis_server import RedisServer

BUDGET_MS = 50.0
LIMIT = 10


@dataclass(frozen=True)
class Case:
    """One query, and whether its p99 is held to the budget."""

    name: str
    text: str
    queue: str | None = None
    status: str | None = None
    page: int = 1
    gated: bool = True

    def query(self) -> SearchQuery:
        """The query the web layer would make of it."""
        return SearchQuery(self.text, self.queue, self.status, (self.page - 1) * LIMIT, LIMIT)

    def params(self) -> dict[str, str]:
        """Its HTTP query parameters."""
        found = {"q": self.text, "page": str(self.page), "limit": str(LIMIT)}
        if self.queue:
            found["queue"] = self.queue
        if self.status:
            found["status"] = self.status
        return found


CASES = (
    Case("few: one job's account (args)", account(12_345).upper()),
    Case("few: a source id (kwargs, ~60 jobs)", f"'{source(42)}'"),
    Case("none: nothing matches", "no such text anywhere"),
    Case("many: every failure (failedReason)", "Error"),
    Case("all: every job (name)", "app.tasks."),
    Case("all, page 100", "app.tasks.", page=100),
    Case("narrowed: one queue's failures", "error: ", queue=queue_name(3), status="failed"),
    Case("all, page 3,000 (deep)", "app.tasks.", page=3000, gated=False),
)


@dataclass
class Timing:
    """What one case measured, in seconds."""

    name: str
    gated: bool
    times: list[float] = field(default_factory=list)
    total: int = 0

    def row(self) -> str:
        """p50, p99, max and mean in ms, and the matches."""
        p50, p99, top = percentile(self.times, 50), percentile(self.times, 99), max(self.times)
        verdict = ("PASS" if p99 < BUDGET_MS / 1e3 else "FAIL") if self.gated else "info"
        return (f"{self.name:<42} {p50 * 1e3:>7.2f} {p99 * 1e3:>7.2f} {top * 1e3:>7.2f} "
                f"{statistics.fmean(self.times) * 1e3:>7.2f} {self.total:>8} {verdict:>5}")

    @property
    def failed(self) -> bool:
        """Whether a gated case's p99 reached the budget."""
        return self.gated and percentile(self.times, 99) >= BUDGET_MS / 1e3


HEADER = (f"{'case':<42} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'mean ms':>7} "
          f"{'matches':>8} {'':>5}")


def percentile(values: Sequence[float], rank: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(rank / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class ListPager:
    """Queues' lists held in memory, next to run first (QueuePager's order)."""

    def __init__(self, lists: dict[str, list[bytes]]) -> None:
        self.lists = lists

    def page(self, queue: str, offset: int, limit: int) -> tuple[list[bytes], int]:
        entries = self.lists.get(queue, [])
        return entries[offset : offset + limit], len(entries)


def engine(lists: dict[str, list[bytes]] | None = None) -> JobSearch:
    """A JobSearch as the runtime makes it, over lists held in memory."""
    return JobSearch(ListPager(lists or {}), failed_reason=failed_reason)


def time_core(search: JobSearch, snapshot: Snapshot, cases: Sequence[Case],
              rounds: int) -> list[Timing]:
    """Each case `rounds` times, the cases taking turns (after one untimed round)."""
    timings = [Timing(case.name, case.gated) for case in cases]
    for round_ in range(rounds + 1):
        for case, timing in zip(cases, timings, strict=True):
            started = time.perf_counter()
            result = search.search(snapshot, case.query())
            elapsed = time.perf_counter() - started
            if round_:
                timing.times.append(elapsed)
                timing.total = result.total
    return timings


def time_cold(corpus: Corpus, repeats: int) -> Timing:
    """The first search of a fresh JobSearch: every retained job's text is built."""
    timing = Timing("first search of the process (cold)", gated=False)
    snapshot = corpus.snapshot()
    for _ in range(repeats):
        search = engine()
        started = time.perf_counter()
        timing.total = search.search(snapshot, CASES[1].query()).total
        timing.times.append(time.perf_counter() - started)
    return timing


def time_refreshes(corpus: Corpus, rounds: int, per_queue: int) -> Timing:
    """After each refresh (`per_queue` new jobs a queue), the first search of the snapshot."""
    timing = Timing(f"first search after a refresh (+{per_queue}/queue)", gated=True)
    search = engine()
    search.search(corpus.snapshot(), CASES[1].query())
    for _ in range(rounds):
        snapshot = corpus.refresh(per_queue)
        started = time.perf_counter()
        timing.total = search.search(snapshot, CASES[1].query()).total
        timing.times.append(time.perf_counter() - started)
    return timing


def index_memory(corpus: Corpus) -> float:
    """MB the search texts of one snapshot hold (tracemalloc around a cold search)."""
    snapshot = corpus.snapshot()
    search = engine()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    search.search(snapshot, CASES[2].query())
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del search
    return grown / 1e6


def time_list_scans(rounds: int, messages: int, *, with_redis: bool) -> list[Timing]:
    """A `waiting` search scanning one queue's list of `messages`: in memory, then in Redis."""
    queue = "backlog"
    raws = list_messages(queue, messages)
    snapshot = Snapshot(
        generation=1, created_at=time.time(),
        queues={queue: QueueState(queue, {"waiting": messages}, consumers=1, prefetched=0)},
        workers={}, stats=TaskStatsData({}, {}, {}, 0), sources={}, counters=ExporterCounters(),
        placements=(), refresh_duration=0.0, last_success=None, broker_round_trips=0,
    )
    query = SearchQuery("no such text", None, "waiting", 0, LIMIT)
    timings = [_scan(engine({queue: raws}), snapshot, query, rounds,
                     f"in memory: {messages:,} messages (decode)")]
    if with_redis:
        server = RedisServer()
        try:
            client = server.client()
            for start in range(0, len(raws), 1000):
                client.lpush(queue, *reversed(raws[start : start + 1000]))
            transport = TransportOptions()
            pager = QueuePager(connect(parse_endpoint(server.url), transport), transport)
            search = JobSearch(pager, failed_reason=failed_reason)
            timings.append(_scan(search, snapshot, query, rounds,
                                 f"redis: {messages:,} messages (LRANGE+decode)"))
        finally:
            server.cleanup()
    return timings


def _scan(search: JobSearch, snapshot: Snapshot, query: SearchQuery, rounds: int,
          name: str) -> Timing:
    timing = Timing(name, gated=False)
    for round_ in range(rounds + 1):
        started = time.perf_counter()
        result = search.search(snapshot, query, max_scan=DEFAULT_MAX_SCAN)
        if round_:
            timing.times.append(time.perf_counter() - started)
            lists = result.scanned["lists"]
            assert isinstance(lists, dict)
            timing.total = sum(entry["scanned"] for entry in lists.values())
    return timing


class Provider:
    """The snapshot the app serves."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def rendered(self) -> RenderedMetrics | None:
        return None


class Backend:
    """What the runtime gives the web side: here, a JobSearch over the provider's snapshot."""

    def __init__(self, provider: Provider, search: JobSearch) -> None:
        self._provider = provider
        self._search = search

    def waiting_page(self, queue: str, offset: int, limit: int) -> list[WaitingMessage]:
        return []

    def search(self, query: SearchQuery) -> SearchResult:
        snapshot = self._provider.snapshot
        assert snapshot is not None
        return self._search.search(snapshot, query)


def time_asgi(snapshot: Snapshot, cases: Sequence[Case], rounds: int) -> list[Timing]:
    """The same cases as GET /v1/jobs/search through the ASGI app (auth off)."""
    provider = Provider(snapshot)
    backend = Backend(provider, engine())
    app = create_app(provider, stale_after=60.0, keys=None, jobs_backend=lambda: backend)
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobs-api")
    resource = SearchResource(provider, lambda: backend, max_limit=100, executor=pool)
    app.add_route("/v1/jobs/search", resource)
    timings = [Timing(f"HTTP {case.name}", gated=False) for case in cases]

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # falcon types its scope as dict
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for round_ in range(rounds + 1):
                for case, timing in zip(cases, timings, strict=True):
                    started = time.perf_counter()
                    answer = await client.get("/v1/jobs/search", params=case.params())
                    elapsed = time.perf_counter() - started
                    if answer.status_code != 200:
                        raise RuntimeError(f"{case.name}: {answer.status_code} {answer.text}")
                    if round_:
                        timing.times.append(elapsed)
                        timing.total = answer.json()["pagination"]["totalJobs"]

    try:
        asyncio.run(run())
    finally:
        pool.shutdown()
    return timings


def report(title: str, timings: Sequence[Timing]) -> list[str]:
    """A table of timings."""
    return ["", title, HEADER, *(t.row() for t in timings)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=10, help="queues (default: 10)")
    parser.add_argument("--completed", type=int, default=3000,
                        help="completed jobs retained per queue (default: 3000)")
    parser.add_argument("--failed", type=int, default=3000,
                        help="failed jobs retained per queue (default: 3000)")
    parser.add_argument("--rounds", type=int, default=200,
                        help="timed searches per case (default: 200)")
    parser.add_argument("--http-rounds", type=int, default=50,
                        help="timed requests per case through the app; 0 skips (default: 50)")
    parser.add_argument("--refreshes", type=int, default=30,
                        help="refreshes timed for the first search after one (default: 30)")
    parser.add_argument("--per-refresh", type=int, default=50,
                        help="jobs ending per queue between two refreshes (default: 50)")
    parser.add_argument("--list-messages", type=int, default=DEFAULT_MAX_SCAN,
                        help=f"messages in the scanned list (default: {DEFAULT_MAX_SCAN})")
    parser.add_argument("--no-redis", action="store_true",
                        help="skip the list scan against a private redis-server")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the snapshot, time every case, print the tables; 1 if a gated p99 >= budget."""
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    shape = Shape(queues=args.queues, completed=args.completed, failed=args.failed)
    print(f"building {shape.retained:,} retained jobs ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    corpus = Corpus(shape)
    snapshot = corpus.snapshot()
    retained = sum(len(c) + len(f) for c, f in snapshot.retained_jobs.values())
    built = time.perf_counter() - started
    lines = [
        f"snapshot: {retained:,} retained jobs ({args.queues} queues x {args.completed:,} "
        f"completed + {args.failed:,} failed), {len(snapshot.placements)} in flight; "
        f"built in {built:.1f} s",
        f"limit {LIMIT}, {args.rounds} timed searches per case; budget p99 < {BUDGET_MS:g} ms "
        "on the gated cases",
    ]
    search = engine()
    core = time_core(search, snapshot, CASES, args.rounds)
    extra: list[Timing] = [time_refreshes(corpus, args.refreshes, args.per_refresh)]
    lines += report("JobSearch.search (in-process)", core)
    lines += report("the texts: built once, carried over from one snapshot to the next",
                    [time_cold(corpus, 3), *extra])
    lines.append(f"memory the texts of {corpus.shape.retained:,}+ jobs hold: "
                 f"{index_memory(corpus):.1f} MB (tracemalloc)")
    lines += report("scanning a queue's list (status=waiting; 'matches' = messages scanned)",
                    time_list_scans(max(5, args.rounds // 10), args.list_messages,
                                    with_redis=not args.no_redis))
    if args.http_rounds:
        lines += report("GET /v1/jobs/search through the ASGI app (httpx.ASGITransport)",
                        time_asgi(snapshot, CASES, args.http_rounds))
    failed = [t.name for t in (*core, *extra) if t.failed]
    lines += ["", f"load average (1 min) before: {load_before:.2f}, after: "
              f"{os.getloadavg()[0]:.2f}; CPUs: {os.cpu_count()}"]
    lines.append(f"FAIL: p99 >= {BUDGET_MS:g} ms: " + ", ".join(failed) if failed
                 else f"PASS: every gated p99 < {BUDGET_MS:g} ms")
    print("\n".join(lines))
    return 1 if failed else 0
