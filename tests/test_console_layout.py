"""The console holds its layout with 200 queues and with 10,000-character arguments.

A real sidecar configured with 200 queues (one message in each, no worker, so they read
`paused`) and a job whose argument is 10,000 characters long; headless Chromium at
1280 px and at a phone's 375 px. The page itself never scrolls sideways (wide tables and
long values scroll inside their own frame), every queue has its row, and the long
arguments are shown whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By

from testkit.celery_worker import load_app
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from tests.test_console_browser import KEY, MISSING_BROWSER, Console

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

QUEUES = [f"queue-{index:03d}-" + "n" * 40 for index in range(200)]
#: 10,000 characters of arguments without a space: ten strings (one string is shown up to
#: 1,024 characters, docs/jobs-api.md), each of which must be shown whole.
LONG_ARGS = [f"{index}" + "a" * 999 for index in range(10)]
WIDTHS = ((1280, 900, False), (375, 812, True))


@pytest.fixture
def world(redis_server: RedisServer) -> Iterator[tuple[Sidecar, str]]:
    app = load_app(redis_server.url)
    for index, queue in enumerate(QUEUES):
        app.send_task("tests.add", args=[index, 1], queue=queue)
    long_id = str(app.send_task("tests.add", args=LONG_ARGS, queue=QUEUES[0]).id)
    car = Sidecar(redis_server.url, "--refresh-interval", "0.5", "--inspect-timeout", "0.3",
                  "--api-key", KEY, *[f"--queue={queue}" for queue in QUEUES])
    try:
        car.wait_ready()
        yield car, long_id
    finally:
        car.stop()


def test_200_queues_and_a_10_000_character_argument_keep_the_layout(
    world: tuple[Sidecar, str],
) -> None:
    assert MISSING_BROWSER is None, MISSING_BROWSER
    car, long_id = world
    console = Console(car.base_url)
    try:
        browser = console.driver
        browser.get(f"{car.base_url}/ui/")
        console.enter_key(KEY)
        for width, height, mobile in WIDTHS:
            console.viewport(width, height, mobile)
            console.go("#/queues")
            console.view("queues")
            console.until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "tr[data-queue]"))
                          == len(QUEUES), what="a row per queue")
            shown = {row.get_attribute("data-queue")
                     for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-queue]")}
            assert shown == set(QUEUES)
            assert console.no_horizontal_overflow(), f"the queues page scrolls at {width} px"

            console.go(f"#/job/{QUEUES[0]}/{long_id}")
            console.view("job")
            data = console.until(lambda: next(
                (pre.text for pre in browser.find_elements(By.CSS_SELECTOR, "main pre")
                 if LONG_ARGS[0] in pre.text), None), what="the job's arguments")
            assert all(arg in data for arg in LONG_ARGS)
            assert console.no_horizontal_overflow(), f"the job page scrolls at {width} px"
        console.assert_clean()
    finally:
        console.close()
