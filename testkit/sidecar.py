"""Run the real sidecar (`celery-jobs-exporter serve`) as a subprocess and read it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.redis_server import find_free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

#: When the served snapshot was built: a new value per refresh.
REFRESHED_AT = "celery_exporter_last_refresh_timestamp_seconds"


def parse_metrics(text: str) -> Samples:
    """Exposition text → {(sample name, labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError naming it when it is missing."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(f"no sample {name}{labels}")
    return samples[key]


def queue_counts(samples: Samples, queue: str) -> dict[str, int]:
    """The six status counts of one queue."""
    return {
        status: int(value(samples, "celery_queue_jobs", queue=queue, status=status))
        for status in ("waiting", "active", "delayed", "paused", "completed", "failed")
    }


class Sidecar:
    """The exporter CLI in its own process group, on a free loopback port."""

    def __init__(self, broker_url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = find_free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="sidecar-", suffix=".log", delete=False
        )
        command: Sequence[str] = [
            sys.executable, "-m", "exporter", "serve",
            "--broker-url", broker_url,
            "--listen-address", f"127.0.0.1:{self.port}",
            *args,
        ]
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True, cwd=REPO_ROOT,
        )

    def log(self) -> str:
        """What the sidecar printed so far."""
        return Path(self._log.name).read_text(errors="replace")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        """A GET on the sidecar."""
        return httpx.get(self.base_url + path, timeout=10.0, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for /readyz to answer 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling interval: /readyz is asked again after it
        raise TimeoutError(f"sidecar not ready in {timeout}s:\n{self.log()[-3000:]}")

    def metrics(self) -> Samples:
        """Scrape and parse /metrics."""
        response = self.get("/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)

    def wait_for(self, predicate: object, timeout: float = 30.0) -> Samples:
        """Scrape until `predicate(samples)` is true; the last samples on timeout (raises)."""
        deadline = time.monotonic() + timeout
        last: Samples = {}
        error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                last = self.metrics()
                if predicate(last):  # type: ignore[operator]
                    return last
                error = None
            except (KeyError, httpx.HTTPError) as exc:
                error = exc
            time.sleep(0.2)  # polling interval: the condition is checked again after it
        raise AssertionError(
            f"condition not met in {timeout}s (last error: {error}); "
            f"queue samples: {[(k, v) for k, v in last.items() if k[0] == 'celery_queue_jobs']}"
            f"\nsidecar log (end):\n{self.log()[-3000:]}"
        )

    def wait_refreshes(self, count: int = 2, timeout: float = 30.0) -> Samples:
        """Wait until `count` snapshots newer than the current one were built; the last one.

        Each refresh re-reads every source, so this waits for work done, not for time.
        """
        current = value(self.metrics(), REFRESHED_AT)
        built: set[float] = set()

        def newer(samples: Samples) -> bool:
            stamp = value(samples, REFRESHED_AT)
            if stamp > current:
                built.add(stamp)
            return len(built) >= count

        return self.wait_for(newer, timeout)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if needed."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        Path(self._log.name).unlink(missing_ok=True)
