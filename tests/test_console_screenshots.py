"""Screenshots of each console view, taken in a real Chromium from the demo's own world.

The test starts `celery-jobs-exporter demo` (`python -m exporter demo`, as
`scripts/demo` does) on a free port: its own redis-server, its Celery workers, its
sample jobs in every status, a paused queue, and the sidecar with an API key (read
from the demo's banner). Headless Chromium then opens each view, checks it shows the
demo's data, checks the text contrast (WCAG 2.1 AA) and saves a PNG of it.

The PNGs go into pytest's tmp_path, or, when CONSOLE_SCREENSHOTS names a directory
(relative to the repository root), into it: the docs' screenshots are made with

    CONSOLE_SCREENSHOTS=docs/console .venv/bin/python -m pytest -q tests/test_console_screenshots.py

Either way each file must be a PNG of the expected size. Any SEVERE browser console
entry, or any request answered >= 400, fails the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from testkit import REPO_ROOT
from testkit.net import find_free_port
from tests.test_console_browser import (
    MISSING_BROWSER,
    STATUSES,
    Console,
    Contrast,
    png_size,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: The screenshots this test makes, in the order it makes them (docs/console/NAME.png).
SHOTS = (
    "queue", "job", "queue-paused", "search", "workers", "audit", "queues", "queues-dark",
    "job-375px",
)
DESKTOP = (1280, 800)
PHONE = (375, 812)
#: The job's view is shot as tall as its page (tracebacks included), at most this.
TALLEST = 1800


class Demo:
    """`python -m exporter demo` on a free port (started at once; `ready` reads its banner)."""

    def __init__(self) -> None:
        self.port = find_free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = ""
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "demo", "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
        )

    def ready(self) -> None:
        """Wait for the banner (the demo is then up, its jobs sent); keep its API key."""
        assert self.process.stdout is not None
        lines: list[str] = []
        for line in self.process.stdout:  # the pytest timeout bounds a demo that never starts
            lines.append(line)
            if line.strip().startswith("logs"):
                break
        banner = "".join(lines)
        key = re.search(r"\(API key: (\S+)\)", banner)
        assert key and f"{self.base_url}/ui/" in banner, banner
        self.api_key = key.group(1)
        # Keep reading what the demo prints: a full pipe would block it, and a blocked
        # demo cannot stop the workers and redis-server it started.
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self) -> None:
        """Ctrl-C, as a person would: the demo stops everything it started."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def demo() -> Iterator[Demo]:
    started = Demo()
    try:
        yield started
    finally:
        started.stop()


def shots_dir(tmp_path: Path) -> Path:
    """CONSOLE_SCREENSHOTS (relative to the repository root), else pytest's tmp_path."""
    named = os.environ.get("CONSOLE_SCREENSHOTS", "").strip()
    if not named:
        return tmp_path
    path = Path(named)
    path = path if path.is_absolute() else REPO_ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_screenshots_of_each_view_from_the_demo(demo: Demo, tmp_path: Path) -> None:
    assert MISSING_BROWSER is None, MISSING_BROWSER
    out = shots_dir(tmp_path)
    console = Console(demo.base_url)  # Chromium starts while the demo does
    browser = console.driver
    lowest: dict[str, list[Contrast]] = {"light": [], "dark": []}
    sizes: dict[str, tuple[int, int]] = {}

    def shot(name: str, scheme: str = "light") -> None:
        """Check the view's contrast, save it, and check the file."""
        assert name in SHOTS
        lowest[scheme].append(console.contrast())
        path = out / f"{name}.png"
        assert browser.save_screenshot(str(path)), path
        size = browser.execute_script("return [innerWidth, innerHeight]")
        sizes[name] = png_size(path)
        assert sizes[name] == tuple(size), (name, sizes[name], size)
        assert path.stat().st_size > 5000, f"{path}: {path.stat().st_size} bytes"

    def texts(selector: str) -> list[str]:
        return [str(e.text) for e in browser.find_elements(By.CSS_SELECTOR, selector)]

    def rows(selector: str = "tr[data-job]") -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, selector))

    try:
        demo.ready()
        console.viewport(*DESKTOP)
        browser.get(f"{demo.base_url}/ui/")
        console.enter_key(demo.api_key)
        console.view("queues")

        # The demo's world: every status has jobs, over its four queues.
        def every_status() -> bool:
            """Each status has jobs in some queue, as the queues view shows them."""
            totals: dict[str, int] = browser.execute_script(
                "const t = {};"
                "for (const td of document.querySelectorAll('td[data-status]'))"
                "  t[td.dataset.status] = (t[td.dataset.status] || 0) + Number(td.textContent);"
                "return t;")
            return all(totals.get(s, 0) > 0 for s in STATUSES)

        console.until(every_status, timeout=45, what="jobs in every status")
        assert {"default", "ingest", "paused", "reports"} <= set(browser.execute_script(
            "return [...document.querySelectorAll('tr[data-queue]')].map(r => r.dataset.queue)"))

        # A queue's failed jobs, with their reasons.
        console.go("#/queue/default/failed/1")
        console.view("queue")
        console.until(lambda: rows() > 0 and all(
            "could not reach" in t for t in texts("tr[data-job] td.reason")), what="failed jobs")
        assert console.css('[data-tab="failed"]').text != "failed (0)"
        shot("queue")

        # A failed job: one traceback per attempt, the last unfolded. Shot as tall as it is.
        console.click("tr[data-job] a")
        console.view("job")
        console.until(lambda: "ConnectionError" in console.css("details[open] pre.traceback").text,
                      what="the traceback")
        assert console.css('[data-field="state"]').text == "failed"
        assert "example.invalid" in console.css('pre[data-field="data"]').text
        assert len(texts("pre.traceback")) == 3  # demo.flaky: two retries, then failed
        job_hash = str(browser.execute_script("return location.hash"))
        height = int(browser.execute_script("return document.documentElement.scrollHeight"))
        console.viewport(DESKTOP[0], min(max(height, DESKTOP[1]), TALLEST))
        shot("job")
        console.viewport(*DESKTOP)

        # The queue the demo paused through the API: its messages are `paused`.
        console.go("#/queue/paused/paused/1")
        console.view("queue")
        console.until(lambda: rows() == 4, what="4 paused jobs")
        assert console.css("#queue-state [data-state]").get_attribute("data-state") == "paused"
        shot("queue-paused")

        # Search, from the search box.
        box = console.css("#search-input")
        box.clear()
        box.send_keys("example.invalid")
        console.click("#search-form button")
        console.view("search")
        console.until(lambda: rows() > 0, what="search hits")
        assert all("demo.flaky" in t for t in texts("tr[data-job]"))
        ActionChains(browser).move_to_element(console.css("main h1")).perform()  # no :hover
        shot("search")
        box.clear()

        # Workers: the demo's two, up.
        console.go("#/workers")
        console.view("workers")
        console.until(lambda: rows("tr[data-worker]") == 2, what="two workers")
        assert texts("tr[data-worker] .badge") == ["up", "up"]
        assert texts("tr[data-worker] td:nth-child(3)") == ["default, ingest", "reports"]
        shot("workers")

        # The audit log: the demo's own pause of queue `paused`.
        console.go("#/audit")
        console.view("audit")
        console.until(lambda: "pause" in texts("main td"), what="the demo's pause")
        shot("audit")

        # Queues, last: by now the page has counted long enough to show rates.
        console.go("#/queues")
        console.view("queues")
        console.until(every_status, what="jobs in every status")
        console.until(lambda: "…" not in texts("tr[data-queue] td.num:nth-last-child(-n+2)"),
                      timeout=30, what="rates")
        shot("queues")
        console.scheme("dark")
        assert browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor") == "rgb(13, 17, 23)"
        shot("queues-dark", "dark")
        console.scheme("light")

        # A phone: the failed job at 375 px, nothing overflowing sideways.
        console.viewport(*PHONE, mobile=True)
        console.go(job_hash)
        console.view("job")
        console.until(lambda: "ConnectionError" in console.css("details[open] pre.traceback").text)
        console.until(console.no_horizontal_overflow, what="no overflow at 375 px")
        shot("job-375px")

        assert set(sizes) == set(SHOTS)
        assert all(size == DESKTOP for name, size in sizes.items()
                   if name not in ("job", "job-375px")), sizes
        assert sizes["job"][0] == DESKTOP[0] and sizes["job-375px"] == PHONE, sizes
        print(f"\nscreenshots in {out}; lowest text contrast, light: {min(lowest['light'])}"
              f"\nlowest text contrast, dark: {min(lowest['dark'])}")
        console.assert_clean()
    finally:
        console.close()
