"""The web console (docs/console.md) in a real Chromium, against a real sidecar and worker.

A private redis-server, one `celery worker` with a result backend (so a retry runs the
exact arguments), and `celery-jobs-exporter serve` with an API key. Headless Chromium,
driven by selenium, walks the console the way an operator does: enters the key, reads
the queue counts (equal to the Jobs API's), opens a failed job and its traceback,
retries it, pauses and resumes the queue, searches, and opens the workers and audit
views. Any SEVERE entry in the browser's console log, and any request answered >= 400
or failed, fails the test.

With CONSOLE_SCREENSHOTS=1 it saves a screenshot of each view into docs/console/.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from testkit import REPO_ROOT
from testkit.celery_worker import CeleryWorker, load_app
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "console-test-key-0123456789abcdef"
QUEUE = "console"
SIDECAR = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3", "--queue", QUEUE)
SCREENSHOTS = REPO_ROOT / "docs" / "console"
STATUSES = ("waiting", "active", "delayed", "paused", "completed", "failed")
T = TypeVar("T")

#: Missing browser binaries fail the tests (scripts/test installs them): never a skip.
MISSING_BROWSER = (
    None if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
    else "needs Debian's chromium and chromium-driver (scripts/test installs them)"
)


class Console:
    """A headless Chromium on the console, with waits that survive a view's re-render."""

    def __init__(self, base_url: str) -> None:
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--disable-gpu"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver: WebDriver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.base_url = base_url
        self.severe: list[str] = []
        self.failed_requests: list[str] = []
        self.shots = os.environ.get("CONSOLE_SCREENSHOTS") == "1"

    def until(self, check: Callable[[], T | None], timeout: float = 20.0, what: str = "") -> T:
        def attempt(_: WebDriver) -> T | None:
            return check()

        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException))
        result = wait.until(attempt, what)
        assert result is not None
        return result

    def css(self, selector: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        return str(self.until(lambda: self.css(selector).text, what=selector))

    def click(self, selector: str) -> None:
        def clicked() -> bool:
            self.css(selector).click()
            return True

        self.until(clicked, what=f"click {selector}")

    def confirm(self, selector: str) -> str:
        """Click an action button and accept its confirm(); the question it asked."""
        self.click(selector)
        alert = WebDriverWait(self.driver, 5).until(expected_conditions.alert_is_present())
        question = str(alert.text)
        alert.accept()
        return question

    def go(self, hash_: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", hash_)

    def shot(self, name: str) -> None:
        if self.shots:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    def collect_logs(self) -> None:
        """Keep SEVERE console entries and failed requests (the logs drain when read)."""
        for entry in self.driver.get_log("browser"):  # type: ignore[no-untyped-call]
            if entry.get("level") == "SEVERE":
                self.severe.append(str(entry.get("message")))
        for entry in self.driver.get_log("performance"):  # type: ignore[no-untyped-call]
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.responseReceived":
                response = params.get("response", {})
                if int(response.get("status", 0)) >= 400:
                    self.failed_requests.append(f"{response.get('status')} {response.get('url')}")
            elif message.get("method") == "Network.loadingFailed" and not params.get("canceled"):
                self.failed_requests.append(f"failed: {params.get('errorText')}")

    def assert_clean(self) -> None:
        self.collect_logs()
        assert not self.severe, self.severe
        assert not self.failed_requests, self.failed_requests

    def no_horizontal_overflow(self) -> bool:
        return bool(self.driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"))

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def stack(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> Iterator[tuple[Sidecar, CeleryWorker]]:
    results = redis_server.url_for_db(1)
    car = Sidecar(redis_server.url, *SIDECAR, "--api-key", KEY, "--result-backend-url", results)
    try:
        worker = celery_worker_factory(
            redis_server.url, queues=(QUEUE,), extra_env={"TEST_RESULT_BACKEND": results}
        )
        car.wait_ready()
        yield car, worker
    finally:
        car.stop()


@pytest.fixture
def console(stack: tuple[Sidecar, CeleryWorker]) -> Iterator[Console]:
    assert MISSING_BROWSER is None, MISSING_BROWSER
    made = Console(stack[0].base_url)
    try:
        yield made
    finally:
        made.close()


def api(car: Sidecar, path: str) -> Any:
    answer = car.get(path, headers={"X-API-KEY": KEY})
    assert answer.status_code == 200, answer.text
    return answer.json()


def counts(car: Sidecar) -> dict[str, dict[str, int]]:
    return {q["name"]: q["counts"] for q in api(car, "/v1/jobs/queues")["queues"]}


def test_an_operator_walks_the_console(
    stack: tuple[Sidecar, CeleryWorker], console: Console, redis_server: RedisServer
) -> None:
    car, _worker = stack
    marker = f"console-boom-{uuid.uuid4().hex[:8]}"
    app = load_app(redis_server.url)
    try:
        failed_id = str(app.send_task("tests.fail", args=[marker], queue=QUEUE).id)
        for n in range(2):
            app.send_task("tests.add", args=[n, 40], queue=QUEUE)
        wait_until(lambda: counts(car)[QUEUE]["failed"] == 1
                   and counts(car)[QUEUE]["completed"] == 2, timeout=30)
        wait_until(lambda: api(car, "/v1/jobs/workers")["consumers"].get(QUEUE) == 1, timeout=30)
        browser = console.driver

        # The key is asked for on load, kept in sessionStorage, never in a cookie or URL.
        browser.get(f"{car.base_url}/ui/")
        console.until(lambda: browser.find_element(By.ID, "key-dialog").is_displayed())
        console.css("#key-input").send_keys(KEY)
        console.click("#key-form button[type=submit]")
        assert browser.execute_script(
            "return sessionStorage.getItem('celery-jobs-console.key')") == KEY
        assert browser.get_cookies() == [] and KEY not in browser.current_url

        # Queues: the counts shown are the Jobs API's.
        def shown() -> dict[str, dict[str, int]]:
            rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-queue]")
            return {
                str(row.get_attribute("data-queue")): {
                    status: int(row.find_element(By.CSS_SELECTOR, f"td[data-status={status}]").text)
                    for status in STATUSES
                }
                for row in rows
            }

        expected = counts(car)
        console.until(lambda: shown() == expected, what=f"counts {expected}")
        assert console.text(f'tr[data-queue="{QUEUE}"] [data-state]') == "1 consumer"
        console.shot("queues")

        # A failed job, its traceback.
        console.click(f'tr[data-queue="{QUEUE}"] td[data-status=failed] a')
        console.until(lambda: console.css(f'tr[data-job="{failed_id}"]'))
        assert marker in console.text(f'tr[data-job="{failed_id}"]')
        console.shot("queue")
        console.click(f'tr[data-job="{failed_id}"] a')
        console.until(lambda: marker in console.css("pre.traceback").text
                      and "ValueError" in console.css("pre.traceback").text)
        assert marker in console.text('pre[data-field="data"]')
        console.shot("job")

        # Retry: the outcome names the new run, and the old job links to it.
        question = console.confirm('button[data-action="Retry"]')
        assert failed_id in question and QUEUE in question
        new_id = console.until(lambda: console.css("#notice a").text, what="retry outcome")
        assert new_id and new_id != failed_id
        assert "retried as new job" in console.text("#notice")
        console.until(lambda: console.css('[data-field="retriedBy"]').text == new_id,
                      what="retriedBy link")
        console.click('[data-field="retriedBy"]')
        console.until(lambda: console.css("main h1 code").text == new_id)
        console.until(lambda: marker in console.css('pre[data-field="data"]').text)

        # Pause and resume: the state shown follows.
        console.go(f"#/queue/{QUEUE}/paused/1")
        console.until(lambda: console.css("#queue-state [data-state]").get_attribute(
            "data-state") == "consumed")
        console.confirm('button[data-action="Pause"]')
        console.until(lambda: "paused" in console.css("#notice").text)
        app.send_task("tests.add", args=[1, 1], queue=QUEUE)  # waits while paused
        console.until(lambda: console.css("#queue-state [data-state]").get_attribute(
            "data-state") == "paused", what="paused state", timeout=30)
        console.until(lambda: console.css('[data-tab="paused"]').text == "paused (1)")
        console.shot("queue-paused")
        console.confirm('button[data-action="Resume"]')
        console.until(lambda: "resumed" in console.css("#notice").text)
        console.until(lambda: console.css("#queue-state [data-state]").get_attribute(
            "data-state") == "consumed", what="consumed again", timeout=30)

        # Search finds the failed job by its argument.
        box = console.css("#search-input")
        box.clear()
        box.send_keys(marker)
        console.click("#search-form button")
        console.until(lambda: console.css(f'tr[data-job="{failed_id}"]'), what="search hit")
        console.shot("search")

        # Workers and the audit log.
        console.go("#/workers")
        worker_row = console.text("tr[data-worker]")
        assert "up" in worker_row and QUEUE in worker_row
        console.shot("workers")
        console.go("#/audit")
        console.until(lambda: {"retry", "pause", "resume"} <= {
            cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "main td")})
        console.shot("audit")

        # Narrow screens and the dark scheme: nothing overflows the page sideways.
        browser.set_window_size(375, 812)
        console.go(f"#/job/{QUEUE}/{failed_id}")
        console.until(lambda: console.css("pre.traceback"))
        console.until(console.no_horizontal_overflow, what="no overflow at 375 px")
        console.shot("job-375px")
        console.go(f"#/queue/{QUEUE}/completed/1")
        console.until(lambda: browser.find_elements(By.CSS_SELECTOR, "tr[data-job]"))
        console.until(console.no_horizontal_overflow, what="no overflow at 375 px")
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        console.shot("queue-375px-dark")
        console.assert_clean()
    finally:
        app.close()


def test_a_read_only_sidecar_shows_why_and_disables_actions(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """Under --read-only an action answers 403: the console shows the message and turns
    every action button off."""
    car = Sidecar(redis_server.url, *SIDECAR, "--api-key", KEY, "--read-only")
    made: Console | None = None
    try:
        car.wait_ready()
        made = Console(car.base_url)
        browser = made.driver
        browser.get(f"{car.base_url}/ui/#/queue/{QUEUE}/waiting/1")
        made.until(lambda: browser.find_element(By.ID, "key-dialog").is_displayed())
        made.css("#key-input").send_keys(KEY)
        made.click("#key-form button[type=submit]")
        made.confirm('button[data-action="Pause"]')
        made.until(lambda: "--read-only" in made.css("#readonly").text)
        made.until(lambda: all(
            b.get_attribute("disabled") is not None
            for b in browser.find_elements(By.CSS_SELECTOR, "button[data-action]")))
        made.collect_logs()
        # The one 403 is the refusal the test asked for; nothing else failed.
        assert [r for r in made.failed_requests if "/pause" not in r] == []
        assert all("403" in entry for entry in made.severe), made.severe
        assert httpx.get(f"{car.base_url}/ui/").headers["content-security-policy"]
    finally:
        if made is not None:
            made.close()
        car.stop()
