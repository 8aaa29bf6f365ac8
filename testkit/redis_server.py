"""Disposable redis-server processes bound to a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis

from testkit.net import LOOPBACK, find_free_port


class RedisServer:
    """A private ``redis-server`` subprocess (no persistence, own data dir).

    ``cpus`` pins it to those cores (a benchmark keeps it off the exporter's core).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        executable: str = "redis-server",
        extra_args: list[str] | None = None,
        startup_timeout: float = 10.0,
        cpus: Iterable[int] = (),
        autostart: bool = True,
    ) -> None:
        """Create the server; start it right away unless ``autostart`` is False."""
        self.port: int = port if port is not None else find_free_port()
        self.host: str = LOOPBACK
        self.cpus: set[int] = set(cpus)
        self.executable: str = executable
        self.extra_args: list[str] = list(extra_args or [])
        self.startup_timeout: float = startup_timeout
        self._tmpdir: Path = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        if autostart:
            self.start()

    @property
    def url(self) -> str:
        """Redis URL for database 0."""
        return self.url_for_db(0)

    def url_for_db(self, db: int) -> str:
        """Redis URL for database ``db``."""
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        """PID of the running server, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """Path of the server's log file."""
        return self._tmpdir / "redis.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
        """Return a new ``redis.Redis`` client for database ``db``."""
        return redis.Redis(host=self.host, port=self.port, db=db, **kwargs)

    def start(self) -> None:
        """Start (or restart) the server on ``self.port`` and wait for PING."""
        if self.running:
            return
        cmd = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._tmpdir),
            "--daemonize",
            "no",
            "--logfile",
            "",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._log_file = log
        self._proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        if self.cpus:
            os.sched_setaffinity(self._proc.pid, self.cpus)
        self._wait_for_ping()

    def log_count(self, needle: str) -> int:
        """Lines of the server's log that contain ``needle``."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(needle in line for line in text.splitlines())

    def _wait_for_ping(self) -> None:
        """Block until PING succeeds, raising if the server dies or times out."""
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                self._reap()
                raise RuntimeError(
                    f"redis-server exited early on port {self.port}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                conn = redis.Redis(
                    host=self.host,
                    port=self.port,
                    socket_connect_timeout=0.5,
                    socket_timeout=0.5,
                )
                try:
                    if conn.ping():
                        return
                finally:
                    conn.close()
            except redis.RedisError as exc:
                last_error = exc
            time.sleep(0.02)  # polling interval: PING is tried again after it
        self.stop()
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING: {last_error}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM), escalating to SIGKILL after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server to simulate a crash."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        self._reap()

    def _reap(self) -> None:
        """Forget the process and close its log handle."""
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        """Stop the server and delete its temp directory."""
        self.stop()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        """Ensure the server is running."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and remove its data dir."""
        self.cleanup()

    def __repr__(self) -> str:
        """Short description."""
        return f"RedisServer(port={self.port}, pid={self.pid})"
