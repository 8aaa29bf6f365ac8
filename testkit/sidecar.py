"""Run the real sidecar (`celery-jobs-exporter serve`) as a subprocess and read it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

import httpx

from testkit import REPO_ROOT
from testkit.exposition import Samples, parse_metrics, value
from testkit.net import LOOPBACK, find_free_port
from testkit.procs import children, pid_alive, process_cpu

#: When the served snapshot was built: a new value per refresh.
REFRESHED_AT = "celery_exporter_last_refresh_timestamp_seconds"
#: 1 once the event stream is subscribed (with the label source="events").
SOURCE_UP = "celery_exporter_source_up"
#: Families a failed wait prints: what the sidecar counted and placed when it gave up.
DIAGNOSED = frozenset({"celery_queue_jobs", "celery_tasks_total", "celery_worker_up"})


class Sidecar:
    """The exporter CLI in its own process group, on a free loopback port.

    `serve` is a gunicorn arbiter; its one child, the gunicorn worker, does the work
    (`worker_pid`). ``cpus`` pins both to those cores (``taskset``).
    """

    def __init__(
        self,
        broker_url: str,
        *args: str,
        env: dict[str, str] | None = None,
        cpus: Iterable[int] = (),
    ) -> None:
        self.port = find_free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="sidecar-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)
        # The log goes when the Sidecar does (or at exit), unless kept after an error.
        self._remove_log = weakref.finalize(self, self.log_path.unlink, missing_ok=True)
        command = [
            sys.executable, "-m", "exporter", "serve",
            "--broker-url", broker_url,
            "--listen-address", f"{LOOPBACK}:{self.port}",
            *args,
        ]
        pinned = sorted(set(cpus))
        if pinned:
            command = ["taskset", "-c", ",".join(map(str, pinned)), *command]
        self.command: list[str] = command
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT,
        )

    @property
    def pid(self) -> int:
        """The `serve` process (the gunicorn arbiter; taskset execs it in place)."""
        return self.process.pid

    def log(self) -> str:
        """What the sidecar printed so far (also once it is stopped)."""
        return self.log_path.read_text(errors="replace")

    def log_count(self, needle: str) -> int:
        """Lines of the sidecar's log that contain `needle`."""
        return sum(needle in line for line in self.log().splitlines())

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        """A GET on the sidecar."""
        return httpx.get(self.base_url + path, timeout=10.0, **kwargs)  # type: ignore[arg-type]

    def check_alive(self) -> None:
        """Raise with the log's tail if the sidecar has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"sidecar exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for /readyz to answer 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
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

    def wait_for(self, predicate: Callable[[Samples], object], timeout: float = 30.0) -> Samples:
        """Scrape until `predicate(samples)` is true; the last samples on timeout (raises)."""
        deadline = time.monotonic() + timeout
        last: Samples = {}
        error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                last = self.metrics()
                if predicate(last):
                    return last
                error = None
            except (KeyError, httpx.HTTPError) as exc:
                error = exc
            time.sleep(0.2)  # polling interval: the condition is checked again after it
        raise AssertionError(
            f"condition not met in {timeout}s (last error: {error}); "
            f"queue samples: {[(k, v) for k, v in last.items() if k[0] in DIAGNOSED]}"
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

    def wait_subscribed(self, timeout: float = 30.0) -> Samples:
        """Wait until the event stream is subscribed (`celery_exporter_source_up` 1)."""
        return self.wait_for(lambda s: value(s, SOURCE_UP, source="events") == 1, timeout)

    def current_worker(self) -> int | None:
        """The gunicorn worker's pid now, or None (none yet, or gunicorn is replacing it)."""
        workers = children(self.pid)
        return workers[0] if len(workers) == 1 else None

    def worker_pid(self, timeout: float = 30.0) -> int:
        """Wait for the gunicorn worker (the only child of `serve`) and return its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            worker = self.current_worker()
            if worker is not None:
                return worker
            time.sleep(0.1)  # polling interval: the children are listed again after it
        raise TimeoutError(f"no single gunicorn worker under the sidecar:\n{self.log()[-3000:]}")

    def alive(self, worker: int) -> bool:
        """`serve` and the gunicorn worker `worker` both run."""
        return self.process.poll() is None and pid_alive(worker)

    def process_cpu(self) -> tuple[float, float]:
        """User and system CPU seconds of `serve` and its workers so far."""
        return process_cpu([self.pid, *children(self.pid)])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if needed; then kill whatever is left."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
            except ProcessLookupError:
                pass
        # A worker that outlived its arbiter is still in the group: it dies now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the sidecar; its log is deleted, or kept (and named) when leaving on an error."""
        self.stop()
        if exc_type is None:
            self._remove_log()
        else:
            self._remove_log.detach()
            print(f"sidecar log kept: {self.log_path}", file=sys.stderr)
