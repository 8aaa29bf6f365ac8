"""One refresher per sidecar, however many gunicorn workers serve it.

The worker that holds an exclusive lock on `<state dir>/refresher.lock` runs the
sidecar core and, when other workers exist, publishes each rendered snapshot into
the state directory (written aside, then renamed), and answers the Jobs API for the
others on `<state dir>/jobs.sock` (see `exporter.serving.forwarding`). The other
workers serve those files, forward Jobs API requests, and retry the lock every
refresh interval, so one takes over if the owner dies.
With one worker (the default) nothing is written: the snapshot stays in memory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from exporter.actions.service import JobActions
from exporter.config.settings import Settings
from exporter.model.snapshot import Snapshot, SourceHealth
from exporter.prometheus.render import RenderedMetrics
from exporter.serving.forwarding import AsgiApp, ForwardToOwner, OwnerChannel
from exporter.serving.runtime import Runtime

log = logging.getLogger(__name__)

VARIANTS = ("text", "text_gzip", "openmetrics", "openmetrics_gzip")
#: The owner's socket for the other workers' Jobs API requests, in the state directory.
JOBS_SOCKET = "jobs.sock"


@dataclass(frozen=True)
class PublishedState:
    """What a non-owning worker needs besides the metrics bytes (for /readyz)."""

    generation: int
    last_success: float | None
    broker_error: str | None


class LocalProvider:
    """Serves the runtime of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def snapshot(self) -> Snapshot | None:
        return self._runtime.snapshot

    @property
    def rendered(self) -> RenderedMetrics | None:
        return self._runtime.rendered

    def jobs_backend(self) -> Runtime:
        return self._runtime

    def actions_backend(self) -> JobActions:
        return self._runtime.actions

    def serve_jobs(self, app: AsgiApp) -> AsgiApp:
        """The app as served: one process answers everything itself."""
        return app

    def close(self) -> None:
        self._runtime.stop()


def publish(state_dir: Path, snapshot: Snapshot, rendered: RenderedMetrics) -> None:
    """Write one snapshot's exposition and state atomically (rename) for other workers."""
    generation = rendered.generation
    for variant in VARIANTS:
        _write_atomic(state_dir / f"metrics.{variant}", getattr(rendered, variant))
    broker = snapshot.sources.get("broker")
    state = {
        "generation": generation,
        "last_success": snapshot.last_success,
        "broker_error": broker.last_error if broker else None,
    }
    _write_atomic(state_dir / "state.json", orjson.dumps(state))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SharedProvider:
    """Owns the core while it holds the lock; otherwise serves what the owner published."""

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self._settings = settings
        self._dir = state_dir
        self._lock_file = open(state_dir / "refresher.lock", "a+b")  # noqa: SIM115
        self._runtime: Runtime | None = None
        self._app: AsgiApp | None = None
        self._channel: OwnerChannel | None = None
        self._cached: tuple[int, RenderedMetrics, Snapshot] | None = None
        self._guard = threading.Lock()
        self._owning = threading.Lock()
        self._stop = threading.Event()
        if not self._try_own():
            threading.Thread(target=self._retry_lock, name="lock-retry", daemon=True).start()

    def _try_own(self) -> bool:
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        log.info("worker %d owns the refresher", os.getpid())
        runtime = Runtime(self._settings, on_rendered=self._publish)
        runtime.start()
        with self._owning:
            self._runtime = runtime
            self._open_channel()
        return True

    def serve_jobs(self, app: AsgiApp) -> AsgiApp:
        """The app as served: Jobs API requests go to the owner, wherever they arrive."""
        with self._owning:
            self._app = app
            self._open_channel()
        return ForwardToOwner(app, self.owns, self._dir / JOBS_SOCKET)

    def owns(self) -> bool:
        """Whether this process runs the refresher (and so answers the Jobs API itself)."""
        return self._runtime is not None

    def _open_channel(self) -> None:
        """Once this process owns the refresher and has its app, answer the others."""
        if self._runtime is not None and self._app is not None and self._channel is None:
            self._channel = OwnerChannel(self._app, self._dir / JOBS_SOCKET)
            self._channel.start()

    def _retry_lock(self) -> None:
        while not self._stop.wait(self._settings.refresh_interval):
            if self._try_own():
                return

    def _publish(self, snapshot: Snapshot, rendered: RenderedMetrics) -> None:
        publish(self._dir, snapshot, rendered)

    def _load(self) -> tuple[int, RenderedMetrics, Snapshot] | None:
        try:
            state = orjson.loads((self._dir / "state.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return self._cached
        if self._cached is not None and self._cached[0] == state["generation"]:
            return self._cached
        with self._guard:
            try:
                parts = {v: (self._dir / f"metrics.{v}").read_bytes() for v in VARIANTS}
            except OSError:
                return self._cached
            rendered = RenderedMetrics(generation=state["generation"], **parts)
            self._cached = (state["generation"], rendered, _stub_snapshot(state))
            return self._cached

    @property
    def snapshot(self) -> Snapshot | None:
        if self._runtime is not None:
            return self._runtime.snapshot
        loaded = self._load()
        return loaded[2] if loaded else None

    @property
    def rendered(self) -> RenderedMetrics | None:
        if self._runtime is not None:
            return self._runtime.rendered
        loaded = self._load()
        return loaded[1] if loaded else None

    def jobs_backend(self) -> Runtime | None:
        """This process's runtime while it owns the refresher (the others cannot page)."""
        return self._runtime

    def actions_backend(self) -> JobActions | None:
        """Job actions, while this process owns the refresher (the others answer 503)."""
        return self._runtime.actions if self._runtime is not None else None

    def close(self) -> None:
        self._stop.set()
        if self._channel is not None:
            self._channel.stop()
        if self._runtime is not None:
            self._runtime.stop()


def _stub_snapshot(state: dict[str, Any]) -> Snapshot:
    """A snapshot carrying only what /readyz reads, for workers that do not own the core."""
    from exporter.model.snapshot import ExporterCounters
    from exporter.model.stats import TaskStatsData

    broker = SourceHealth("broker", state["broker_error"] is None, state["last_success"],
                          state["broker_error"])
    return Snapshot(
        generation=state["generation"], created_at=0.0, queues={}, workers={},
        stats=TaskStatsData({}, {}, {}, 0), sources={"broker": broker},
        counters=ExporterCounters(), placements=(), refresh_duration=0.0,
        last_success=state["last_success"], broker_round_trips=0,
    )


def build_provider(settings: Settings) -> LocalProvider | SharedProvider:
    """The provider for this gunicorn worker."""
    if settings.web_workers <= 1 or not settings.state_dir:
        runtime = Runtime(settings)
        runtime.start()
        return LocalProvider(runtime)
    return SharedProvider(settings, Path(settings.state_dir))
