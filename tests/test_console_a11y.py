"""The console's accessibility, checked in a real Chromium: keyboard, focus, contrast.

One world for the module: a private redis-server, one `celery worker` (with a result
backend, so a retry runs), the sidecar, and on queue `console` one failed job and more
completed jobs than a page holds (so there is a next page).

- The keyboard test uses only TAB, SHIFT+TAB, ENTER and ESC (and typing in the fields):
  it enters the key, skips to the content, moves between views, opens a queue, a job,
  the next and previous pages, searches, cancels an action's confirmation with ESC and
  accepts it with ENTER, and opens and closes the key dialog. After each key press it
  asserts where the focus is (document.activeElement), and that ENTER did what a click
  does; a live update that redraws the view must leave the focus where it was. Every
  control the focus passes must show a focus ring (an outline or a box-shadow)
  contrasting 3:1 with its surround, and every kind of control is passed.
- The contrast test computes in the page, for every visible text of every view and
  dialog, in the light and the dark scheme (Chromium's emulation), the WCAG 2.1
  contrast ratio of its colour against its effective background, and asserts AA
  (4.5:1, 3:1 for large text). It prints the lowest ratio of each scheme. It also
  checks the focus rings of a page's controls in the dark scheme.

Any SEVERE browser console entry, or any request answered >= 400, fails either test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from testkit.celery_worker import CeleryWorker, load_app
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until
from tests.test_console_browser import (
    CONTROL_KINDS,
    KEY,
    MISSING_BROWSER,
    QUEUE,
    SIDECAR,
    Console,
    Contrast,
    api,
    counts,
)

if TYPE_CHECKING:
    from celery import Celery

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: More completed jobs than a page (20) holds: the completed list has a page 2.
COMPLETED = 21


@dataclass
class World:
    car: Sidecar
    app: Celery
    failed_id: str
    marker: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    saved = os.environ.get("TEST_BROKER_URL")
    server = RedisServer()
    worker: CeleryWorker | None = None
    car: Sidecar | None = None
    app: Celery | None = None
    try:
        results = server.url_for_db(1)
        worker = CeleryWorker(server.url, queues=(QUEUE,),
                              extra_env={"TEST_RESULT_BACKEND": results})
        car = Sidecar(server.url, *SIDECAR, "--api-key", KEY, "--result-backend-url", results)
        worker.wait_ready(60)
        car.wait_ready()
        app = load_app(server.url)
        marker = f"a11y-boom-{uuid.uuid4().hex[:8]}"
        failed_id = str(app.send_task("tests.fail", args=[marker], queue=QUEUE).id)
        for n in range(COMPLETED):
            app.send_task("tests.add", args=[n, 1], queue=QUEUE)
        ready = car  # for the closure: not None here

        def settled() -> bool:
            now = counts(ready)[QUEUE]
            return now["failed"] == 1 and now["completed"] == COMPLETED

        assert wait_until(settled, timeout=30), counts(car)
        assert wait_until(
            lambda: api(ready, "/v1/jobs/workers")["consumers"].get(QUEUE) == 1, timeout=30)
        yield World(car, app, failed_id, marker)
    finally:
        if app is not None:
            app.close()
        # The sidecar and the worker each take about 2 s to stop: side by side.
        with ThreadPoolExecutor(2) as pool:
            if car is not None:
                pool.submit(car.stop)
            if worker is not None:
                pool.submit(worker.close, stop_timeout=2.0)
        server.cleanup()
        if saved is None:
            os.environ.pop("TEST_BROKER_URL", None)
        else:
            os.environ["TEST_BROKER_URL"] = saved


@pytest.fixture(scope="module")
def console(world: World) -> Iterator[Console]:
    assert MISSING_BROWSER is None, MISSING_BROWSER
    made = Console(world.car.base_url)
    try:
        yield made
    finally:
        made.close()


def hash_(console: Console) -> str:
    return str(console.driver.execute_script("return location.hash"))


def enter_view(console: Console, view: str) -> None:
    """After ENTER on a link: the view is drawn and the focus moved to its content."""
    console.view(view)
    console.focus_on(lambda el: el.get("id") == "main", "the content")


def test_the_console_works_from_the_keyboard_alone(world: World, console: Console) -> None:
    car, failed_id, marker = world.car, world.failed_id, world.marker
    browser = console.driver
    seen: dict[str, dict[str, Any]] = {}

    # On load the key dialog has the focus in its field: type the key, ENTER.
    browser.get(f"{car.base_url}/ui/")
    field = console.focus_on(lambda el: el.get("id") == "key-input", "the key field")
    console.assert_focus_shows(field)
    seen["key box"] = field
    console.press(KEY, Keys.ENTER)
    console.view("queues")
    console.until(lambda: browser.find_elements(By.CSS_SELECTOR, "tr[data-queue]"))

    # TAB reaches the skip link first; ENTER moves the focus to the content.
    console.tab_to(lambda el: el["id"] == "skip", limit=1, seen=seen)
    console.press(Keys.ENTER)
    console.focus_on(lambda el: el.get("id") == "main", "skipped to the content")
    assert hash_(console) == ""  # the skip link moves the focus, not the route

    # Queues -> a queue's failed jobs -> a job: ENTER on a link opens what a click opens.
    console.tab_to(lambda el: el["href"] == f"#/queue/{QUEUE}/failed/1", seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "queue")
    assert hash_(console) == f"#/queue/{QUEUE}/failed/1"
    console.tab_to(lambda el: el["href"] == f"#/job/{QUEUE}/{failed_id}", seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "job")
    console.until(lambda: marker in console.css("pre.traceback").text, what="traceback")

    # An action asks first, in a modal dialog whose focus starts on Cancel; ESC cancels
    # and gives the focus back to the button, and nothing was done.
    console.tab_to(lambda el: el["action"] == "Retry", seen=seen)
    console.press(Keys.ENTER)
    cancel = console.focus_on(lambda el: el.get("id") == "confirm-cancel", "Cancel")
    console.assert_focus_shows(cancel)
    assert failed_id in console.text("#confirm-question")
    console.press(Keys.ESCAPE)
    console.focus_on(lambda el: el.get("action") == "Retry", "Retry again")
    assert not console.css("#confirm-dialog").is_displayed()
    assert not console.css("#notice").is_displayed()
    assert api(car, "/v1/jobs/audit")["entries"] == []

    # ENTER again, TAB to the action's own button, ENTER: the job is retried, the outcome
    # is shown, and the focus is back on the button.
    console.press(Keys.ENTER)
    console.focus_on(lambda el: el.get("id") == "confirm-cancel", "Cancel again")
    console.tab_to(lambda el: el["id"] == "confirm-ok", limit=1, seen=seen)
    console.press(Keys.ENTER)
    console.until(lambda: "retried as new job" in console.css("#notice").text, what="retried")
    console.focus_on(lambda el: el.get("action") == "Retry", "Retry, kept")
    assert [e["action"] for e in api(car, "/v1/jobs/audit")["entries"]] == ["retry"]

    # A traceback's summary: ENTER folds and unfolds it, as a click does.
    console.tab_to(lambda el: el["tag"] == "summary", seen=seen)
    is_open = "return document.activeElement.parentElement.open"
    assert browser.execute_script(is_open) is True
    console.press(Keys.ENTER)
    console.until(lambda: browser.execute_script(is_open) is False, what="folded")
    console.press(Keys.ENTER)
    console.until(lambda: browser.execute_script(is_open) is True, what="unfolded")

    # Back to the queue (SHIFT+TAB), its completed tab, the next page and back.
    console.tab_to(lambda el: el["href"] == f"#/queue/{QUEUE}/failed/1", back=True, seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "queue")
    console.tab_to(lambda el: el["tab"] == "completed", seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "queue")
    assert hash_(console) == f"#/queue/{QUEUE}/completed/1"
    assert f"Page 1 of 2 ({COMPLETED} jobs)" in console.text("nav.pager")
    console.tab_to(lambda el: el["rel"] == "next", limit=60, seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "queue")
    assert hash_(console) == f"#/queue/{QUEUE}/completed/2"
    assert f"Page 2 of 2 ({COMPLETED} jobs)" in console.text("nav.pager")
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-job]")) == COMPLETED - 20
    console.tab_to(lambda el: el["rel"] == "prev", seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "queue")
    assert hash_(console) == f"#/queue/{QUEUE}/completed/1"

    # The search box: SHIFT+TAB up to it, type, ENTER.
    console.tab_to(lambda el: el["id"] == "search-input", back=True, seen=seen)
    console.press(marker, Keys.ENTER)
    enter_view(console, "search")
    assert hash_(console) == f"#/search?q={marker}"
    console.until(lambda: console.css(f'tr[data-job="{failed_id}"]'), what="search hit")

    # The views' own links.
    console.tab_to(lambda el: el["nav"] == "workers", back=True, seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "workers")
    assert "up" in console.text("tr[data-worker]")
    console.tab_to(lambda el: el["nav"] == "audit", back=True, seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "audit")
    console.until(lambda: "retry" in {
        c.text for c in browser.find_elements(By.CSS_SELECTOR, "main td")}, what="the retry")
    console.tab_to(lambda el: el["nav"] == "queues", back=True, seen=seen)
    console.press(Keys.ENTER)
    enter_view(console, "queues")

    # A live update redraws the view under the focus: the focus stays where it was, even
    # on an element with no link of its own (the table's frame).
    console.tab_to(lambda el: el["role"] == "region", seen=seen)
    cell = f'tr[data-queue="{QUEUE}"] td[data-status=completed]'
    before = console.text(cell)
    world.app.send_task("tests.add", args=[2, 2], queue=QUEUE)
    console.until(lambda: console.css(cell).text != before, what="the redraw")
    assert console.active()["role"] == "region", console.active()

    # The key button opens the key dialog with the focus in its field; ESC closes it and
    # gives the focus back.
    console.tab_to(lambda el: el["id"] == "key-button", back=True, seen=seen)
    console.press(Keys.ENTER)
    console.focus_on(lambda el: el.get("id") == "key-input", "key field")
    console.press(Keys.ESCAPE)
    console.focus_on(lambda el: el.get("id") == "key-button", "the key button again")
    assert not console.css("#key-dialog").is_displayed()

    missed = set(CONTROL_KINDS) - set(seen)
    assert not missed, f"kinds of control the focus never reached: {missed}"
    console.assert_clean()


def test_text_contrast_and_focus_rings_in_both_schemes(world: World, console: Console) -> None:
    car, failed_id = world.car, world.failed_id
    browser = console.driver
    browser.get(f"{car.base_url}/ui/")
    if not browser.execute_script("return sessionStorage.getItem('celery-jobs-console.key')"):
        console.enter_key(KEY)
    console.view("queues")

    def rows(selector: str) -> list[Any]:
        return list(browser.find_elements(By.CSS_SELECTOR, selector))

    views = (  # (fragment, view, what must be shown before the check)
        ("#/queues", "queues", "tr[data-queue] [data-state]"),
        (f"#/queue/{QUEUE}/failed/1", "queue", "tr[data-job]"),
        (f"#/queue/{QUEUE}/completed/1", "queue", "nav.pager"),
        (f"#/job/{QUEUE}/{failed_id}", "job", "pre.traceback"),
        ("#/workers", "workers", "tr[data-worker]"),
        (f"#/search?q={world.marker}", "search", "tr[data-job]"),
        ("#/audit", "audit", "main td"),
    )
    # A job is retried at most once in 30 s: each scheme retries a completed job of its own.
    completed = [job["id"] for job in api(
        car, f"/v1/jobs/queues/{QUEUE}?status=completed&limit=2")["jobs"]]
    lowest: dict[str, Contrast] = {}
    for scheme, job_id in zip(("light", "dark"), completed, strict=True):
        console.scheme(scheme)
        low: list[Contrast] = []

        # The dialogs: an action's confirmation (a danger action: its button is red) and
        # the key dialog; then an action's outcome above the view (and in the audit log).
        console.go(f"#/job/{QUEUE}/{job_id}")
        console.view("job")
        console.click('button[data-action="Remove"]')
        console.until(lambda: console.css("#confirm-dialog").is_displayed(), what="dialog")
        low.append(console.contrast("#confirm-dialog"))
        console.click("#confirm-cancel")
        console.click("#key-button")
        console.until(lambda: console.css("#key-dialog").is_displayed(), what="key dialog")
        low.append(console.contrast("#key-dialog"))
        console.press(Keys.ESCAPE)
        console.until(lambda: not console.css("#key-dialog").is_displayed(), what="closed")
        console.confirm('button[data-action="Retry"]')
        console.until(lambda: "retried as new job" in console.css("#notice").text, what="retried")
        low.append(console.contrast())

        for fragment, view, shown in views:
            console.go(fragment)
            console.view(view)
            console.until(partial(rows, shown), what=f"{fragment}: {shown}")
            low.append(console.contrast())

        lowest[scheme] = min(low)

    # Focus rings in the dark scheme too (the keyboard test saw the light ones): every
    # control of a queue's page, the header's included.
    console.go(f"#/queue/{QUEUE}/completed/1")
    console.view("queue")
    console.until(lambda: rows("a[rel=next]"))
    browser.execute_script("document.getElementById('main').focus()")
    seen: dict[str, dict[str, Any]] = {}
    console.tab_to(lambda el: el["id"] == "skip", back=True, seen=seen)
    console.tab_to(lambda el: el["rel"] == "next", limit=60, seen=seen)
    missed = set(CONTROL_KINDS) - {"key box", "dialog button", "summary"} - set(seen)
    assert not missed, f"kinds of control not reached: {missed}"
    for scheme, text in lowest.items():
        print(f"\nlowest text contrast, {scheme}: {text}")
    console.assert_clean()
