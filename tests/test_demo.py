"""The README's demo command: every status has jobs, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from testkit import REPO_ROOT
from testkit.exposition import parse_metrics
from testkit.net import find_free_port
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

STATUSES = ("waiting", "active", "delayed", "paused", "completed", "failed")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_shows_every_status_and_stops_cleanly() -> None:
    import httpx

    port = find_free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
    )
    assert demo.stdout is not None
    output: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.strip().startswith("logs"):
                break
        banner = "".join(output)
        assert f"http://127.0.0.1:{port}/metrics" in banner, banner
        broker = re.search(r"redis://127\.0\.0\.1:(\d+)/0", banner)
        assert broker, banner
        redis_port = int(broker.group(1))

        def totals() -> dict[str, float]:
            samples = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
            sums = dict.fromkeys(STATUSES, 0.0)
            for (name, labels), value in samples.items():
                if name == "celery_queue_jobs":
                    sums[dict(labels)["status"]] += value
            return sums

        assert wait_until(lambda: all(v > 0 for v in totals().values()), timeout=60), totals()
        paused = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        assert paused[("celery_queue_jobs", frozenset({("queue", "paused"),
                                                      ("status", "paused")}))] == 4
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
    assert "stopping the demo" in (demo.stdout.read() or "")
    assert wait_until(lambda: not _listening(port) and not _listening(redis_port), timeout=10)
    leftovers = subprocess.run(
        ["pgrep", "-f", f"127.0.0.1:{redis_port}|demo-main@|demo-reports@|127.0.0.1:{port}"],
        capture_output=True, text=True,
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout
