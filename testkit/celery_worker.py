"""Run a real Celery worker (``testkit.celery_app``) as a subprocess."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from testkit import REPO_ROOT

if TYPE_CHECKING:
    from celery import Celery

APP_MODULE = "testkit.celery_app"


def worker_env(
    broker_url: str,
    transport_options: Mapping[str, Any] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return an environment for the worker / app built on ``base`` (os.environ)."""
    env = dict(os.environ if base is None else base)
    env["TEST_BROKER_URL"] = broker_url
    if transport_options:
        env["TEST_BROKER_TRANSPORT_OPTIONS"] = json.dumps(dict(transport_options))
    else:
        env.pop("TEST_BROKER_TRANSPORT_OPTIONS", None)
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def load_app(broker_url: str, transport_options: Mapping[str, Any] | None = None) -> Celery:
    """Import ``testkit.celery_app`` for this broker (reloading if needed).

    Sets TEST_BROKER_URL / TEST_BROKER_TRANSPORT_OPTIONS in ``os.environ`` of the
    current process, since the app reads them at import time.
    """
    os.environ["TEST_BROKER_URL"] = broker_url
    if transport_options:
        os.environ["TEST_BROKER_TRANSPORT_OPTIONS"] = json.dumps(dict(transport_options))
    else:
        os.environ.pop("TEST_BROKER_TRANSPORT_OPTIONS", None)
    wanted = (broker_url, dict(transport_options or {}))
    module = sys.modules.get(APP_MODULE)
    if module is None:
        module = importlib.import_module(APP_MODULE)
    else:
        current: Celery = module.app
        have = (current.conf.broker_url, dict(current.conf.broker_transport_options or {}))
        if have != wanted:
            module = importlib.reload(module)
    app: Celery = module.app
    return app


class CeleryWorker:
    """A ``celery worker`` subprocess in its own session (process group)."""

    def __init__(
        self,
        broker_url: str,
        *,
        queues: Iterable[str] = ("celery",),
        concurrency: int = 1,
        name: str | None = None,
        transport_options: Mapping[str, Any] | None = None,
        pool: str = "prefork",
        loglevel: str = "INFO",
        extra_args: Iterable[str] = (),
        extra_env: Mapping[str, str] | None = None,
        autostart: bool = True,
    ) -> None:
        """Configure the worker; start it right away unless ``autostart`` is False."""
        self.broker_url = broker_url
        self.queues: list[str] = list(queues)
        self.concurrency = concurrency
        self.name = name or f"w{uuid.uuid4().hex[:8]}"
        self.transport_options: dict[str, Any] = dict(transport_options or {})
        self.pool = pool
        self.loglevel = loglevel
        self.extra_args: list[str] = list(extra_args)
        self.extra_env: dict[str, str] = dict(extra_env or {})
        self._tmpdir = Path(tempfile.mkdtemp(prefix="celery-worker-"))
        self.log_path: Path = self._tmpdir / "worker.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._app: Celery | None = None
        if autostart:
            self.start()

    @property
    def hostname(self) -> str:
        """Full worker node name, ``NAME@host`` (what ``%h`` expands to)."""
        return f"{self.name}@{socket.gethostname()}"

    @property
    def pid(self) -> int | None:
        """PID of the main worker process, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the main worker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def app(self) -> Celery:
        """Celery app (same config as the worker) used for control commands."""
        if self._app is None:
            self._app = load_app(self.broker_url, self.transport_options)
        return self._app

    def command(self) -> list[str]:
        """The argv used to launch the worker."""
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            APP_MODULE,
            "worker",
            f"--loglevel={self.loglevel}",
            *(["-E"] if self.extra_env.get("TEST_TASK_EVENTS", "1") == "1" else []),
            "-P",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "-Q",
            ",".join(self.queues),
            "-n",
            f"{self.name}@%h",
            "--without-mingle",
            "--without-gossip",
            *self.extra_args,
        ]

    def start(self) -> None:
        """Launch the worker process (does not wait for readiness)."""
        if self.running:
            return
        env = worker_env(self.broker_url, self.transport_options)
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=str(REPO_ROOT),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        """Return the worker log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ping(self, timeout: float = 1.0) -> bool:
        """Return True if the worker answers a broadcast ping."""
        try:
            replies = self.app.control.ping(destination=[self.hostname], timeout=timeout)
        except Exception:  # the broker is restarting (redis or kombu errors): not ready yet
            return False
        return any(self.hostname in reply for reply in replies or [])

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the worker answers ``control.ping``; raise on exit/timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(
                    f"celery worker {self.hostname} exited early "
                    f"(rc={self._proc.returncode if self._proc else None}):\n" + self.log()[-4000:]
                )
            if self.ping(timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
                return
        raise TimeoutError(
            f"celery worker {self.hostname} not ready after {timeout}s:\n" + self.log()[-4000:]
        )

    def _signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the worker's whole process group, ignoring races."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL the process group."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        # Whatever is left (hung main process, orphaned pool children) dies now.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group (no worker-offline event is sent)."""
        proc = self._proc
        if proc is None:
            return
        self._signal_group(signal.SIGKILL)
        proc.wait(timeout=10)
        self._proc = None

    def close(self, stop_timeout: float = 15.0) -> None:
        """Stop the worker, close the control app and delete the temp dir."""
        self.stop(stop_timeout)
        if self._app is not None:
            self._app.close()
            self._app = None
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> CeleryWorker:
        """Ensure the worker is started."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the worker and clean up."""
        self.close()

    def __repr__(self) -> str:
        """Short description."""
        return f"CeleryWorker(hostname={self.hostname!r}, pid={self.pid})"
