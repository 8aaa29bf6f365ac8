"""wrk against the real exporter (`celery-jobs-exporter serve`) at several sizes.

For each size: a private redis-server is filled (bound queues holding messages), the
exporter is started on it, synthetic Celery events give every task name counters and
histograms, and once /metrics shows every queue and task name, wrk measures it.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.scrape.synth import (
    Layout,
    event_messages,
    expected_series,
    load_templates,
    populate_broker,
    publish,
)
from testkit.exposition import SampleKey, parse_metrics
from testkit.net import LOOPBACK
from testkit.procs import process_cpu
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wrk import WrkReport, parse_wrk

REFRESH_INTERVAL = 5.0
#: Rounds of events per task name (the last one fails).
RUNS = 4
TARGET_RPS = 2000.0
TARGET_P99_MS = 20.0
GZIP = "gzip"
PLAIN = "identity"


@dataclass(frozen=True)
class Body:
    """What one GET /metrics returned."""

    status: int
    content_encoding: str | None
    data: bytes


@dataclass(frozen=True)
class WrkResult(WrkReport):
    """wrk's report, and the CPU the exporter, wrk and the rest of the host used meanwhile."""

    cpu_us_per_request: float = 0.0
    sys_us_per_request: float = 0.0
    cpu_percent: float = 0.0
    wrk_cpu_percent: float = 0.0
    other_cpu_percent: float = 0.0


@dataclass(frozen=True)
class SizeResult:
    """Everything measured at one size."""

    layout: Layout
    series: int
    plain_bytes: int
    gzip_bytes: int
    messages: int
    ready_seconds: float
    runs: dict[str, WrkResult]


def get_metrics(port: int, *, compressed: bool = False, timeout: float = 10.0) -> Body:
    """GET /metrics once (gzip bodies are returned as sent, not decompressed)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        headers = {"Accept-Encoding": GZIP if compressed else PLAIN}
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        return Body(response.status, response.getheader("Content-Encoding"), response.read())
    finally:
        connection.close()


def count_series(text: str) -> int:
    """Samples (non-comment lines) of a text exposition."""
    return len(parse_metrics(text))


def host_busy_seconds() -> float:
    """CPU seconds the host's CPUs have spent in processes so far, plus stolen time.

    Interrupt time is left out: most of it is this benchmark's own loopback traffic.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_series(
    exporter: Sidecar, expected: dict[SampleKey, float], timeout: float
) -> str:
    """Poll /metrics until every expected sample has its expected value."""
    deadline = time.monotonic() + timeout
    missing: list[SampleKey] = []
    while time.monotonic() < deadline:
        exporter.check_alive()
        try:
            text = get_metrics(exporter.port).data.decode()
        except OSError:
            time.sleep(0.5)
            continue
        samples = parse_metrics(text)
        missing = [key for key, value in expected.items() if samples.get(key) != value]
        if not missing:
            return text
        time.sleep(0.5)
    raise TimeoutError(f"{len(missing)} expected samples missing, e.g. {missing[:3]}")


def run_wrk(
    exporter: Sidecar,
    *,
    compressed: bool,
    args: argparse.Namespace,
    cpu: int | None,
    redis_pid: int | None,
) -> WrkResult:
    """One wrk run against /metrics, with the CPU used by it, the exporter and the rest."""
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
    ]
    if compressed:
        command += ["-H", "Accept-Encoding: gzip"]
    command.append(f"http://{LOOPBACK}:{exporter.port}/metrics")
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    redis_pids = [redis_pid] if redis_pid is not None else []
    host_before, redis_before = host_busy_seconds(), sum(process_cpu(redis_pids))
    mine_before = resource.getrusage(resource.RUSAGE_SELF)
    (user_before, sys_before), started = exporter.process_cpu(), time.monotonic()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=args.duration + 60, check=True
    )
    user_after, sys_after = exporter.process_cpu()
    elapsed = time.monotonic() - started
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = resource.getrusage(resource.RUSAGE_SELF)
    host = host_busy_seconds() - host_before
    wrk_cpu = (waited.ru_utime - children.ru_utime) + (waited.ru_stime - children.ru_stime)
    user, system = user_after - user_before, sys_after - sys_before
    ours = (
        user + system + wrk_cpu + sum(process_cpu(redis_pids)) - redis_before
        + (mine.ru_utime - mine_before.ru_utime) + (mine.ru_stime - mine_before.ru_stime)
    )
    report = parse_wrk(done.stdout)
    requests = max(report.requests, 1)
    return WrkResult(
        **asdict(report),
        cpu_us_per_request=(user + system) / requests * 1e6,
        sys_us_per_request=system / requests * 1e6,
        cpu_percent=100 * (user + system) / elapsed,
        wrk_cpu_percent=100 * wrk_cpu / elapsed,
        other_cpu_percent=max(0.0, 100 * (host - ours) / elapsed),
    )


def measure(layout: Layout, args: argparse.Namespace, pin: bool) -> SizeResult:
    """Start Redis and the exporter for one size, fill, wait, run wrk."""
    exporter_cpu, load_cpu = args.cpus if pin else (None, None)
    templates = load_templates()
    with RedisServer(cpus=() if load_cpu is None else {load_cpu}) as server:
        client = server.client()
        messages = populate_broker(client, layout)
        started = time.monotonic()
        with Sidecar(
            server.url,
            "--refresh-interval", str(args.refresh_interval),
            "--log-level", "warning",
            cpus=() if exporter_cpu is None else {exporter_cpu},
        ) as exporter:
            exporter.wait_ready()
            exporter.wait_subscribed()
            publish(client, event_messages(layout, templates, runs=RUNS, now=time.time()))
            text = wait_for_series(
                exporter, expected_series(layout, RUNS), timeout=args.refresh_interval + 60
            )
            ready = time.monotonic() - started
            compressed = get_metrics(exporter.port, compressed=True)
            if compressed.content_encoding != GZIP:
                raise RuntimeError("the exporter did not gzip when asked to")
            gzip.decompress(compressed.data)  # must be valid gzip
            runs = {
                PLAIN: run_wrk(
                    exporter, compressed=False, args=args, cpu=load_cpu, redis_pid=server.pid
                )
            }
            if layout.label in args.gzip_sizes:
                runs[GZIP] = run_wrk(
                    exporter, compressed=True, args=args, cpu=load_cpu, redis_pid=server.pid
                )
            exporter.check_alive()
        client.close()
    return SizeResult(
        layout=layout,
        series=count_series(text),
        plain_bytes=len(text.encode()),
        gzip_bytes=len(compressed.data),
        messages=messages,
        ready_seconds=ready,
        runs=runs,
    )


def render_tables(results: Sequence[SizeResult], args: argparse.Namespace, pin: bool) -> str:
    """The report: exposition size, then wrk numbers, then the targets."""
    lines = [
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency "
        f"against celery-jobs-exporter serve --refresh-interval {args.refresh_interval:g}; "
        + (f"exporter pinned to CPU {args.cpus[0]}, wrk and redis-server to CPU {args.cpus[1]}"
           if pin else "no CPU pinning"),
        "",
        f"{'size':>9} {'series':>7} {'plain B':>10} {'gzip B':>9} {'plain B/(Q+T)':>14} "
        f"{'msgs':>6} {'ready s':>8}",
    ]
    for r in results:
        per = r.plain_bytes / (r.layout.queues + r.layout.tasks)
        lines.append(
            f"{r.layout.label:>9} {r.series:>7} {r.plain_bytes:>10} {r.gzip_bytes:>9} "
            f"{per:>14.0f} {r.messages:>6} {r.ready_seconds:>8.1f}"
        )
    lines += [
        "",
        f"{'size':>9} {'encoding':>9} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'requests':>9} {'transfer':>11} {'CPU %':>6} {'CPU us/req':>10} "
        f"{'of it sys':>9} {'req/CPU-s':>9} {'wrk CPU %':>9} {'other CPU %':>11}  errors",
    ]
    for r in results:
        for encoding, w in r.runs.items():
            lines.append(
                f"{r.layout.label:>9} {encoding:>9} {w.requests_per_second:>9.0f} "
                f"{w.p50_ms:>8.2f} {w.p90_ms:>8.2f} {w.p99_ms:>8.2f} {w.max_ms:>8.2f} "
                f"{w.requests:>9} {w.transfer:>11} {w.cpu_percent:>6.0f} "
                f"{w.cpu_us_per_request:>10.0f} {w.sys_us_per_request:>9.0f} "
                f"{1e6 / max(w.cpu_us_per_request, 1):>9.0f} {w.wrk_cpu_percent:>9.0f} "
                f"{w.other_cpu_percent:>11.0f}  {w.errors}"
            )
    largest = max(results, key=lambda r: r.layout.queues + r.layout.tasks)
    plain = largest.runs[PLAIN]
    ok_rps = plain.requests_per_second >= TARGET_RPS
    ok_p99 = plain.p99_ms < TARGET_P99_MS
    lines += [
        "",
        "CPU % and CPU us/req: the exporter's processes (user + system; 'of it sys': the "
        "kernel's part) over the run; "
        "req/CPU-s: requests served per second of exporter CPU, the rate one free core "
        "would sustain; wrk CPU %: wrk's own CPU use (100 = its core is saturated); "
        "other CPU %: what other processes on the host (and the hypervisor) used meanwhile "
        "(100 = a whole core).",
        f"target at {largest.layout.label} (plain): req/s >= {TARGET_RPS:.0f}: "
        f"{'PASS' if ok_rps else 'FAIL'} ({plain.requests_per_second:.0f}); "
        f"p99 < {TARGET_P99_MS:.0f} ms: {'PASS' if ok_p99 else 'FAIL'} ({plain.p99_ms:.2f} ms)",
    ]
    smallest = min(results, key=lambda r: r.layout.queues + r.layout.tasks)
    if smallest is not largest:
        size_ratio = (largest.layout.queues + largest.layout.tasks) / (
            smallest.layout.queues + smallest.layout.tasks
        )
        lines.append(
            f"body growth {largest.layout.label} / {smallest.layout.label}: "
            f"{largest.plain_bytes / smallest.plain_bytes:.1f}x for {size_ratio:.0f}x "
            "more queues + task names"
        )
    return "\n".join(lines)


def parse_layout(text: str) -> Layout:
    """`QxT` → Layout."""
    queues, _, tasks = text.partition("x")
    return Layout(int(queues), int(tasks))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__)
    parser.add_argument("--sizes", default="10x10,200x200",
                        help="comma-separated QUEUESxTASKS (default: %(default)s)")
    parser.add_argument("--gzip-sizes", default="200x200",
                        help="sizes also run with Accept-Encoding: gzip (default: %(default)s)")
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds (default: 10)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: 2)")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections (default: 16)")
    parser.add_argument("--refresh-interval", type=float, default=REFRESH_INTERVAL,
                        help="the exporter's --refresh-interval (default: %(default)s)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the exporter and wrk to different CPUs")
    args = parser.parse_args(argv)
    args.layouts = [parse_layout(s) for s in args.sizes.split(",") if s]
    args.gzip_sizes = {s for s in args.gzip_sizes.split(",") if s}
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size and print the tables."""
    args = parse_args(argv)
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2 and shutil.which("taskset") is not None
    args.cpus = (cpus[0], cpus[1]) if pin else (None, None)
    results = []
    for layout in args.layouts:
        print(f"measuring {layout.label} ...", file=sys.stderr, flush=True)
        results.append(measure(layout, args, pin))
    print(render_tables(results, args, pin))
    return 0
