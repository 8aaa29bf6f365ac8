"""The exporter under an event stream (bench/events and bench/memory).

The real `celery-jobs-exporter serve` (`testkit.sidecar.Sidecar`), pinned to its own
core and ready once its event stream is subscribed; what its /metrics says about the
events it counted; waiting until it has counted them all.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from testkit.exposition import Samples, total
from testkit.sidecar import REFRESHED_AT, Sidecar


@dataclass(frozen=True)
class Counts:
    """One /metrics page, read for the event stream's figures."""

    samples: Samples

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`."""
        return total(self.samples, name, **labels)

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
    def disconnected(self) -> float:
        """Seconds without an event subscription so far."""
        return self.value("celery_exporter_event_stream_disconnected_seconds_total")

    @property
    def refreshed_at(self) -> float:
        """When the snapshot behind this page was built (Unix time)."""
        return self.value(REFRESHED_AT)

    @property
    def retained(self) -> int:
        """Completed plus failed jobs retained, over every queue."""
        return int(
            self.value("celery_queue_jobs", status="completed")
            + self.value("celery_queue_jobs", status="failed")
        )


def counts(exporter: Sidecar) -> Counts:
    """GET /metrics now."""
    return Counts(exporter.metrics())


def start_exporter(
    broker_url: str, *, cpus: set[int], extra_args: Sequence[str] = (),
    refresh_interval: float = 1.0, env: dict[str, str] | None = None,
) -> tuple[Sidecar, int]:
    """`serve --refresh-interval N` pinned to `cpus`, subscribed; it and its worker's pid.

    `env` adds to (or replaces) the exporter's environment. Leave it with
    ``with exporter:`` (that stops it and deletes its log).
    """
    exporter = Sidecar(
        broker_url, "--refresh-interval", str(refresh_interval), *extra_args, cpus=cpus,
        env=env,
    )
    try:
        exporter.wait_ready()
        exporter.wait_subscribed()
        return exporter, exporter.worker_pid()
    except BaseException as exc:
        exporter.__exit__(type(exc), exc, exc.__traceback__)
        raise


def wait_drained(
    exporter: Sidecar, expected: int, *, timeout: float = 30.0, quiet: float = 3.0
) -> tuple[Counts, float]:
    """Poll /metrics until every event is counted or the count stops moving; returns (page, s)."""
    started = time.monotonic()
    page = counts(exporter)
    last, changed = page.received, started
    while page.received < expected and time.monotonic() - started < timeout:
        if time.monotonic() - changed >= quiet:
            break
        time.sleep(0.25)
        page = counts(exporter)
        if page.received != last:
            last, changed = page.received, time.monotonic()
    return page, changed - started


class ScrapeProbe:
    """GETs /metrics at a fixed interval in a thread, as Prometheus would, timing each answer.

    One keep-alive connection; a request that fails counts as an error, not a latency.
    """

    def __init__(self, base_url: str, interval: float) -> None:
        self._url = base_url + "/metrics"
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latencies: list[float] = []
        self.errors = 0

    def __enter__(self) -> ScrapeProbe:
        if self._interval > 0:
            self._thread = threading.Thread(target=self._run, name="scrape-probe", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get(self._url)
                    response.raise_for_status()
                    self.latencies.append(time.monotonic() - started)
                except httpx.HTTPError:
                    self.errors += 1
                next_at += self._interval
                self._stop.wait(max(next_at - time.monotonic(), 0.0))


def add_exporter_options(parser: argparse.ArgumentParser) -> None:
    """The flags every event-stream benchmark takes: extra `serve` arguments, pinning."""
    parser.add_argument("--exporter-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `serve`, repeatable "
                        "(e.g. --exporter-arg=--no-history)")
    parser.add_argument("--exporter-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for `serve`, repeatable "
                        "(e.g. --exporter-env PYTHONMALLOC=malloc)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the exporter and the publishers to separate cores")


def exporter_env(pairs: Sequence[str]) -> dict[str, str]:
    """The `--exporter-env NAME=VALUE` flags as a mapping."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--exporter-env wants NAME=VALUE, not {pair!r}")
        env[name] = value
    return env
