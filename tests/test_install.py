"""A plain install works: every module the sidecar imports at run time gets installed.

kombu 5.7 imports ``packaging`` in its Redis transport without declaring it; the test
extra happened to pull it in, so the suite passed while ``pip install .`` gave a sidecar
whose ``workers`` source was permanently down. These tests install the package the two
ways users do, into fresh virtualenvs that hold nothing else, and check the sidecar there:

- ``wheel``: build a wheel, ``pip install`` it with no extras and no constraints (the
  newest releases of every dependency, like a user's ``pip install``: a dependency's new
  release that needs an undeclared module fails here first);
- ``dockerfile``: the Dockerfile's way, ``pip install -c constraints.txt .`` in a directory
  holding what the Dockerfile copies.

Each then runs ``<venv>/bin/celery-jobs-exporter serve`` against a private redis-server
and a real Celery worker (events on, one slot busy, jobs waiting behind it) and requires
every source up and the queue's counts right.

The venvs are made without pip (so not even pip's or setuptools' packages are there to
hide a missing dependency); the suite's own pip installs into them with ``--python``.
Both need the package registry (pip's cache makes reruns fast). The sources are copied to
a temporary directory first: building in the working tree would leave ``build/`` there,
and a stale ``build/lib`` puts deleted modules into the wheel.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from testkit.celery_worker import CeleryWorker
from testkit.exposition import Samples, parse_metrics, value
from testkit.net import find_free_port
from testkit.procs import process_group_gone
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

if TYPE_CHECKING:
    from celery import Celery

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
QUEUE = "install_q"
WAITING_JOBS = 3
PIP_TIMEOUT = 480.0
SOURCES = ("broker", "workers", "events")


class Log:
    """Every pip command of one case and what it printed, for failure messages."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, command: list[str], returncode: int | str, output: str) -> None:
        self.parts.append(f"$ {' '.join(command)}  (exit {returncode})\n{output[-4000:]}")

    def __str__(self) -> str:
        return "\n".join(self.parts) or "(no pip output)"


def _dockerfile_sources() -> list[str]:
    """What the Dockerfile's build stage COPYs from the build context."""
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"pip install\b[^\n]*-c constraints\.txt \.", text), (
        "the Dockerfile no longer runs `pip install -c constraints.txt .`: update this test"
    )
    sources: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources.extend(w for w in words[1:-1] if not w.startswith("--"))
    assert sources, "no COPY in the Dockerfile's build stage"
    return sources


def _copy_context(dest: Path) -> Path:
    """Copy the Dockerfile's build context (without bytecode, as .dockerignore says)."""
    dest.mkdir()
    for name in _dockerfile_sources():
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, dest / name)
    return dest


def _pip_env() -> dict[str, str]:
    """The environment minus PIP_CONSTRAINT (pip config files still apply)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONSTRAINT", "PYTHONPATH")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _pip(log: Log, *args: str, cwd: Path | None = None) -> None:
    """Run the suite's pip (``--python`` points it at the fresh venv); fail with its output."""
    command = [sys.executable, "-m", "pip", *args]
    try:
        result = subprocess.run(
            command, cwd=cwd, env=_pip_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=PIP_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output or ""
        log.add(command, "timeout", out if isinstance(out, str) else out.decode(errors="replace"))
        pytest.fail(f"pip did not finish in {PIP_TIMEOUT}s:\n{log}")
    log.add(command, result.returncode, result.stdout)
    if result.returncode != 0:
        pytest.fail(f"pip failed:\n{log}")


def _make_venv(venv: Path) -> Path:
    """A fresh venv with nothing in it (not even pip or setuptools); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv / "bin" / "python"


def install_wheel(tmp: Path, python: Path, log: Log) -> None:
    """Build a wheel from the sources; install it with no extras and no constraints."""
    wheelhouse = tmp / "wheelhouse"
    context = _copy_context(tmp / "src")
    _pip(log, "wheel", "--no-deps", "-q", "-w", str(wheelhouse), str(context))
    wheels = sorted(wheelhouse.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}\n{log}"
    _pip(log, "--python", str(python), "install", "-q", str(wheels[0]))


def install_like_dockerfile(tmp: Path, python: Path, log: Log) -> None:
    """`pip install -c constraints.txt .` in a copy of the Dockerfile's build context."""
    context = _copy_context(tmp / "src")
    _pip(log, "--python", str(python), "install", "-q", "-c", "constraints.txt", ".", cwd=context)


@contextlib.contextmanager
def _serve(executable: Path, broker_url: str, port: int, log_path: Path) -> Iterator[
    subprocess.Popen[bytes]
]:
    """Run ``serve`` from the venv in its own process group; stop that group at the end."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("CELERY_EXPORTER_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    command = [
        str(executable), "serve",
        "--broker-url", broker_url,
        "--listen-address", f"127.0.0.1:{port}",
        "--refresh-interval", "1",
        "--no-auth",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=log_path.parent, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        # Gunicorn's workers too: whatever is left of the group is killed.
        if not wait_until(lambda: process_group_gone(proc.pid), timeout=5):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _sample(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, None when it is missing."""
    try:
        return value(samples, name, **labels)
    except KeyError:
        return None


def _healthy(samples: Samples) -> bool:
    """Every source up, the queue consumed, jobs waiting and none paused."""
    return (
        all(_sample(samples, "celery_exporter_source_up", source=s) == 1 for s in SOURCES)
        and (_sample(samples, "celery_queue_consumers", queue=QUEUE) or 0) >= 1
        and _sample(samples, "celery_queue_jobs", queue=QUEUE, status="paused") == 0
        and (_sample(samples, "celery_queue_jobs", queue=QUEUE, status="waiting") or 0) > 0
    )


def _explain(problem: str, last: Samples, sidecar_log: Path, worker: CeleryWorker, log: Log) -> str:
    """The failure, the samples that matter, the sidecar's and the worker's logs, pip's output."""
    shown = sorted(
        f"{name}{{{','.join(f'{k}={v!r}' for k, v in sorted(labels))}}} {number}"
        for (name, labels), number in last.items()
        if name in ("celery_exporter_source_up", "celery_queue_consumers")
        or (name == "celery_queue_jobs" and ("queue", QUEUE) in labels)
    )
    return "\n".join((
        problem,
        "--- last samples:", *(shown or ["(none)"]),
        "--- sidecar log (end):", sidecar_log.read_text(errors="replace")[-4000:],
        "--- worker log (end):", worker.log()[-2000:],
        "--- pip:", str(log),
    ))


@pytest.mark.parametrize(
    "install",
    [
        pytest.param(install_wheel, id="wheel-no-extras-no-constraints"),
        pytest.param(install_like_dockerfile, id="dockerfile-constraints"),
    ],
)
def test_fresh_install_serves_every_source(
    install: Callable[[Path, Path, Log], None],
    tmp_path: Path,
    redis_server: RedisServer,
    celery_app: Celery,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    """The installed sidecar sees the broker, the workers and the events of a busy queue."""
    log = Log()
    python = _make_venv(tmp_path / "venv")
    install(tmp_path, python, log)
    where = subprocess.run(
        [str(python), "-c", "import exporter; print(exporter.__file__)"],
        cwd=tmp_path, env=_pip_env(), capture_output=True, text=True, check=False,
    )
    assert where.stdout.startswith(str(tmp_path / "venv")), (
        f"exporter not imported from the fresh venv: {where.stdout}{where.stderr}\n{log}"
    )

    # One slot, busy with a long job; more jobs wait behind it. Events are on (-E).
    worker = celery_worker_factory(
        redis_server.url, queues=(QUEUE,), concurrency=1, name="install"
    )
    try:
        celery_app.send_task("tests.sleep", args=(600,), queue=QUEUE)
        with redis_server.client() as client:
            assert wait_until(lambda: client.llen(QUEUE) == 0, timeout=30), (
                "the worker did not take the sleep job:\n" + worker.log()[-3000:]
            )
        for i in range(WAITING_JOBS):
            celery_app.send_task("tests.add", args=(i, i), queue=QUEUE)

        port = find_free_port()
        sidecar_log = tmp_path / "sidecar.log"
        with _serve(
            tmp_path / "venv" / "bin" / "celery-jobs-exporter",
            redis_server.url, port, sidecar_log,
        ) as proc:
            last: Samples = {}

            def scrape() -> bool:
                nonlocal last
                if proc.poll() is not None:
                    return True
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
                except httpx.HTTPError:
                    return False
                if response.status_code != 200:  # 503 until the first refresh
                    return False
                last = parse_metrics(response.text)
                return _healthy(last)

            wait_until(scrape, timeout=60, interval=0.2)

            def why(problem: str) -> str:
                return _explain(problem, last, sidecar_log, worker, log)

            assert proc.poll() is None, why(f"the sidecar exited ({proc.returncode})")
            assert last, why("no successful scrape of /metrics")
            for source in SOURCES:
                up = _sample(last, "celery_exporter_source_up", source=source)
                assert up == 1, why(f"source {source} is not up ({up})")
            consumers = _sample(last, "celery_queue_consumers", queue=QUEUE)
            assert consumers is not None and consumers >= 1, why(f"consumers: {consumers}")
            paused = _sample(last, "celery_queue_jobs", queue=QUEUE, status="paused")
            assert paused == 0, why(f"paused jobs: {paused}")
            waiting = _sample(last, "celery_queue_jobs", queue=QUEUE, status="waiting")
            assert waiting is not None and waiting > 0, why(f"waiting jobs: {waiting}")
    finally:
        # The sleep job would hold a warm shutdown for its whole timeout: kill it now.
        worker.kill()
