"""The web console (docs/console.md) in a real Chromium, against a real sidecar and worker.

A private redis-server, one `celery worker` with a result backend (so a retry runs the
exact arguments), and `celery-jobs-exporter serve` with an API key. Headless Chromium,
driven by selenium, walks the console the way an operator does: enters the key, reads
the queue counts (equal to the Jobs API's), opens a failed job and its traceback,
retries it, pauses and resumes the queue, searches, and opens the workers and audit
views. Any SEVERE entry in the browser's console log, and any request answered >= 400
or failed, fails the test.

`Console` and the in-page checks (focus, focus ring, text contrast) are shared with
tests/test_console_a11y.py (keyboard, focus rings, contrast) and
tests/test_console_screenshots.py (the docs' screenshots, from the demo).
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from testkit.celery_worker import CeleryWorker, load_app
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "console-test-key-0123456789abcdef"
QUEUE = "console"
SIDECAR = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3", "--queue", QUEUE)
STATUSES = ("waiting", "active", "delayed", "paused", "completed", "failed")
T = TypeVar("T")

#: Missing browser binaries fail the tests (scripts/test installs them): never a skip.
MISSING_BROWSER = (
    None if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
    else "needs Debian's chromium and chromium-driver (scripts/test installs them)"
)


#: In-page helpers shared by the checks below: colours, the effective background, WCAG.
PAGE_HELPERS = r"""
const dark = matchMedia("(prefers-color-scheme: dark)").matches;
function parse(text) {
  const m = /^rgba?\(([^)]*)\)$/.exec(text.trim());
  if (!m) throw new Error(`a colour this check cannot read: ${text}`);
  const p = m[1].split(/[\s,/]+/).filter(Boolean).map(parseFloat);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
}
// `top` (with its alpha) painted over the opaque `under`.
const over = (top, under) =>
  [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
// What is painted behind an element: its own and its ancestors' background colours, up
// to the first opaque one (the canvas if none is).
function background(el) {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  let bg = dark ? [18, 18, 18, 1] : [255, 255, 255, 1];
  for (const c of layers.reverse()) bg = over(c, bg);
  return bg;
}
function luminance(c) {
  const [r, g, b] = c.slice(0, 3).map((v) => {
    const s = v / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
// The WCAG 2.1 contrast ratio of two opaque colours.
function ratio(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}
const rgb = (c) => `rgb(${c.slice(0, 3).map(Math.round).join(", ")})`;
function describe(el) {
  if (!el) return "";
  const cls = typeof el.className === "string" && el.className.trim() ?
    "." + el.className.trim().split(/\s+/).join(".") : "";
  return el.tagName.toLowerCase() + (el.id ? `#${el.id}` : "") + cls;
}
"""

#: Every visible text of `arguments[0]` (the body when null): its colour against its
#: effective background, the ratio, and what WCAG 2.1 AA asks of it (3 for large text:
#: 24 px, or 18.66 px and bold; 4.5 otherwise). Disabled controls are exempt (WCAG).
CONTRAST_JS = PAGE_HELPERS + r"""
const root = arguments[0] || document.body;
function opacity(el) {
  let o = 1;
  for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
  return o;
}
// Not seen: not rendered, transparent, or clipped away (a visually-hidden label).
function unseen(el) {
  if (!el.checkVisibility({ opacityProperty: true, visibilityProperty: true })) return true;
  for (let e = el; e; e = e.parentElement) {
    const s = getComputedStyle(e);
    const r = e.getBoundingClientRect();
    if (s.clip !== "auto" || s.clipPath !== "none") return true;
    if (s.overflow !== "visible" && (r.width <= 1 || r.height <= 1)) return true;
  }
  return false;
}
function entry(el, text, fg, fgOpacity) {
  const s = getComputedStyle(el);
  const size = parseFloat(s.fontSize);
  const weight = parseInt(s.fontWeight, 10);
  const large = size >= 24 || (size >= 18.66 && weight >= 700);
  const bg = background(el);
  const shown = over([fg[0], fg[1], fg[2], fg[3] * fgOpacity], bg);
  return {
    text: text.slice(0, 40), where: `${describe(el)} in ${describe(el.parentElement)}`,
    ratio: ratio(shown, bg), need: large ? 3 : 4.5, fg: rgb(shown), bg: rgb(bg), size, weight,
  };
}
const out = [];
const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const text = node.textContent.trim();
  const el = node.parentElement;
  if (!text || !el || el.closest(":disabled")) continue;
  const range = document.createRange();
  range.selectNodeContents(node);
  const boxes = [...range.getClientRects()].filter((r) =>
    r.width > 0 && r.height > 0 && r.right + scrollX > 0 && r.bottom + scrollY > 0);
  if (!boxes.length || unseen(el)) continue;
  out.push(entry(el, text, parse(getComputedStyle(el).color), opacity(el)));
}
// A field's typed text, and its placeholder even while a value hides it.
for (const input of root.querySelectorAll("input")) {
  if (input.disabled || unseen(input)) continue;
  const style = getComputedStyle(input);
  out.push(entry(input, `(text typed in ${describe(input)})`, parse(style.color), opacity(input)));
  if (!input.placeholder) continue;
  const hint = getComputedStyle(input, "::placeholder");
  const alpha = opacity(input) * parseFloat(hint.opacity);
  out.push(entry(input, input.placeholder, parse(hint.color), alpha));
}
return out;
"""

#: The focused element: what it is, and how its focus shows (outline, box-shadow, and
#: the ring's contrast with what surrounds it).
ACTIVE_JS = PAGE_HELPERS + r"""
const el = document.activeElement || document.body;
const s = getComputedStyle(el);
const r = el.getBoundingClientRect();
const dialog = el.closest("dialog");
const ring = parse(s.outlineColor);
const around = background(el.parentElement || el);
return {
  tag: el.tagName.toLowerCase(), id: el.id || null,
  cls: typeof el.className === "string" ? el.className : "",
  href: el.getAttribute("href"), action: el.dataset.action || null, nav: el.dataset.nav || null,
  tab: el.dataset.tab || null, rel: el.getAttribute("rel"), role: el.getAttribute("role"),
  type: el.getAttribute("type"), text: (el.innerText || "").trim().slice(0, 80),
  dialog: dialog ? dialog.id : null, view: document.getElementById("main").dataset.view || null,
  outlineStyle: s.outlineStyle, outlineWidth: parseFloat(s.outlineWidth) || 0,
  outlineColor: s.outlineColor, boxShadow: s.boxShadow,
  ringContrast: ring[3] > 0 ? ratio(over(ring, around), around) : 0,
  onScreen: r.width > 0 && r.height > 0 && r.right > 0 && r.bottom > 0 && r.left < innerWidth,
};
"""

#: Kinds of focusable control, as `Console.kind` names them.
CONTROL_KINDS = (
    "skip link", "view link", "search box", "button", "key box", "dialog button",
    "danger button", "scrollable table", "link", "status tab", "pager link", "summary",
)


@dataclass(frozen=True, order=True)
class Contrast:
    """One visible text's contrast with its background (CONTRAST_JS)."""

    ratio: float
    need: float
    text: str
    where: str
    fg: str
    bg: str
    size: float
    weight: int

    def __str__(self) -> str:
        return (f"{self.ratio:.2f}:1 (needs {self.need}) {self.text!r} {self.where} "
                f"({self.fg} on {self.bg}, {self.size:g}px/{self.weight})")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file (asserting it is one)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


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

    def until(self, check: Callable[[], T | None], timeout: float = 20.0, what: str = "") -> T:
        def attempt(_: WebDriver) -> T | None:
            return check()

        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.05, ignored_exceptions=(
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
        """Click an action button and accept its confirmation; the question it asked."""
        self.click(selector)
        self.until(lambda: self.css("#confirm-dialog").is_displayed(), what="confirmation")
        question = str(self.css("#confirm-question").text)
        self.click("#confirm-ok")
        self.until(lambda: not self.css("#confirm-dialog").is_displayed(), what="dialog closed")
        return question

    def go(self, hash_: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", hash_)

    def view(self, name: str) -> None:
        """Wait until `name` is the view drawn and nothing is being fetched."""
        self.until(lambda: self.driver.execute_script(
            "const m = document.getElementById('main');"
            "return m.dataset.view === arguments[0] && m.getAttribute('aria-busy') === 'false'",
            name), what=f"view {name}")

    # -- the keyboard -------------------------------------------------------------------

    def press(self, *keys: str) -> None:
        """Key presses, sent to whatever has the focus."""
        ActionChains(self.driver).send_keys(*keys).perform()

    def shift_tab(self) -> None:
        ActionChains(self.driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(
            Keys.SHIFT).perform()

    def active(self) -> dict[str, Any]:
        """document.activeElement, described (ACTIVE_JS)."""
        found: dict[str, Any] = self.driver.execute_script(ACTIVE_JS)
        return found

    def focus_on(self, match: Callable[[dict[str, Any]], object], what: str) -> dict[str, Any]:
        """Wait until the focused element matches; that element."""
        def check() -> dict[str, Any] | None:
            el = self.active()
            return el if match(el) else None

        return self.until(check, what=f"the focus on {what}")

    @staticmethod
    def kind(el: dict[str, Any]) -> str:
        """The kind of control (CONTROL_KINDS) a focused element is."""
        if el["id"] == "skip":
            return "skip link"
        if el["nav"]:
            return "view link"
        if el["tag"] == "input":
            return "search box" if el["type"] == "search" else "key box"
        if el["tag"] == "button":
            if el["dialog"]:
                return "dialog button"
            return "danger button" if "danger" in el["cls"].split() else "button"
        if el["role"] == "region":
            return "scrollable table"
        if el["tab"]:
            return "status tab"
        if el["rel"] in ("next", "prev"):
            return "pager link"
        return str(el["tag"] if el["tag"] != "a" else "link")

    def tab_to(
        self, match: Callable[[dict[str, Any]], object], *, back: bool = False,
        limit: int = 40, seen: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Press TAB (SHIFT+TAB when `back`) until the focused element matches; that element.

        Every element passed on the way must show its focus (`assert_focus_shows`); the
        first of each kind is kept in `seen`.
        """
        path = []
        for _ in range(limit):
            self.shift_tab() if back else self.press(Keys.TAB)
            el = self.active()
            path.append(el.get("text") or el.get("id") or el["tag"])
            if el["tag"] != "body":
                self.assert_focus_shows(el)
                if seen is not None:
                    seen.setdefault(self.kind(el), el)
            if match(el):
                return el
        raise AssertionError(f"not reached in {limit} key presses; the focus went {path}")

    @staticmethod
    def assert_focus_shows(el: dict[str, Any]) -> None:
        """A visible focus ring (outline or box-shadow), contrasting 3:1 with its surround."""
        outline = el["outlineStyle"] != "none" and el["outlineWidth"] > 0
        shadow = el["boxShadow"] not in ("none", "")
        assert outline or shadow, f"no visible focus on {el}"
        assert el["onScreen"], f"focused but off screen: {el}"
        if outline:
            ring = el["ringContrast"]
            assert ring >= 3, f"focus ring contrast {ring:.2f} < 3: {el}"

    # -- colours ------------------------------------------------------------------------

    def scheme(self, value: str) -> None:
        """Emulate prefers-color-scheme: light or dark."""
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": value}]})
        assert self.driver.execute_script(
            f"return matchMedia('(prefers-color-scheme: {value})').matches")

    def contrast(self, root: str | None = None) -> Contrast:
        """Assert every visible text (in `root`, else the page) meets WCAG 2.1 AA contrast;
        the text with the lowest ratio."""
        element = self.css(root) if root else None
        entries: list[dict[str, Any]] = self.driver.execute_script(CONTRAST_JS, element)
        assert len(entries) >= 3, f"too little text to check: {entries}"
        found = [Contrast(**e) for e in entries]
        low = [c for c in found if c.ratio < c.need]
        assert not low, "contrast below WCAG 2.1 AA:\n" + "\n".join(f"  {c}" for c in low)
        return min(found)

    # -- the window ---------------------------------------------------------------------

    def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        """Make the page's viewport exactly width x height CSS pixels (1 device pixel each)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        self.until(lambda: self.driver.execute_script(
            "return innerWidth === arguments[0] && innerHeight === arguments[1]", width, height),
            what=f"viewport {width}x{height}")

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

    def enter_key(self, key: str) -> None:
        """Answer the key dialog the page opens on load."""
        self.until(lambda: self.driver.find_element(By.ID, "key-dialog").is_displayed())
        self.css("#key-input").send_keys(key)
        self.click("#key-form button[type=submit]")

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

        # A failed job, its traceback.
        console.click(f'tr[data-queue="{QUEUE}"] td[data-status=failed] a')
        console.until(lambda: console.css(f'tr[data-job="{failed_id}"]'))
        assert marker in console.text(f'tr[data-job="{failed_id}"]')
        console.click(f'tr[data-job="{failed_id}"] a')
        console.until(lambda: marker in console.css("pre.traceback").text
                      and "ValueError" in console.css("pre.traceback").text)
        assert marker in console.text('pre[data-field="data"]')
        # Fold the traceback: the redraws that follow keep it folded.
        console.click("main details summary")
        folded = "return !document.querySelector('main details').open"
        assert browser.execute_script(folded)

        # Retry: the outcome names the new run, and the old job links to it.
        question = console.confirm('button[data-action="Retry"]')
        assert failed_id in question and QUEUE in question
        new_id = console.until(lambda: console.css("#notice a").text, what="retry outcome")
        assert new_id and new_id != failed_id
        assert "retried as new job" in console.text("#notice")
        console.until(lambda: console.css('[data-field="retriedBy"]').text == new_id,
                      what="retriedBy link")
        assert browser.execute_script(folded), "the redraw unfolded the traceback"
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

        # Workers and the audit log.
        console.go("#/workers")
        worker_row = console.text("tr[data-worker]")
        assert "up" in worker_row
        assert console.text("tr[data-worker] td:nth-child(3)") == QUEUE  # a link per queue
        console.go("#/audit")
        console.until(lambda: {"retry", "pause", "resume"} <= {
            cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "main td")})

        # Narrow screens: nothing overflows the page sideways.
        browser.set_window_size(375, 812)
        console.go(f"#/job/{QUEUE}/{failed_id}")
        console.until(lambda: console.css("pre.traceback"))
        console.until(console.no_horizontal_overflow, what="no overflow at 375 px")
        console.go(f"#/queue/{QUEUE}/completed/1")
        console.until(lambda: browser.find_elements(By.CSS_SELECTOR, "tr[data-job]"))
        console.until(console.no_horizontal_overflow, what="no overflow at 375 px")
        console.assert_clean()
    finally:
        app.close()


def test_escape_at_the_key_prompt_says_why_and_does_not_ask_again(
    redis_server: RedisServer,
) -> None:
    """Escape on the first key dialog: the view shows the API's 401 and a button to
    enter a key, and polling (every 2 s) does not open the dialog again. Under
    --no-auth, Escape shows the data."""
    assert MISSING_BROWSER is None, MISSING_BROWSER
    keyed = Sidecar(redis_server.url, *SIDECAR, "--api-key", KEY)
    open_car = Sidecar(redis_server.url, *SIDECAR, "--no-auth")
    made: Console | None = None
    try:
        keyed.wait_ready()
        open_car.wait_ready()
        made = Console(keyed.base_url)
        made.driver.get(f"{keyed.base_url}/ui/")
        made.until(lambda: made.css("#key-dialog").is_displayed(), what="key dialog")
        made.press(Keys.ESCAPE)
        made.view("error")
        assert "an API key is required" in made.text("main .notice.error")
        made.until(lambda: "not updated" in made.text("#live"), what="a refused poll")
        refused = made.text("#live")
        made.until(lambda: made.text("#live") != refused, what="the next poll")
        assert not made.css("#key-dialog").is_displayed(), "a poll asked for the key again"
        made.click("#key-retry")
        made.until(lambda: made.css("#key-dialog").is_displayed(), what="key dialog again")
        made.css("#key-input").send_keys(KEY)
        made.click("#key-form button[type=submit]")
        made.view("queues")
        made.until(lambda: made.css(f'tr[data-queue="{QUEUE}"]'), what="the queue")

        made.driver.execute_script("sessionStorage.clear()")
        made.driver.get(f"{open_car.base_url}/ui/")
        made.until(lambda: made.css("#key-dialog").is_displayed(), what="key dialog")
        made.press(Keys.ESCAPE)
        made.view("queues")
        made.until(lambda: made.css(f'tr[data-queue="{QUEUE}"]'), what="the queue")
    finally:
        if made is not None:
            made.close()
        keyed.stop()
        open_car.stop()


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
        made.enter_key(KEY)
        made.confirm('button[data-action="Pause"]')
        made.until(lambda: "--read-only" in made.css("#readonly").text)
        made.contrast()  # the warning is readable; the disabled buttons are exempt (WCAG)
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


def test_rates_keep_moving_once_a_queue_s_retention_is_full(
    redis_server: RedisServer, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    """With 2 completed jobs kept, the retained count stops moving; the console's
    completed-per-minute rate comes from the finished totals and keeps counting."""
    car = Sidecar(redis_server.url, *SIDECAR, "--api-key", KEY, "--completed-retention", "2")
    made: Console | None = None
    try:
        celery_worker_factory(redis_server.url, queues=(QUEUE,))
        car.wait_ready()
        app = load_app(redis_server.url)
        for n in range(3):
            app.send_task("tests.add", args=[n, 1], queue=QUEUE)
        assert wait_until(lambda: api(car, "/v1/jobs/workers")["finished"][QUEUE]["succeeded"]
                          == 3, timeout=30)
        made = Console(car.base_url)
        browser = made.driver
        browser.get(f"{car.base_url}/ui/")
        made.enter_key(KEY)
        row = f'tr[data-queue="{QUEUE}"]'
        made.until(lambda: made.text(f"{row} td[data-status=completed]") == "2")

        sent_at = [0.0]

        def completed_rate_above_zero() -> float | None:
            if time.monotonic() - sent_at[0] >= 0.5:  # keep jobs finishing, two a second
                app.send_task("tests.add", args=[1, 1], queue=QUEUE)
                sent_at[0] = time.monotonic()
            shown = made.text(f"{row} td.num:nth-last-child(2)")
            return float(shown) if shown != "…" and float(shown) > 0 else None

        rate = made.until(completed_rate_above_zero, timeout=40, what="a completed rate above 0")
        assert rate is not None and rate > 0
        assert counts(car)[QUEUE]["completed"] == 2  # the retained count did not move
        made.collect_logs()
        made.assert_clean()
    finally:
        if made is not None:
            made.close()
        car.stop()
